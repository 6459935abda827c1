import type { IncomingMessage, ServerResponse } from "node:http";
import type { NamespaceEntry, OrgSnapshot } from "@mcpgw/snapshot";
import { type Member, NamespaceUpstream } from "../aggregate/namespace-upstream.ts";
import { Authenticator, bearerIssuer } from "../auth/authenticator.ts";
import { AuthError, type Principal } from "../auth/principal.ts";
import { clientIp } from "../rate-limit/client-ip.ts";
import type { RoutedServer } from "../snapshot/store.ts";
import { type SessionContext, serverContext } from "../transports/message-sessions.ts";
import type { ProxyHooks, SessionGate } from "../transports/streamable-http.ts";
import { connectUpstream, stdioOwner } from "../upstream/connect.ts";
import { type DataPlaneContext, metadataPath } from "./context.ts";
import { GatewayError, sendGatewayError } from "./errors.ts";
import { Guards } from "./guards.ts";

/**
 * The request pipeline's first stages, in this order, for every transport:
 *
 * 1. **authenticate** — a credential is required before anything is looked up, so an
 *    anonymous caller learns nothing (401 with the RFC 9728 challenge);
 * 2. **resolve the target** — the server, or the namespace and its members; another org's
 *    target answers exactly like a missing one (404), so ids cannot be probed across tenants;
 * 3. **authorize the target** — namespace scope of the credential, enablement, server-level
 *    policy (pipeline/guards.ts `standing()`), after resolution because they depend on it.
 *
 * What passes gets the per-message guards (tool/prompt/resource policy, rate limits, session
 * quota) as hooks for its relay, evaluated against the current snapshot at each message; the
 * relay follows; observe (pipeline/observe.ts) frames the whole request.
 */
export type Resolution =
  | { ok: true; ctx: SessionContext; hooks: ProxyHooks; routed?: RoutedServer }
  | { ok: false; error: GatewayError };

export type Resolver = ReturnType<typeof createResolver>;

export function createResolver(cx: DataPlaneContext) {
  return {
    resolve: (req: IncomingMessage, serverId: string) => resolveServer(cx, req, serverId),
    resolveNamespace: (req: IncomingMessage, slug: string | undefined) => resolveNamespace(cx, req, slug),
    refuse,
    guardsFor: (guards: Guards, scope: "request" | "session") => guardsFor(cx, guards, scope),
    sessionGate: (org: OrgSnapshot) => sessionGate(cx, org),
  };
}

const MISSING_CREDENTIALS = "missing credentials: send Authorization: Bearer <token> or X-API-Key";

/**
 * A 401 whose challenge names the protected-resource metadata of the target (RFC 9728), and
 * the reason; counted by reason.
 */
function unauthorized(
  { deps, authFailures }: DataPlaneContext,
  reason: string,
  serverId?: string,
): Resolution {
  authFailures.inc({ reason });
  const metadata = `${deps.publicUrl}${metadataPath(serverId)}`;
  return {
    ok: false,
    error: new GatewayError("unauthorized", `Unauthorized: ${reason}`, {
      headers: {
        "www-authenticate": `Bearer resource_metadata="${metadata}", error="invalid_token", error_description="${reason.replace(/"/g, "'")}"`,
      },
    }),
  };
}

const refused = (error: GatewayError): Resolution => ({ ok: false, error });

/**
 * Everything a request to one server must pass, whatever its transport: credentials, the
 * server (another org's answers like a missing one), namespace scope, enablement, policy for
 * the server; then the per-request guards (tool policy, rate limits) for the relay.
 */
