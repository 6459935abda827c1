import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { STATELESS_PROTOCOL_VERSION } from "@mcpgw/protocol";
import { SpanStatusCode } from "@mcpgw/telemetry";
import { CredentialError } from "@mcpgw/upstream-credentials";
import type { DataPlaneContext } from "../pipeline/context.ts";
import { asGatewayError, GatewayError, refuseUpgrade, sendGatewayError } from "../pipeline/errors.ts";
import { requestIdOf } from "../pipeline/observe.ts";
import type { Resolver } from "../pipeline/resolve.ts";
import { sessionOwner } from "../replica-ids.ts";
import { proxyStreamableHttp } from "../transports/streamable-http.ts";
import { rpcIntrospection, sseMessage } from "./shared-endpoints.ts";

/** The per-server routes: `/servers/{id}/mcp`, `/sse`, `/message`, `/rpc`, `/rpc/introspection`, `/ws`. */
export function serverRoutes(cx: DataPlaneContext, r: Resolver) {
  const { deps, trace, label, requests, duration, sessionBasedUpstreams, wss } = cx;
  const { resolve, refuse } = r;

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
        case "message":
          return await sseMessage(cx, req, res, r.ctx, query);
        case "rpc":
          return await deps.rpc.handle(req, res, r.ctx);
        case "rpc/introspection":
          return await rpcIntrospection(cx, req, res, r.ctx);
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
        return refuseUpgrade(socket, requestIdOf(req), r.error);
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        settled(101);
        void deps.sessions.handleWebSocket(ws, r.ctx);
      });
    } catch (err) {
      deps.logger.error({ err, server: serverId }, "websocket upgrade failed");
      settled(500);
      refuseUpgrade(socket, requestIdOf(req), asGatewayError(err));
    }
  }

  return { handleServerMcp, handleServerTransport, handleUpgrade };
}
