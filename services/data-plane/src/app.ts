import type { IncomingMessage, ServerResponse } from "node:http";
import type { BlockList } from "node:net";
import { getRequestListener } from "@hono/node-server";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { allowsEveryTool, evaluatePolicy, type PolicyRequest } from "@mcpgw/policy";
import { JsonRpcErrorCode } from "@mcpgw/protocol";
import { Counter, Histogram, type Logger, type Registry, SpanStatusCode, tracer } from "@mcpgw/telemetry";
import { CredentialError, type UpstreamCredentials } from "@mcpgw/upstream-credentials";
import { Hono } from "hono";
import { Authenticator } from "./auth/authenticator.ts";
import { AuthError, type Principal } from "./auth/principal.ts";
import type { DataPlaneEnv } from "./env.ts";
import { clientIp } from "./rate-limit/client-ip.ts";
import type { RateLimits } from "./rate-limit/rate-limits.ts";
import type { RoutedServer, SnapshotStore } from "./snapshot/store.ts";
import { sendJsonRpcError } from "./transports/http-errors.ts";
import { type ProxyHooks, proxyStreamableHttp } from "./transports/streamable-http.ts";
import type { UpstreamPools } from "./upstream/pools.ts";

export interface DataPlaneDeps {
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
}

const metadataPath = (serverId?: string) =>
  serverId
    ? `/.well-known/oauth-protected-resource/servers/${serverId}/mcp`
    : "/.well-known/oauth-protected-resource";

const looksLikeUrl = (s: string) => /^https?:\/\//.test(s);