async function resolveServer(
  cx: DataPlaneContext,
  req: IncomingMessage,
  serverId: string,
): Promise<Resolution> {
  const { deps, guardEnv } = cx;
  if (!Authenticator.hasCredential(req.headers)) return unauthorized(cx, MISSING_CREDENTIALS, serverId);
  // One snapshot for the whole request: what is cached below is built from the state it names.
  const state = deps.store.current;
  const routed = state.servers.get(serverId);
  let principal: Principal;
  try {
    principal = await deps.authenticator.authenticate(req.headers, routed?.org);
  } catch (err) {
    if (!(err instanceof AuthError)) throw err;
    return unauthorized(cx, err.message, serverId);
  }
  if (!routed || routed.org.org_id !== principal.org_id)
    return refused(new GatewayError("not_found", `unknown server ${serverId}`));
  const ip = clientIp(req, deps.trustedProxies);
  const recent = recentlyResolved(principal);
  const key = `${serverId}\n${ip}`;
  let found = recent.get(key);
  if (found?.state !== state) {
    const guards = new Guards(guardEnv, principal, { server: serverId }, ip);
    found = {
      state,
      guards,
      ctx: serverContext(routed, principal, guardsFor(cx, guards, "session"), deps.connect),
      hooks: guardsFor(cx, guards, "request"),
    };
    if (recent.size >= MAX_RESOLVED_PER_PRINCIPAL) recent.clear();
    recent.set(key, found);
  }
  // Checked at every request (an API key's expiry is time-bound); memoized per snapshot.
  const lost = found.guards.standing();
  if (lost) {
    // Not kept: every refused request is evaluated (and a policy denial counted) again.
    recent.delete(key);
    return refused(lost);
  }
  // The relay adds per-request hooks (credentials, translation): a copy of its own.
  return { ok: true, ctx: found.ctx, hooks: { ...found.hooks }, routed };
}

/**
 * A caller's guards, session context and hooks for a server, kept while the snapshot they were
 * built from is current: the next request of the same principal (the authenticator hands out
 * one principal object per token or key) reuses them instead of rebuilding them.
 */
interface Resolved {
  state: unknown;
  guards: Guards;
  ctx: SessionContext;
  hooks: ProxyHooks;
}

const resolvedByPrincipal = new WeakMap<Principal, Map<string, Resolved>>();
const MAX_RESOLVED_PER_PRINCIPAL = 64;

function recentlyResolved(principal: Principal): Map<string, Resolved> {
  let recent = resolvedByPrincipal.get(principal);
  if (!recent) {
    recent = new Map();
    resolvedByPrincipal.set(principal, recent);
  }
  return recent;
}

/** The org's `max_sessions` quota, for one request. */
function sessionGate({ deps }: DataPlaneContext, org: OrgSnapshot): SessionGate {
  const orgId = org.org_id;
  const limit = org.org.max_sessions;
  return {
    limit,
    reserve: () => deps.quota.reserve(orgId, limit),
    settle: (ticket, sessionId) => deps.quota.settle(orgId, ticket, sessionId),
    touch: (sessionId) => deps.quota.touch(orgId, sessionId),
    end: (sessionId) => deps.quota.end(orgId, sessionId),
  };
}

/**
 * A caller's guards for one server as the relays' hooks. For one request (the byte relay)
 * the tool checks are left out when policy allows every tool, so answers stream unread; a
 * session's hooks are checked against the current snapshot at every message, so what a
 * configuration change allows or forbids reaches sessions already open.
 */
function guardsFor(cx: DataPlaneContext, guards: Guards, scope: "request" | "session"): ProxyHooks {
  const routed = guards.server!;
  const hooks: ProxyHooks = {
    standing: () => guards.standing(),
    admit: (rpc) => guards.admit(rpc),
    sessions: sessionGate(cx, routed.org),
  };
  if (scope === "session" || !guards.allowsEverything) {
    hooks.authorizeTool = (tool) => guards.authorize(tool);
    hooks.keepTool = (tool) => guards.keep(tool);
  }
  return hooks;
}

/**
 * A namespace endpoint (`/ns/{slug}/…`, or the caller's default namespace without a slug):
 * the same checks as for a server, then an aggregate of every member server the caller may use.
 */
