import type { IncomingMessage, ServerResponse } from "node:http";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { JsonRpcErrorCode } from "@mcpgw/protocol";
import { Counter, Histogram, type Logger, type Registry, SpanStatusCode, tracer } from "@mcpgw/telemetry";
import { Hono } from "hono";
import { AuthError, type Principal, type TokenVerifier } from "./auth/token-verifier.ts";
import type { DataPlaneEnv } from "./env.ts";
import type { SnapshotStore } from "./snapshot/store.ts";
import { sendJsonRpcError } from "./transports/http-errors.ts";
import { proxyStreamableHttp } from "./transports/streamable-http.ts";
import type { UpstreamPools } from "./upstream/pools.ts";

export interface DataPlaneDeps {
  store: SnapshotStore;
  verifier: TokenVerifier;
  pools: UpstreamPools;
  logger: Logger;
  metrics: Registry;
  maxBodyBytes: number;
  replicaId: string;
}

const BEARER = /^Bearer\s+(\S+)$/i;

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

  async function authenticate(req: IncomingMessage, res: ServerResponse): Promise<Principal | undefined> {
    const token = BEARER.exec(req.headers.authorization ?? "")?.[1];
    const fail = (reason: string) => {
      authFailures.inc({ reason });
      req.resume();
      sendJsonRpcError(res, 401, null, JsonRpcErrorCode.Unauthorized, `Unauthorized: ${reason}`, {
        "www-authenticate": `Bearer realm="mcpgw", error="invalid_token", error_description="${reason}"`,
      });
      return undefined;
    };
    if (!token) return fail("missing bearer token");
    try {
      return await deps.verifier.verify(token);
    } catch (err) {
      if (err instanceof AuthError) return fail(err.message);
      throw err;
    }
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

  app.all("/servers/:id/mcp", async (c) => {
    const { incoming: req, outgoing: res } = c.env;
    const started = performance.now();
    const serverId = c.req.param("id");
    const span = trace.startSpan("mcp.proxy", {
      attributes: { "mcp.server.id": serverId, "http.request.method": req.method ?? "" },
    });
    try {
      const principal = await authenticate(req, res);
      if (!principal) return RESPONSE_ALREADY_SENT;
      const routed = deps.store.current.servers.get(serverId);
      // Another org's server answers exactly like a missing one.
      if (!routed || routed.org.org_id !== principal.org_id) {
        req.resume();
        sendJsonRpcError(res, 404, null, JsonRpcErrorCode.NotFound, `unknown server ${serverId}`);
        return RESPONSE_ALREADY_SENT;
      }
      const { server, org } = routed;
      if (!server.enabled || !org.org.active) {
        req.resume();
        sendJsonRpcError(res, 403, null, JsonRpcErrorCode.Forbidden, `server '${server.name}' is disabled`);
        return RESPONSE_ALREADY_SENT;
      }
      if (server.transport !== "streamable_http") {
        req.resume();
        sendJsonRpcError(
          res,
          501,
          null,
          JsonRpcErrorCode.InternalError,
          `upstream transport '${server.transport}' is not served yet`,
        );
        return RESPONSE_ALREADY_SENT;
      }
      const outcome = await proxyStreamableHttp(req, res, server, principal, {
        pools: deps.pools,
        maxBodyBytes: deps.maxBodyBytes,
      });
      requests.inc({ server: server.id, status: String(outcome.status) });
      duration.observe({ server: server.id }, (performance.now() - started) / 1000);
      span.setAttributes({
        "http.response.status_code": outcome.status,
        "mcp.method.name": outcome.method ?? "",
      });
      if (outcome.status >= 500) {
        span.setStatus({ code: SpanStatusCode.ERROR, message: outcome.error ?? String(outcome.status) });
        deps.logger.warn(
          { server: server.id, status: outcome.status, error: outcome.error, method: outcome.method },
          "upstream request failed",
        );
      }
      return RESPONSE_ALREADY_SENT;
    } catch (err) {
      span.setStatus({ code: SpanStatusCode.ERROR });
      deps.logger.error({ err, server: serverId }, "data-plane request failed");
      sendJsonRpcError(res, 500, null, JsonRpcErrorCode.InternalError, "internal gateway error");
      return RESPONSE_ALREADY_SENT;
    } finally {
      span.end();
    }
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
  return app;
}
