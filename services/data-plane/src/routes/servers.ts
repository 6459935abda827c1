import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { STATELESS_PROTOCOL_VERSION } from "@mcpgw/protocol";
import { type Span, SpanStatusCode } from "@mcpgw/telemetry";
import { CredentialError } from "@mcpgw/upstream-credentials";
import type { DataPlaneContext } from "../pipeline/context.ts";
import { GatewayError, sendGatewayError } from "../pipeline/errors.ts";
import { inRequestContext, requestIdOf } from "../pipeline/observe.ts";
import type { Resolution, Resolver } from "../pipeline/resolve.ts";
import { sessionOwner } from "../replica-ids.ts";
import { type ProxyOutcome, proxyStreamableHttp } from "../transports/streamable-http.ts";
import { rpcIntrospection, sseMessage, upgradeWebSocket } from "./shared-endpoints.ts";

/** The per-server routes: `/servers/{id}/mcp`, `/sse`, `/message`, `/rpc`, `/rpc/introspection`, `/ws`. */
export function serverRoutes(cx: DataPlaneContext, r: Resolver) {
  return {
    /** Also called directly by the node request listener, skipping Hono on the hot path. */
    handleServerMcp: (req: IncomingMessage, res: ServerResponse, serverId: string) =>
      serveMcp(cx, r, req, res, serverId),
    handleServerTransport: (
      req: IncomingMessage,
      res: ServerResponse,
      serverId: string,
      kind: string,
      query: URLSearchParams,
    ) => serveTransport(cx, r, req, res, serverId, kind, query),
    /** `GET /servers/{id}/ws` upgrades: authenticated like any request, then one session per socket. */
    handleUpgrade: (
      req: IncomingMessage,
      socket: Duplex,
      head: Buffer,
      serverId: string,
      settled?: (status: number) => void,
    ) =>
      upgradeWebSocket(cx, () => r.resolve(req, serverId), req, socket, head, settled, { server: serverId }),
  };
}

type Resolved = Extract<Resolution, { ok: true }>;

/** A stateless (2026-07-28) request: a POST with that revision and no session. */
const isStatelessRequest = (req: IncomingMessage) =>
  req.headers["mcp-protocol-version"] === STATELESS_PROTOCOL_VERSION &&
  req.method === "POST" &&
  !req.headers["mcp-session-id"];

/**
 * The MCP endpoint of one server (Streamable HTTP). Streamable-HTTP upstreams take the
 * byte-level relay; stdio and legacy-SSE upstreams a message-level session.
 */
async function serveMcp(
  cx: DataPlaneContext,
  { resolve, refuse }: Resolver,
  req: IncomingMessage,
  res: ServerResponse,
  serverId: string,
): Promise<void> {
  const { deps, trace, label, requests } = cx;
  const started = performance.now();
  const span = trace.startSpan("mcp.proxy", {
    attributes: { "mcp.server.id": serverId, "http.request.method": req.method ?? "" },
  });
  try {
    const r = await resolve(req, serverId);
    if (!r.ok) return refuse(req, res, r);
    const { server } = r.routed!;
    const messageLevel = messageLevelHandler(cx, req, r);
    if (messageLevel) {
      await inRequestContext(req, () => messageLevel(res));
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
      deps.logger.error(
        { server: server.id, reason: err.message, request_id: requestIdOf(req) },
        "upstream credentials unavailable",
      );
      return refuse(req, res, {
        ok: false,
        error: new GatewayError("upstream_unavailable", "the gateway cannot authenticate to this upstream"),
      });
    }
    translateOnRefusal(cx, req, r);
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
    recordOutcome(cx, r, span, outcome, started, requestIdOf(req));
  } catch (err) {
    span.setStatus({ code: SpanStatusCode.ERROR });
    deps.logger.error({ err, server: serverId, request_id: requestIdOf(req) }, "data-plane request failed");
    sendGatewayError(res, new GatewayError("internal", "internal gateway error"));
  } finally {
    span.end();
  }
}

/**
 * When the request is relayed message by message rather than byte by byte, the handler that
 * does it: stdio and legacy-SSE upstreams speak a session-based revision (a stateless client is
 * translated, the gateway keeping the upstream session on its behalf); a session-based client
 * of an upstream known to speak only the stateless revision gets a gateway-held session; a
 * stateless client of a streamable-HTTP upstream known to want sessions is translated.
 */
function messageLevelHandler(
  { deps, sessionBasedUpstreams }: DataPlaneContext,
  req: IncomingMessage,
  r: Resolved,
): ((res: ServerResponse) => Promise<void>) | undefined {
  const { server } = r.routed!;
  const stateless = isStatelessRequest(req);
  if (server.transport === "stdio" || server.transport === "sse") {
    return stateless
      ? (res) => deps.rpc.handleStateless(req, res, r.ctx)
      : (res) => deps.sessions.handleStreamableHttp(req, res, r.ctx);
  }
  if (server.transport !== "streamable_http") return undefined;
  const sid = req.headers["mcp-session-id"];
  const gatewaySession =
    typeof sid === "string"
      ? sessionOwner(sid) !== undefined
      : deps.connect.revisions.knownStateless(server.id);
  if (!stateless && gatewaySession) return (res) => deps.sessions.handleStreamableHttp(req, res, r.ctx);
  if (stateless && sessionBasedUpstreams.get(server.id))
    return (res) => deps.rpc.handleStateless(req, res, r.ctx);
  return undefined;
}

/**
 * The byte relay asks the upstream first; when it refuses the client's revision, these hooks
 * translate (and remember the upstream's revision, so the next request is translated at once).
 */
function translateOnRefusal(
  { deps, sessionBasedUpstreams }: DataPlaneContext,
  req: IncomingMessage,
  r: Resolved,
) {
  const { server } = r.routed!;
  if (isStatelessRequest(req)) {
    r.hooks.translateStateless = (body, out) => {
      sessionBasedUpstreams.set(server.id, true);
      return inRequestContext(req, () => deps.rpc.respond(body, out, r.ctx, true, req.headers));
    };
  } else {
    r.hooks.translateSessionful = (body, out) => {
      deps.connect.revisions.markStateless(server.id);
      return inRequestContext(req, () => deps.sessions.handleStreamableHttp(req, out, r.ctx, body));
    };
  }
}

/** Metrics, the session event for operators, the span's attributes and a log line for failures. */
function recordOutcome(
  { deps, label, requests, duration }: DataPlaneContext,
  r: Resolved,
  span: Span,
  outcome: ProxyOutcome,
  started: number,
  requestId: string | undefined,
) {
  const { server, org } = r.routed!;
  requests.inc({ server: label(server.id), status: String(outcome.status) });
  if (outcome.session) {
    deps.report({
      event: outcome.session.event,
      session_id: outcome.session.id,
      org_id: org.org_id,
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
      {
        server: server.id,
        status: outcome.status,
        error: outcome.error,
        method: outcome.method,
        request_id: requestId,
      },
      "upstream request failed",
    );
  }
}

/** The other client transports of one server: legacy SSE, its message endpoint, JSON-RPC. */
async function serveTransport(
  cx: DataPlaneContext,
  { resolve, refuse }: Resolver,
  req: IncomingMessage,
  res: ServerResponse,
  serverId: string,
  kind: string,
  query: URLSearchParams,
) {
  const { deps } = cx;
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
