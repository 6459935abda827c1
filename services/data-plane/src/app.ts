import { type IncomingMessage, type ServerResponse, STATUS_CODES } from "node:http";
import type { BlockList } from "node:net";
import type { Duplex } from "node:stream";
import { getRequestListener } from "@hono/node-server";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { STATELESS_PROTOCOL_VERSION } from "@mcpgw/protocol";
import type { SessionEvent } from "@mcpgw/queue";
import type { OrgSnapshot } from "@mcpgw/snapshot";
import {
  Counter,
  Histogram,
  type Logger,
  type Registry,
  SpanStatusCode,
  scrapeAllowed,
  tenantLabel,
  tracer,
} from "@mcpgw/telemetry";
import { CredentialError, type UpstreamCredentials } from "@mcpgw/upstream-credentials";
import { Hono } from "hono";
import { LRUCache } from "lru-cache";
import { WebSocketServer } from "ws";
import { type Member, NamespaceUpstream } from "./aggregate/namespace-upstream.ts";
import { Authenticator, bearerIssuer } from "./auth/authenticator.ts";
import { AuthError, type Principal } from "./auth/principal.ts";
import type { DataPlaneEnv } from "./env.ts";
import { asGatewayError, GatewayError, sendGatewayError } from "./pipeline/errors.ts";
import { type GuardEnv, Guards } from "./pipeline/guards.ts";
import { Observer, requestIdOf } from "./pipeline/observe.ts";
import { clientIp } from "./rate-limit/client-ip.ts";
import type { RateLimits } from "./rate-limit/rate-limits.ts";
import { sessionOwner } from "./replicas.ts";
import type { OriginGuard } from "./request-origin.ts";
import { matchRoute } from "./routes/table.ts";
import type { SessionQuota } from "./session-quota.ts";
import type { RoutedServer, SnapshotStore } from "./snapshot/store.ts";
import type { JsonRpcGateway } from "./transports/json-rpc.ts";
import { type MessageSessions, type SessionContext, serverContext } from "./transports/message-sessions.ts";
import { type ProxyHooks, proxyStreamableHttp, type SessionGate } from "./transports/streamable-http.ts";
import { type ConnectDeps, connectUpstream, stdioOwner } from "./upstream/connect.ts";
import type { UpstreamPools } from "./upstream/pools.ts";

export interface DataPlaneDeps {
  /** `/metrics` needs `Authorization: Bearer <it>` when set. */
  metricsToken?: string | undefined;
  /** Label series with server ids (off by default: ids of every tenant would be readable). */
  tenantLabels?: boolean | undefined;
  store: SnapshotStore;
  authenticator: Authenticator;
  credentials: UpstreamCredentials;
  pools: UpstreamPools;
  logger: Logger;
  metrics: Registry;
  maxBodyBytes: number;
  replicaId: string;
  /** The URL clients reach this data plane at (OAuth protected-resource metadata). */
  publicUrl: string;
  rateLimits: RateLimits;
  /** Proxies whose X-Forwarded-For / Forwarded headers are believed. */
  trustedProxies: BlockList | undefined;
  /** Message-level sessions: legacy SSE and WebSocket clients, stdio and SSE upstreams. */
  sessions: MessageSessions;
  rpc: JsonRpcGateway;
  /** Opens message-level upstream connections (stdio processes, SDK client transports). */
  connect: ConnectDeps;
  /** Answer budget per member server for namespace fan-out (lists, initialize). */
  aggregateMemberTimeoutMs: number;
  /** Session starts and ends, for the worker's session records. */
  report: (event: Omit<SessionEvent, "at" | "replica">) => void;
  /** Concurrent sessions per org (the plan's `max_sessions`), across replicas. */
  quota: SessionQuota;
  /** Binds session ids to their principal; the same on every replica (derived from the master key). */
  sessionKey: Buffer | undefined;
}

const metadataPath = (serverId?: string) =>
  serverId
    ? `/.well-known/oauth-protected-resource/servers/${serverId}/mcp`
    : "/.well-known/oauth-protected-resource";

const looksLikeUrl = (s: string) => /^https?:\/\//.test(s);