/** Builds the data-plane HTTP app from its dependencies. */
export function createDataPlaneApp(deps: DataPlaneDeps) {
  const app = new Hono<DataPlaneEnv>();
  const trace = tracer("mcpgw-data-plane");

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

  /** MCP authorization §2025-11-25: a 401 points the client at the protected-resource metadata. */
  function unauthorized(res: ServerResponse, serverId: string, reason: string) {
    authFailures.inc({ reason });
    const metadata = `${deps.publicUrl}${metadataPath(serverId)}`;
    sendJsonRpcError(res, 401, null, JsonRpcErrorCode.Unauthorized, `Unauthorized: ${reason}`, {
      "www-authenticate": `Bearer resource_metadata="${metadata}", error="invalid_token", error_description="${reason.replace(/"/g, "'")}"`,
    });
  }

  function policyRequest(principal: Principal, routed: RoutedServer): Omit<PolicyRequest, "tool"> {
    return {
      principal: {
        role: principal.role,
        user_id: principal.user_id,
        key_id: principal.key_id,
        a2a_key_id: principal.a2a_key_id,
        idp_id: principal.idp_id,
      },
      namespace: { id: routed.namespace.id, slug: routed.namespace.slug },
      server: { id: routed.server.id, name: routed.server.name },
    };
  }

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
  app.get("/metrics", async (c) =>
    c.text(await deps.metrics.metrics(), 200, { "content-type": deps.metrics.contentType }),
  );

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

  /**
   * The MCP endpoint of one server. Also called directly by the node request listener (see
   * `createRequestListener`), skipping Hono's Request construction on the hot path.
   */
  async function handleServerMcp(req: IncomingMessage, res: ServerResponse, serverId: string): Promise<void> {
    const started = performance.now();
    const span = trace.startSpan("mcp.proxy", {
      attributes: { "mcp.server.id": serverId, "http.request.method": req.method ?? "" },
    });
    const reject = (status: number, code: number, message: string) => {
      req.resume();
      sendJsonRpcError(res, status, null, code, message);
    };
    try {
      if (!Authenticator.hasCredential(req.headers)) {
        req.resume();
        unauthorized(res, serverId, "missing credentials: send Authorization: Bearer <token> or X-API-Key");
        return;
      }
      const routed = deps.store.current.servers.get(serverId);
      let principal: Principal;
      try {
        principal = await deps.authenticator.authenticate(req.headers, routed);
      } catch (err) {
        if (!(err instanceof AuthError)) throw err;
        req.resume();
        unauthorized(res, serverId, err.message);
        return;
      }
      // Another org's server answers exactly like a missing one.
      if (!routed || routed.org.org_id !== principal.org_id)
        return reject(404, JsonRpcErrorCode.NotFound, `unknown server ${serverId}`);
      const { server, org } = routed;
      if (principal.namespace_id && principal.namespace_id !== server.namespace_id) {
        return reject(403, JsonRpcErrorCode.Forbidden, "this credential is scoped to another namespace");
      }
      if (!server.enabled || !org.org.active)
        return reject(403, JsonRpcErrorCode.Forbidden, `server '${server.name}' is disabled`);
      if (server.transport !== "streamable_http") {
        return reject(
          501,
          JsonRpcErrorCode.InternalError,
          `upstream transport '${server.transport}' is not served yet`,
        );
      }

      const base = policyRequest(principal, routed);
      const access = evaluatePolicy(org.policies, org.org.policy_default, base);
      if (!access.allowed) {
        policyDenials.inc({ server: server.id });
        return reject(403, JsonRpcErrorCode.Forbidden, access.reason);
      }
      const hooks: ProxyHooks = {
        admit: ({ method, tool }) =>
          deps.rateLimits.check({ ip: clientIp(req, deps.trustedProxies), principal, routed, method, tool }),
      };
      if (!allowsEveryTool(org.policies, org.org.policy_default, base)) {
        hooks.authorizeTool = (tool) => {
          const decision = evaluatePolicy(org.policies, org.org.policy_default, { ...base, tool });
          if (!decision.allowed) policyDenials.inc({ server: server.id });
          return decision;
        };
        hooks.keepTool = (tool) =>
          evaluatePolicy(org.policies, org.org.policy_default, { ...base, tool }).allowed;
      }
      try {
        hooks.upstreamHeaders = await deps.credentials.headersFor(server);
      } catch (err) {
        if (!(err instanceof CredentialError)) throw err;
        deps.logger.error({ server: server.id, reason: err.message }, "upstream credentials unavailable");
        return reject(
          502,
          JsonRpcErrorCode.UpstreamUnavailable,
          "the gateway cannot authenticate to this upstream",
        );
      }

      const outcome = await proxyStreamableHttp(
        req,
        res,
        server,
        { pools: deps.pools, maxBodyBytes: deps.maxBodyBytes },
        hooks,
      );
      requests.inc({ server: server.id, status: String(outcome.status) });
      duration.observe({ server: server.id }, (performance.now() - started) / 1000);
      span.setAttributes({
        "http.response.status_code": outcome.status,
        "mcp.method.name": outcome.method ?? "",
        "enduser.id": principal.id,
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
      sendJsonRpcError(res, 500, null, JsonRpcErrorCode.InternalError, "internal gateway error");
    } finally {
      span.end();
    }
  }

  app.all("/servers/:id/mcp", async (c) => {
    await handleServerMcp(c.env.incoming, c.env.outgoing, c.req.param("id"));
    return RESPONSE_ALREADY_SENT;
  });

  app.notFound((c) =>
    c.json(
      {
        jsonrpc: "2.0",
        id: null,
        error: { code: JsonRpcErrorCode.NotFound, message: `no route for ${c.req.path}` },
      },
      404,
    ),
  );
  app.onError((err, c) => {
    deps.logger.error({ err }, "unhandled data-plane error");
    return c.json(
      {
        jsonrpc: "2.0",
        id: null,
        error: { code: JsonRpcErrorCode.InternalError, message: "internal gateway error" },
      },
      500,
    );
  });
  return { app, handleServerMcp };
}

const SERVER_MCP_PATH = /^\/servers\/([^/?#]+)\/mcp(?:\?|$)/;

/**
 * The node request listener of a data plane: MCP endpoint requests go straight to the relay,
 * everything else (health, metrics, metadata) through Hono.
 */
export function createRequestListener(dp: ReturnType<typeof createDataPlaneApp>) {
  const hono = getRequestListener(dp.app.fetch);
  return (req: IncomingMessage, res: ServerResponse) => {
    const match = SERVER_MCP_PATH.exec(req.url ?? "");
    if (match) {
      let id: string;
      try {
        id = decodeURIComponent(match[1]!);
      } catch {
        id = match[1]!;
      }
      void dp.handleServerMcp(req, res, id);
      return;
    }
    void hono(req, res);
  };
}