async function resolveNamespace(
  cx: DataPlaneContext,
  req: IncomingMessage,
  slug: string | undefined,
): Promise<Resolution> {
  if (!Authenticator.hasCredential(req.headers)) return unauthorized(cx, MISSING_CREDENTIALS);
  const wanted = slug?.toLowerCase();
  const orgs = cx.deps.store.current.orgs; // one snapshot for the whole request
  const authenticated = await authenticateForNamespace(cx, req, orgs, wanted);
  if (!authenticated.ok) return unauthorized(cx, authenticated.reason);
  const { principal } = authenticated;
  const org = orgs.get(principal.org_id);
  if (!org) return refused(new GatewayError("not_found", "unknown namespace"));
  const namespace = wanted
    ? org.namespaces.find((n) => n.slug.toLowerCase() === wanted)
    : principal.namespace_id
      ? org.namespaces.find((n) => n.id === principal.namespace_id)
      : (org.namespaces.find((n) => n.slug === "default") ??
        (org.namespaces.length === 1 ? org.namespaces[0] : undefined));
  if (!namespace)
    return refused(
      new GatewayError(
        "not_found",
        slug
          ? `unknown namespace ${slug}`
          : "no default namespace: use /ns/{slug}/… or a key scoped to a namespace",
      ),
    );
  if (principal.namespace_id && principal.namespace_id !== namespace.id)
    return refused(new GatewayError("forbidden", "this credential is scoped to another namespace"));
  if (!org.org.active) return refused(new GatewayError("forbidden", "organization is disabled"));
  return { ok: true, ctx: namespaceContext(cx, req, org, namespace, principal), hooks: {} };
}

/**
 * Who calls a namespace. External tokens: an org that has this namespace and trusts the
 * issuer, and whose provider verifies the token. Several orgs may trust one issuer and share a
 * slug: each is tried, the earliest registration first, so an org registering later can never
 * displace another's users.
 */
async function authenticateForNamespace(
  { deps }: DataPlaneContext,
  req: IncomingMessage,
  orgs: ReadonlyMap<string, OrgSnapshot>,
  wanted: string | undefined,
): Promise<{ ok: true; principal: Principal } | { ok: false; reason: string }> {
  const issuer = bearerIssuer(req.headers);
  const registered = (o: OrgSnapshot) =>
    o.identity_providers.find((p) => p.issuer === issuer)?.registered_at ?? "";
  const candidates =
    issuer && wanted
      ? [...orgs.values()]
          .filter(
            (o) =>
              o.identity_providers.some((p) => p.issuer === issuer) &&
              o.namespaces.some((n) => n.slug.toLowerCase() === wanted),
          )
          .sort((a, b) => registered(a).localeCompare(registered(b)))
      : [];
  let failure: AuthError | undefined;
  for (const candidate of candidates.length ? candidates : [undefined]) {
    try {
      return { ok: true, principal: await deps.authenticator.authenticate(req.headers, candidate) };
    } catch (err) {
      if (!(err instanceof AuthError)) throw err;
      failure ??= err;
    }
  }
  return { ok: false, reason: failure?.message ?? "invalid token" };
}

/** The session context of a namespace: every member the caller may use, aggregated on open. */
function namespaceContext(
  cx: DataPlaneContext,
  req: IncomingMessage,
  org: OrgSnapshot,
  namespace: NamespaceEntry,
  principal: Principal,
): SessionContext {
  const { deps, guardEnv } = cx;
  const ip = clientIp(req, deps.trustedProxies);
  const members: Member[] = [];
  for (const server of org.servers) {
    if (server.namespace_id !== namespace.id || server.transport === "virtual") continue;
    const guards = new Guards(guardEnv, principal, { server: server.id }, ip);
    if (guards.standing()) continue;
    members.push({ server, guards: guardsFor(cx, guards, "session") });
  }
  const own = new Guards(guardEnv, principal, { namespace: namespace.id }, ip);
  return {
    target: `ns:${namespace.id}`,
    principal,
    guards: { standing: () => own.standing(), sessions: sessionGate(cx, org) },
    open: async (sessionId) => {
      const aggregate = new NamespaceUpstream({
        namespace,
        members,
        connect: (server) =>
          connectUpstream(server, `${sessionId}.${server.id}`, deps.connect, stdioOwner({ org }, principal)),
        memberTimeoutMs: deps.aggregateMemberTimeoutMs,
        logger: deps.logger,
      });
      await aggregate.start();
      return aggregate;
    },
    timeoutMs: Math.max(deps.aggregateMemberTimeoutMs, ...members.map((m) => m.server.timeout_ms)),
    org_id: org.org_id,
    namespace_id: namespace.id,
    server_id: null,
  };
}

function refuse(req: IncomingMessage, res: ServerResponse, r: Extract<Resolution, { ok: false }>) {
  req.resume();
  sendGatewayError(res, r.error);
}