/** Builds the data-plane HTTP app from its dependencies. */
export function createDataPlaneApp(deps: DataPlaneDeps) {
  const app = new Hono<DataPlaneEnv>();
  const observer = new Observer(deps.metrics);
  const trace = tracer("mcpgw-data-plane");
  const label = (id: string) => tenantLabel(id, deps.tenantLabels ?? false);

  const requests = new Counter({
    name: "mcpgw_dp_requests_total",
    help: "MCP requests handled by the data plane",
    labelNames: ["server", "status"] as const,
    registers: [deps.metrics],
  });
  const duration = new Histogram({
    name: "mcpgw_dp_request_duration_seconds",
    help: "Time to upstream response headers plus streaming, per MCP request",
    labelNames: ["server"] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30],
    registers: [deps.metrics],
  });
  const authFailures = new Counter({
    name: "mcpgw_dp_auth_failures_total",
    help: "Requests rejected by authentication",
    labelNames: ["reason"] as const,
    registers: [deps.metrics],
  });
  const policyDenials = new Counter({
    name: "mcpgw_dp_policy_denials_total",
    help: "Requests or tool calls denied by policy",
    labelNames: ["server"] as const,
    registers: [deps.metrics],
  });

  const guardEnv: GuardEnv = {
    store: deps.store,
    authenticator: deps.authenticator,
    rateLimits: deps.rateLimits,
    policyDenials,
    label,
  };

  app.get("/health", (c) => c.json({ status: "ok", replica: deps.replicaId }));
  app.get("/ready", (c) => {
    const ready = deps.store.ready;
    const state = deps.store.current;
    return c.json(
      {
        status: ready ? "ready" : "not_ready",
        replica: deps.replicaId,
        orgs: state.orgs.size,
        global_version: state.global?.version ?? null,
      },
      ready ? 200 : 503,
    );
  });
  app.get("/metrics", async (c) => {
    if (!scrapeAllowed(c.req.header("authorization"), deps.metricsToken))
      return c.json({ error: "metrics need Authorization: Bearer <MCPGW_METRICS_TOKEN>" }, 401);
    return c.text(await deps.metrics.metrics(), 200, { "content-type": deps.metrics.contentType });
  });

  // RFC 9728 protected-resource metadata, for the gateway and per MCP endpoint.
  app.get(metadataPath(), (c) => {
    const issuer = deps.store.current.global?.jwt.issuer;
    return c.json({
      resource: deps.publicUrl,
      authorization_servers: issuer && looksLikeUrl(issuer) ? [issuer] : [],
      bearer_methods_supported: ["header"],
      resource_name: "MCP Gateway",
    });
  });
  app.get("/.well-known/oauth-protected-resource/servers/:id/mcp", (c) => {
    const routed = deps.store.current.servers.get(c.req.param("id"));
    const issuer = deps.store.current.global?.jwt.issuer;
    const issuers = [
      ...(issuer && looksLikeUrl(issuer) ? [issuer] : []),
      ...(routed?.org.identity_providers.map((p) => p.issuer) ?? []),
    ];
    return c.json({
      resource: `${deps.publicUrl}/servers/${c.req.param("id")}/mcp`,
      authorization_servers: [...new Set(issuers)],
      bearer_methods_supported: ["header"],
    });
  });

  type Resolution =
    | { ok: true; ctx: SessionContext; hooks: ProxyHooks; routed?: RoutedServer }
    | { ok: false; error: GatewayError };

  /**
   * Everything a request to one server must pass, whatever its transport: credentials, the
   * server (another org's answers like a missing one), namespace scope, enablement, policy for
   * the server; then the per-request guards (tool policy, rate limits) for the relay.
   */
  async function resolve(req: IncomingMessage, serverId: string): Promise<Resolution> {
    const challenge = (reason: string): Resolution => {
      authFailures.inc({ reason });
      return {
        ok: false,
        error: new GatewayError("unauthorized", `Unauthorized: ${reason}`, {
          headers: {
            "www-authenticate": `Bearer resource_metadata="${deps.publicUrl}${metadataPath(serverId)}", error="invalid_token", error_description="${reason.replace(/"/g, "'")}"`,
          },
        }),
      };
    };
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

  /** Streamable-HTTP upstreams that refused a stateless request: translated from then on (for a while). */
  const sessionBasedUpstreams = new LRUCache<string, true>({ max: 10_000, ttl: 10 * 60_000 });

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
    const challenge = (reason: string): Resolution => {
      authFailures.inc({ reason });
      return {
        ok: false,
        error: new GatewayError("unauthorized", `Unauthorized: ${reason}`, {
          headers: {
            "www-authenticate": `Bearer resource_metadata="${deps.publicUrl}${metadataPath()}", error="invalid_token"`,
          },
        }),
      };
    };
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

  /** A namespace endpoint: Streamable HTTP, legacy SSE and its message endpoint, JSON-RPC. */
  async function handleNamespace(
    req: IncomingMessage,
    res: ServerResponse,
    slug: string | undefined,
    kind: string,
    query: URLSearchParams,
  ) {
    try {
      const r = await resolveNamespace(req, slug);
      if (!r.ok) return refuse(req, res, r);
      const base = slug ? `/ns/${encodeURIComponent(slug)}` : "";
      switch (kind) {
        case "mcp":
          return await deps.sessions.handleStreamableHttp(req, res, r.ctx);
        case "sse":
          return await deps.sessions.handleSseStream(req, res, r.ctx, `${base}/message`);
        case "message": {
          const sessionId = query.get("sessionId");
          if (req.method !== "POST" || !sessionId) {
            return refuse(req, res, {
              ok: false,
              error: new GatewayError("bad_request", "POST with ?sessionId= from the endpoint event"),
            });
          }
          return await deps.sessions.handleSseMessage(
            req,
            res,
            r.ctx,
            sessionId,
            query.get("replica") ?? undefined,
          );
        }
        case "rpc":
        case "rpc/batch":
          return await deps.rpc.handle(req, res, r.ctx);
        case "rpc/introspection": {
          req.resume();
          const body = JSON.stringify(await deps.rpc.introspect(r.ctx));
          res.writeHead(200, {
            "content-type": "application/json",
            "content-length": Buffer.byteLength(body),
          });
          res.end(body);
          return;
        }
        case "conflicts": {
          req.resume();
          const aggregate = (await r.ctx.open(`inspect-${Date.now()}`)) as NamespaceUpstream;
          try {
            const body = JSON.stringify({ namespace: slug, ...(await aggregate.inspect()) });
            res.writeHead(200, {
              "content-type": "application/json",
              "content-length": Buffer.byteLength(body),
            });
            res.end(body);
          } finally {
            await aggregate.close();
          }
          return;
        }
      }
    } catch (err) {
      deps.logger.error({ err, namespace: slug }, "data-plane request failed");
      sendGatewayError(res, new GatewayError("internal", "internal gateway error"));
    }
  }

  /** WebSocket upgrades of namespace endpoints. */
  async function handleNamespaceUpgrade(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    slug: string | undefined,
    settled: (status: number) => void = () => {},
  ) {
    try {
      const r = await resolveNamespace(req, slug);
      if (!r.ok) {
        settled(r.error.status);
        return refuseUpgrade(socket, req, r.error);
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        settled(101);
        void deps.sessions.handleWebSocket(ws, r.ctx);
      });
    } catch (err) {
      deps.logger.error({ err }, "websocket upgrade failed");
      settled(500);
      refuseUpgrade(socket, req, asGatewayError(err));
    }
  }

  function refuse(req: IncomingMessage, res: ServerResponse, r: Extract<Resolution, { ok: false }>) {
    req.resume();
    sendGatewayError(res, r.error);
  }

  /**
   * The MCP endpoint of one server (Streamable HTTP). Streamable-HTTP upstreams take the
   * byte-level relay; stdio and legacy-SSE upstreams a message-level session. Also called
   * directly by the node request listener, skipping Hono on the hot path.
   */
  async function handleServerMcp(req: IncomingMessage, res: ServerResponse, serverId: string): Promise<void> {
    const started = performance.now();
    const span = trace.startSpan("mcp.proxy", {
      attributes: { "mcp.server.id": serverId, "http.request.method": req.method ?? "" },
    });
    try {
      const r = await resolve(req, serverId);
      if (!r.ok) return refuse(req, res, r);
      const { server } = r.routed!;
      if (server.transport === "stdio" || server.transport === "sse") {
        // stdio and legacy-SSE servers speak a session-based revision: a stateless client is
        // translated (the gateway keeps the upstream session on its behalf).
        if (
          req.headers["mcp-protocol-version"] === STATELESS_PROTOCOL_VERSION &&
          req.method === "POST" &&
          !req.headers["mcp-session-id"]
        ) {
          await deps.rpc.handleStateless(req, res, r.ctx);
          requests.inc({ server: label(server.id), status: String(res.statusCode) });
          return;
        }
        await deps.sessions.handleStreamableHttp(req, res, r.ctx);
        requests.inc({ server: label(server.id), status: String(res.statusCode) });
        return;
      }
      if (server.transport !== "streamable_http") {
        return refuse(req, res, {
          ok: false,
          error: new GatewayError(
            "not_implemented",
            `upstream transport '${server.transport}' is not served yet`,
          ),
        });
      }
      try {
        r.hooks.upstreamHeaders = await deps.credentials.headersFor(server);
      } catch (err) {
        if (!(err instanceof CredentialError)) throw err;
        deps.logger.error({ server: server.id, reason: err.message }, "upstream credentials unavailable");
        return refuse(req, res, {
          ok: false,
          error: new GatewayError("upstream_unavailable", "the gateway cannot authenticate to this upstream"),
        });
      }
      // Stateless (2026-07-28) clients of an upstream known to speak a session-based revision
      // are translated right away; otherwise the upstream is asked first and a refusal translated.
      const stateless =
        req.headers["mcp-protocol-version"] === STATELESS_PROTOCOL_VERSION &&
        req.method === "POST" &&
        !req.headers["mcp-session-id"];
      // Session-based (2025) clients of an upstream that speaks only the stateless revision get
      // a session from the gateway, translated message by message (message-level session ids).
      const sid = req.headers["mcp-session-id"];
      if (
        !stateless &&
        (typeof sid === "string"
          ? sessionOwner(sid) !== undefined
          : deps.connect.revisions.knownStateless(server.id))
      ) {
        await deps.sessions.handleStreamableHttp(req, res, r.ctx);
        requests.inc({ server: label(server.id), status: String(res.statusCode) });
        return;
      }
      if (stateless && sessionBasedUpstreams.get(server.id)) {
        await deps.rpc.handleStateless(req, res, r.ctx);
        requests.inc({ server: label(server.id), status: String(res.statusCode) });
        return;
      }
      if (stateless) {
        r.hooks.translateStateless = (body, out) => {
          sessionBasedUpstreams.set(server.id, true);
          return deps.rpc.respond(body, out, r.ctx, true, req.headers);
        };
      } else {
        r.hooks.translateSessionful = (body, out) => {
          deps.connect.revisions.markStateless(server.id);
          return deps.sessions.handleStreamableHttp(req, out, r.ctx, body);
        };
      }
      const outcome = await proxyStreamableHttp(
        req,
        res,
        server,
        {
          pools: deps.pools,
          maxBodyBytes: deps.maxBodyBytes,
          binding: deps.sessionKey
            ? { key: deps.sessionKey, principalId: r.ctx.principal.id, serverId: server.id }
            : undefined,
        },
        r.hooks,
      );
      requests.inc({ server: label(server.id), status: String(outcome.status) });
      if (outcome.session) {
        deps.report({
          event: outcome.session.event,
          session_id: outcome.session.id,
          org_id: r.routed!.org.org_id,
          namespace_id: server.namespace_id,
          server_id: server.id,
          transport: "streamable_http",
          protocol_version: outcome.session.protocolVersion ?? null,
          client_info: outcome.session.clientInfo ?? null,
          principal: r.ctx.principal.id,
          process_pid: null,
        });
      }
      duration.observe({ server: label(server.id) }, (performance.now() - started) / 1000);
      span.setAttributes({
        "http.response.status_code": outcome.status,
        "mcp.method.name": outcome.method ?? "",
        "enduser.id": r.ctx.principal.id,
      });
      if (outcome.status >= 500) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.error ?? String(outcome.status) });
        deps.logger.warn(
          { server: server.id, status: outcome.status, error: outcome.error, method: outcome.method },
          "upstream request failed",
        );
      }
    } catch (err) {
      span.setStatus({ code: SpanStatusCode.ERROR });
      deps.logger.error({ err, server: serverId }, "data-plane request failed");
      sendGatewayError(res, new GatewayError("internal", "internal gateway error"));
    } finally {
      span.end();
    }
  }

  /** The other client transports of one server: legacy SSE, its message endpoint, JSON-RPC. */
  async function handleServerTransport(
    req: IncomingMessage,
    res: ServerResponse,
    serverId: string,
    kind: string,
    query: URLSearchParams,
  ) {
    try {
      const r = await resolve(req, serverId);
      if (!r.ok) return refuse(req, res, r);
      switch (kind) {
        case "sse":
          if (req.method !== "GET")
            return refuse(req, res, {
              ok: false,
              error: new GatewayError("method_not_allowed", "use GET", { headers: { allow: "GET" } }),
            });
          return await deps.sessions.handleSseStream(
            req,
            res,
            r.ctx,
            `/servers/${encodeURIComponent(serverId)}/message`,
          );
        case "message": {
          const sessionId = query.get("sessionId");
          if (req.method !== "POST" || !sessionId) {
            return refuse(req, res, {
              ok: false,
              error: new GatewayError("bad_request", "POST with ?sessionId= from the endpoint event"),
            });
          }
          return await deps.sessions.handleSseMessage(
            req,
            res,
            r.ctx,
            sessionId,
            query.get("replica") ?? undefined,
          );
        }
        case "rpc":
          return await deps.rpc.handle(req, res, r.ctx);
        case "rpc/introspection": {
          req.resume();
          const body = JSON.stringify(await deps.rpc.introspect(r.ctx));
          res.writeHead(200, {
            "content-type": "application/json",
            "content-length": Buffer.byteLength(body),
          });
          res.end(body);
          return;
        }
      }
    } catch (err) {
      deps.logger.error({ err, server: serverId }, "data-plane request failed");
      sendGatewayError(res, new GatewayError("internal", "internal gateway error"));
    }
  }

  /** `GET /servers/{id}/ws` upgrades: authenticated like any request, then one session per socket. */
  async function handleUpgrade(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    serverId: string,
    settled: (status: number) => void = () => {},
  ) {
    try {
      const r = await resolve(req, serverId);
      if (!r.ok) {
        settled(r.error.status);
        return refuseUpgrade(socket, req, r.error);
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        settled(101);
        void deps.sessions.handleWebSocket(ws, r.ctx);
      });
    } catch (err) {
      deps.logger.error({ err, server: serverId }, "websocket upgrade failed");
      settled(500);
      refuseUpgrade(socket, req, asGatewayError(err));
    }
  }

  // MCP over WebSocket: the `mcp` subprotocol when the client offers it.
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: deps.maxBodyBytes,
    handleProtocols: (protocols) => (protocols.has("mcp") ? "mcp" : false),
  });
  // The handshake answers the request id too, like every other response.
  wss.on("headers", (headers, req) => {
    const requestId = requestIdOf(req);
    if (requestId) headers.push(`x-request-id: ${requestId}`);
  });

  app.all("/servers/:id/mcp", async (c) => {
    await handleServerMcp(c.env.incoming, c.env.outgoing, c.req.param("id"));
    return RESPONSE_ALREADY_SENT;
  });

  app.notFound((c) =>
    c.json(new GatewayError("not_found", `no route for ${c.req.path}`).toJsonRpc(null), 404),
  );
  app.onError((err, c) => {
    deps.logger.error({ err }, "unhandled data-plane error");
    return c.json(new GatewayError("internal", "internal gateway error").toJsonRpc(null), 500);
  });

  /**
   * The conflicts report of one namespace for the control plane (asked over the bus): the same
   * aggregate and `inspect()` as `/ns/{slug}/conflicts`, but for no caller. It is an admin view
   * of the configuration, so every enabled member takes part and no policy hides servers or
   * tools: a name that collides for some callers is reported even if the asker's policy would
   * hide one side. Rate limits do not apply either (one connection per member, then closed).
   */
  async function inspectNamespace(
    orgId: string,
    namespaceId: string,
    options: { memberTimeoutMs?: number | undefined } = {},
  ): Promise<NamespaceInspection> {
    const org = deps.store.current.orgs.get(orgId);
    const namespace = org?.namespaces.find((n) => n.id === namespaceId);
    if (!org || !namespace) return { status: "unknown_namespace", snapshot_version: org?.version ?? null };
    // A disabled org's namespaces are not served; its upstreams are not contacted either.
    if (!org.org.active) return { status: "org_disabled", snapshot_version: org.version };
    const members: Member[] = org.servers
      .filter((s) => s.namespace_id === namespace.id && s.enabled && s.transport !== "virtual")
      .map((server) => ({ server, guards: {} }));
    const sessionId = `inspect-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
    const aggregate = new NamespaceUpstream({
      namespace,
      members,
      // Inspection is the control plane's: it counts as the org's, for no principal of it.
      connect: (server) =>
        connectUpstream(server, `${sessionId}.${server.id}`, deps.connect, {
          ...stdioOwner({ org }, { id: "inspect" }),
        }),
      memberTimeoutMs: Math.min(deps.aggregateMemberTimeoutMs, options.memberTimeoutMs ?? Infinity),
      logger: deps.logger,
    });
    try {
      await aggregate.start();
      return {
        status: "ok",
        snapshot_version: org.version,
        namespace: {
          id: namespace.id,
          slug: namespace.slug,
          tool_naming: namespace.tool_naming,
          tool_separator: namespace.tool_separator,
        },
        ...(await aggregate.inspect()),
      };
    } finally {
      await aggregate.close();
    }
  }

  return {
    app,
    observer,
    handleServerMcp,
    handleServerTransport,
    handleUpgrade,
    handleNamespace,
    handleNamespaceUpgrade,
    inspectNamespace,
  };
}

/** What a data plane reports about one namespace to the control plane (`inspectNamespace`). */
export type NamespaceInspection =
  | { status: "unknown_namespace" | "org_disabled"; snapshot_version: number | null }
  | {
      status: "ok";
      /** The org's snapshot version the report was made from. */
      snapshot_version: number;
      namespace: { id: string; slug: string; tool_naming: string; tool_separator: string };
      conflicts: Array<{ kind: string; name: string; servers: string[] }>;
      unavailable: Array<{ server: string; reason: string }>;
    };

/**
 * The node request listener of a data plane: each request is matched once against the route
 * table (routes/table.ts) and served inside the observe frame (pipeline/observe.ts: request id,
 * span, metrics); MCP endpoints go straight to their handlers, everything else (health,
 * metrics, metadata, operator endpoints) through Hono.
 */
export function createRequestListener(dp: ReturnType<typeof createDataPlaneApp>, guard?: OriginGuard) {
  const hono = getRequestListener(dp.app.fetch);
  return (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? "";
    const route = matchRoute(url);
    dp.observer.http(req, res, route, () => {
      const refused = guard?.(url, req.headers);
      if (refused) {
        req.resume();
        sendGatewayError(res, new GatewayError("forbidden", refused));
        return;
      }
      const family = route.name.slice(0, route.name.indexOf("."));
      if (route.name === "server.mcp") void dp.handleServerMcp(req, res, route.target!);
      else if (family === "server" && route.endpoint !== "ws")
        void dp.handleServerTransport(req, res, route.target!, route.endpoint!, route.query!);
      else if (family === "namespace" && route.endpoint !== "ws")
        void dp.handleNamespace(req, res, route.target, route.endpoint!, route.query!);
      else void hono(req, res);
    });
  };
}

/** The node `upgrade` listener: WebSocket sessions at `/servers/{id}/ws` and `/ns/{slug}/ws`. */
export function createUpgradeListener(dp: ReturnType<typeof createDataPlaneApp>, guard?: OriginGuard) {
  return (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const route = matchRoute(req.url ?? "");
    dp.observer.upgrade(req, route, (settled) => {
      const refused = guard?.(req.url ?? "", req.headers);
      if (refused) {
        settled(403);
        return refuseUpgrade(socket, req, new GatewayError("forbidden", refused));
      }
      if (route.name === "namespace.ws")
        return void dp.handleNamespaceUpgrade(req, socket, head, route.target, settled);
      if (route.name === "server.ws") return void dp.handleUpgrade(req, socket, head, route.target!, settled);
      settled(404);
      refuseUpgrade(socket, req, new GatewayError("not_found", `no WebSocket endpoint at ${route.name}`));
    });
  };
}

/** Answers an upgrade request with an HTTP error (JSON-RPC body) and closes the socket. */
export function refuseUpgrade(socket: Duplex, req: IncomingMessage, err: GatewayError): void {
  const body = JSON.stringify(err.toJsonRpc(null));
  const headers: Record<string, string> = {
    ...err.headers(),
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(body)),
    connection: "close",
  };
  const requestId = requestIdOf(req);
  if (requestId) headers["x-request-id"] = requestId;
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}`);
  socket.end(
    `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? ""}\r\n${lines.join("\r\n")}\r\n\r\n${body}`,
  );
}
