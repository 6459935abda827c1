import type { IncomingMessage, ServerResponse } from "node:http";
import type { OrgSnapshot } from "@mcpgw/snapshot";
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
  const { deps, authFailures, guardEnv } = cx;

  /**
   * Everything a request to one server must pass, whatever its transport: credentials, the
   * server (another org's answers like a missing one), namespace scope, enablement, policy for
   * the server; then the per-request guards (tool policy, rate limits) for the relay.
   */
  /**
   * A 401 whose challenge names the protected-resource metadata of the target (RFC 9728), and
   * the reason; counted by reason.
   */
  function unauthorized(reason: string, serverId?: string): Resolution {
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

  async function resolve(req: IncomingMessage, serverId: string): Promise<Resolution> {
    const challenge = (reason: string) => unauthorized(reason, serverId);
    if (!Authenticator.hasCredential(req.headers))
      return challenge("missing credentials: send Authorization: Bearer <token> or X-API-Key");
    const routed = deps.store.current.servers.get(serverId);
    let principal: Principal;
    try {
      principal = await deps.authenticator.authenticate(req.headers, routed?.org);
    } catch (err) {
      if (!(err instanceof AuthError)) throw err;
      return challenge(err.message);
    }
    if (!routed || routed.org.org_id !== principal.org_id) {
      return { ok: false, error: new GatewayError("not_found", `unknown server ${serverId}`) };
    }
    const guards = new Guards(guardEnv, principal, { server: serverId }, clientIp(req, deps.trustedProxies));
    const lost = guards.standing();
    if (lost) return { ok: false, error: lost };
    const hooks = guardsFor(guards, "request");
    return {
      ok: true,
      ctx: serverContext(routed, principal, guardsFor(guards, "session"), deps.connect),
      hooks,
      routed,
    };
  }

  /** The org's `max_sessions` quota, for one request. */
  function sessionGate(org: OrgSnapshot): SessionGate {
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
  function guardsFor(guards: Guards, scope: "request" | "session"): ProxyHooks {
    const routed = guards.server!;
    const hooks: ProxyHooks = {
      standing: () => guards.standing(),
      admit: (rpc) => guards.admit(rpc),
      sessions: sessionGate(routed.org),
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
  async function resolveNamespace(req: IncomingMessage, slug: string | undefined): Promise<Resolution> {
    const challenge = (reason: string) => unauthorized(reason);
    if (!Authenticator.hasCredential(req.headers))
      return challenge("missing credentials: send Authorization: Bearer <token> or X-API-Key");
    const state = deps.store.current;
    // External tokens: an org that has this namespace and trusts the issuer, and whose provider
    // verifies the token. Several orgs may trust one issuer and share a slug: each is tried, the
    // earliest registration first, so an org registering later can never displace another's users.
    const issuer = bearerIssuer(req.headers);
    const wanted = slug?.toLowerCase();
    const registered = (o: OrgSnapshot) =>
      o.identity_providers.find((p) => p.issuer === issuer)?.registered_at ?? "";
    const candidates =
      issuer && wanted
        ? [...state.orgs.values()]
            .filter(
              (o) =>
                o.identity_providers.some((p) => p.issuer === issuer) &&
                o.namespaces.some((n) => n.slug.toLowerCase() === wanted),
            )
            .sort((a, b) => registered(a).localeCompare(registered(b)))
        : [];
    let principal: Principal | undefined;
    let failure: AuthError | undefined;
    for (const candidate of candidates.length ? candidates : [undefined]) {
      try {
        principal = await deps.authenticator.authenticate(req.headers, candidate);
        break;
      } catch (err) {
        if (!(err instanceof AuthError)) throw err;
        failure ??= err;
      }
    }
    if (!principal) return challenge(failure?.message ?? "invalid token");
    const org = state.orgs.get(principal.org_id);
    const notFound = (message: string): Resolution => ({
      ok: false,
      error: new GatewayError("not_found", message),
    });
    if (!org) return notFound("unknown namespace");
    const namespace = wanted
      ? org.namespaces.find((n) => n.slug.toLowerCase() === wanted)
      : principal.namespace_id
        ? org.namespaces.find((n) => n.id === principal.namespace_id)
        : (org.namespaces.find((n) => n.slug === "default") ??
          (org.namespaces.length === 1 ? org.namespaces[0] : undefined));
    if (!namespace)
      return notFound(
        slug
          ? `unknown namespace ${slug}`
          : "no default namespace: use /ns/{slug}/… or a key scoped to a namespace",
      );
    if (principal.namespace_id && principal.namespace_id !== namespace.id) {
      return {
        ok: false,
        error: new GatewayError("forbidden", "this credential is scoped to another namespace"),
      };
    }
    if (!org.org.active)
      return { ok: false, error: new GatewayError("forbidden", "organization is disabled") };
    const ip = clientIp(req, deps.trustedProxies);
    const members: Member[] = [];
    for (const server of org.servers) {
      if (server.namespace_id !== namespace.id || server.transport === "virtual") continue;
      const guards = new Guards(guardEnv, principal, { server: server.id }, ip);
      if (guards.standing()) continue;
      members.push({ server, guards: guardsFor(guards, "session") });
    }
    const own = new Guards(guardEnv, principal, { namespace: namespace.id }, ip);
    const ctx: SessionContext = {
      target: `ns:${namespace.id}`,
      principal,
      guards: { standing: () => own.standing(), sessions: sessionGate(org) },
      open: async (sessionId) => {
        const aggregate = new NamespaceUpstream({
          namespace,
          members,
          connect: (server) =>
            connectUpstream(
              server,
              `${sessionId}.${server.id}`,
              deps.connect,
              stdioOwner({ org }, principal),
            ),
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
    return { ok: true, ctx, hooks: {} };
  }

  function refuse(req: IncomingMessage, res: ServerResponse, r: Extract<Resolution, { ok: false }>) {
    req.resume();
    sendGatewayError(res, r.error);
  }

  return { resolve, resolveNamespace, refuse, guardsFor, sessionGate };
}
