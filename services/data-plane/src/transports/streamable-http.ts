import type { IncomingMessage, ServerResponse } from "node:http";
import { JsonRpcErrorCode, MCP_HEADERS, STATELESS_PROTOCOL_VERSION } from "@mcpgw/protocol";
import type { ServerEntry } from "@mcpgw/snapshot";
import { GatewayError, sendGatewayError } from "../pipeline/errors.ts";
import { requestIdOf } from "../pipeline/observe.ts";
import { endpointOrder, isConnectFailure } from "../upstream/endpoints.ts";
import type { UpstreamPools } from "../upstream/pools.ts";
import { decodeSessionId, encodeSessionId, type SessionBinding } from "./session-id.ts";
import { relayBody, relayFilteredList } from "./streamable-http-relay.ts";
import {
  header,
  type ProxyOutcome,
  parseStreamableRequest,
  type Refusal,
  refusal,
  type StreamableRequest,
} from "./streamable-http-request.ts";

/*
 * MCP Streamable HTTP to a streamable-HTTP upstream (MCP 2025-11-25 §transports, and the
 * stateless 2026-07-28 revision), as stages: parse (streamable-http-request.ts) → admit (rate
 * limits, the session quota) → route to an endpoint → forward with failover → map an upstream's
 * refusal → relay (streamable-http-relay.ts). The body is read once and forwarded as the same
 * bytes; the answer, JSON or SSE, is streamed as it arrives. Every refusal is a GatewayError,
 * written in one place.
 */

export type { ProxyOutcome } from "./streamable-http-request.ts";

export interface StreamableHttpOptions {
  pools: UpstreamPools;
  maxBodyBytes: number;
  /** Binds issued session ids to the caller and server (see session-id.ts). */
  binding?: SessionBinding | undefined;
}

/** Per-request decisions the caller (auth, policy, credentials) plugs into the relay. */
export interface ProxyHooks {
  /** Headers the gateway presents to the upstream (its own credentials). */
  upstreamHeaders?: Record<string, string> | undefined;
  /**
   * Whether the caller may still use the target at all, against the current snapshot (see
   * pipeline/guards.ts); a session whose standing fails is ended with this error.
   */
  standing?: (() => GatewayError | undefined) | undefined;
  /** Decides a `tools/call`; a denial is answered here and never reaches the upstream. */
  authorizeTool?: ((tool: string) => { allowed: boolean; reason: string; rule: unknown }) | undefined;
  /** Filters a `tools/list` result; when set, that one response is read whole and rewritten. */
  keepTool?: ((tool: string) => boolean) | undefined;
  /** Rate limiting: called once per request, with its JSON-RPC method and tool when known. */
  admit?:
    | ((rpc: {
        method?: string | undefined;
        tool?: string | undefined;
        requestId?: string | undefined;
      }) => Promise<Admission | undefined>)
    | undefined;
  /** The plan's `max_sessions`: new sessions need a place; used ones keep theirs. */
  sessions?: SessionGate | undefined;
  /**
   * A stateless (2026-07-28) request the upstream refused because it speaks a session-based
   * revision: answer it by translation instead (the gateway keeps a session on the client's behalf).
   */
  translateStateless?: ((body: unknown, res: ServerResponse) => Promise<void>) | undefined;
  /**
   * An `initialize` the upstream refused because it speaks only the stateless revision: serve
   * the client a session of the gateway's instead (translated message by message).
   */
  translateSessionful?: ((body: unknown, res: ServerResponse) => Promise<void>) | undefined;
}

/** The org's concurrent-session quota, as seen by one request. */
export interface SessionGate {
  limit: number;
  reserve(): Promise<string | undefined>;
  settle(ticket: string, sessionId: string | undefined): void;
  touch(sessionId: string): void;
  end(sessionId: string): void;
}

export interface Admission {
  allowed: boolean;
  retryAfterS: number;
  headers: Record<string, string>;
  rule: { id: string; name: string } | undefined;
}

/**
 * Whether an upstream's answer to `initialize` says it speaks only the stateless revision
 * (an unsupported-protocol-version error naming 2026-07-28 among the supported ones).
 */
function refusesSessions(body: string): boolean {
  try {
    const m = JSON.parse(body) as { error?: { data?: { supported?: unknown } } };
    const supported = m.error?.data?.supported;
    return Array.isArray(supported) && supported.includes(STATELESS_PROTOCOL_VERSION);
  } catch {
    return false;
  }
}

/**
 * The start of an upstream's refusal (at most 64 KiB, within 5 s): enough to tell why it refused,
 * without letting an endless or huge error body hold the client's request or this process's memory.
 */
async function readRefusal(body: AsyncIterable<Buffer> & { destroy(): void }): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  const timer = setTimeout(() => body.destroy(), 5000);
  try {
    for await (const chunk of body) {
      chunks.push(chunk);
      size += chunk.byteLength;
      if (size >= 64 * 1024) break;
    }
  } catch {
    // cut off: what arrived is the refusal
  } finally {
    clearTimeout(timer);
    body.destroy();
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** Errors with which a 2026-07-28 server rejects one request (it does speak the revision). */
const STATELESS_REJECTIONS = new Set<number>([
  JsonRpcErrorCode.InvalidParams,
  JsonRpcErrorCode.MethodNotFound,
  JsonRpcErrorCode.HeaderMismatch,
  JsonRpcErrorCode.MissingClientCapability,
]);

/**
 * Whether an upstream's 400/404 answer to a stateless request says it does not speak 2026-07-28
 * (a session-based server: "not initialized", "session required", an unsupported version)
 * rather than rejecting that one request.
 */
function refusesStateless(body: string): boolean {
  try {
    const m = JSON.parse(body) as { error?: { code?: unknown; data?: { supported?: unknown } } };
    const code = m.error?.code;
    if (code === JsonRpcErrorCode.UnsupportedProtocolVersion) {
      const supported = m.error?.data?.supported;
      return !(Array.isArray(supported) && supported.includes(STATELESS_PROTOCOL_VERSION));
    }
    return !(typeof code === "number" && STATELESS_REJECTIONS.has(code));
  } catch {
    return true;
  }
}

/** Request headers passed to the upstream. Never Authorization: the client's token stays here. */
const FORWARD_REQUEST_HEADERS = [
  "accept",
  "content-type",
  MCP_HEADERS.protocolVersion,
  MCP_HEADERS.method,
  MCP_HEADERS.name,
  MCP_HEADERS.lastEventId,
] as const;

/** Response headers passed back to the client (session id rewritten separately). */
const FORWARD_RESPONSE_HEADERS = [
  "content-type",
  "cache-control",
  MCP_HEADERS.protocolVersion,
  "retry-after",
] as const;

const endpointCache = new Map<string, { origin: string; path: string }>();

/** Origin and path of an endpoint URL, parsed once per distinct URL rather than per request. */
function parsedEndpoint(url: string): { origin: string; path: string } {
  let parsed = endpointCache.get(url);
  if (!parsed) {
    const u = new URL(url);
    parsed = { origin: u.origin, path: u.pathname + u.search };
    if (endpointCache.size > 10_000) endpointCache.clear();
    endpointCache.set(url, parsed);
  }
  return parsed;
}

type UpstreamResponse = Awaited<ReturnType<ReturnType<UpstreamPools["get"]>["request"]>>;

/**
 * A place reserved in the org's session quota, settled exactly once: with the session it became,
 * or released (every other way out of the request, by the `finally` of proxyStreamableHttp).
 */
function sessionTicket(gate: SessionGate, ticket: string) {
  let settled = false;
  return {
    settle(sessionId?: string) {
      if (settled) return;
      settled = true;
      gate.settle(ticket, sessionId);
    },
  };
}

type Ticket = ReturnType<typeof sessionTicket>;

/**
 * The admit stage: the request's rate limits, then (a new session only) a place in the session
 * quota. Admitted requests carry the RateLimit headers for the answer and the quota ticket.
 */
async function admit(
  req: IncomingMessage,
  request: StreamableRequest,
  hooks: ProxyHooks,
): Promise<
  { ok: true; limitHeaders?: Record<string, string>; ticket?: Ticket } | { ok: false; refusal: Refusal }
> {
  let limitHeaders: Record<string, string> | undefined;
  if (hooks.admit) {
    const tool = request.rpcMethod === "tools/call" ? request.toolName : undefined;
    const admission = await hooks.admit({ method: request.rpcMethod, tool, requestId: requestIdOf(req) });
    if (admission && !admission.allowed) {
      req.resume();
      const error = new GatewayError(
        "rate_limited",
        `rate limit exceeded (${admission.rule?.name ?? "limit"}); retry in ${admission.retryAfterS}s`,
        {
          retryAfterS: admission.retryAfterS,
          headers: admission.headers,
          data: { retry_after: admission.retryAfterS, rule: admission.rule },
        },
      );
      return {
        ok: false,
        refusal: refusal(error, request.rpcId, request.rpcMethod, { note: "rate limited" }),
      };
    }
    limitHeaders = admission?.headers;
  }
  const opens = request.method === "POST" && request.rpcMethod === "initialize" && !request.clientSessionId;
  if (!hooks.sessions || !opens) return { ok: true, limitHeaders };
  const reserved = await hooks.sessions.reserve();
  if (reserved === undefined) {
    const error = new GatewayError(
      "rate_limited",
      `the organization's plan allows at most ${hooks.sessions.limit} concurrent MCP sessions`,
      { retryAfterS: 60 },
    );
    return {
      ok: false,
      refusal: refusal(error, request.rpcId, request.rpcMethod, { note: "session quota" }),
    };
  }
  return { ok: true, limitHeaders, ticket: sessionTicket(hooks.sessions, reserved) };
}

/**
 * The route stage: the endpoints to try. A client's session id (the gateway's, see
 * session-id.ts) binds the request to the endpoint that holds the upstream session; a new
 * session goes where the endpoint chooser (upstream/endpoints.ts) sends it.
 */
function route(
  request: StreamableRequest,
  server: ServerEntry,
  binding: SessionBinding | undefined,
  sessions: SessionGate | undefined,
): { ok: true; order: number[]; upstreamSessionId?: string } | { ok: false; refusal: Refusal } {
  if (request.clientSessionId === undefined) {
    if (request.method === "POST") return { ok: true, order: endpointOrder(server) };
    const error = new GatewayError("bad_request", "Bad Request: Mcp-Session-Id header is required");
    return { ok: false, refusal: refusal(error, null, undefined) };
  }
  sessions?.touch(request.clientSessionId);
  const bound = decodeSessionId(request.clientSessionId, binding);
  const order = bound ? endpointOrder(server, { bound: bound.endpoint }) : [];
  if (!bound || order.length === 0) {
    // MCP §session-management: an unknown session is a 404, so the client re-initializes.
    const error = new GatewayError("not_found", "Session not found");
    return { ok: false, refusal: refusal(error, request.rpcId, request.rpcMethod) };
  }
  return { ok: true, order, upstreamSessionId: bound.upstreamSessionId };
}

/**
 * The forward stage: the request to the first endpoint that takes the connection. Only a
 * connection that was never made moves on to the next endpoint; a request that may have reached
 * an upstream is never repeated (JSON-RPC calls are not idempotent).
 */
async function forward(
  request: StreamableRequest,
  server: ServerEntry,
  order: number[],
  headers: Record<string, string>,
  pools: UpstreamPools,
): Promise<{ ok: true; upstream: UpstreamResponse; endpoint: number } | { ok: false; refusal: Refusal }> {
  let lastError: unknown;
  for (const index of order) {
    const endpoint = server.endpoints[index];
    if (!endpoint) break;
    const target = parsedEndpoint(endpoint.url);
    try {
      const upstream = await pools.get(target.origin, server.connect_timeout_ms).request({
        path: target.path,
        method: request.method,
        headers,
        body: request.body,
        headersTimeout: server.timeout_ms,
        // SSE streams stay open for as long as the session wants them.
        bodyTimeout: 0,
      });
      return { ok: true, upstream, endpoint: index };
    } catch (err) {
      lastError = err;
      if (!isConnectFailure(err)) break;
    }
  }
  const code = (lastError as { code?: string } | undefined)?.code ?? "";
  const { rpcId: id, rpcMethod: method } = request;
  if (code === "UND_ERR_HEADERS_TIMEOUT") {
    const error = new GatewayError(
      "upstream_timeout",
      `upstream did not answer within ${server.timeout_ms} ms`,
    );
    return { ok: false, refusal: refusal(error, id, method, { note: code }) };
  }
  const error = new GatewayError("upstream_unavailable", "upstream MCP server is unavailable");
  return { ok: false, refusal: refusal(error, id, method, { note: code || String(lastError) }) };
}

/**
 * The map stage: an upstream answer that is not the client's to see. A stateless request or a
 * sessionful `initialize` the upstream refused for its revision is answered by translation; a
 * refusal of the gateway's own credentials becomes a 502. Undefined: relay the answer as it is.
 */
async function mapUpstreamRefusal(
  upstream: UpstreamResponse,
  request: StreamableRequest,
  res: ServerResponse,
  hooks: ProxyHooks,
  ticket: Ticket | undefined,
  serverName: string,
): Promise<ProxyOutcome | undefined> {
  const status = upstream.statusCode;
  const fresh =
    request.method === "POST" && request.clientSessionId === undefined && request.parsed !== undefined;
  const { rpcMethod: method } = request;
  const translate =
    fresh && request.version === STATELESS_PROTOCOL_VERSION && (status === 400 || status === 404)
      ? { with: hooks.translateStateless, refused: refusesStateless }
      : fresh && method === "initialize" && status === 400
        ? { with: hooks.translateSessionful, refused: refusesSessions }
        : undefined;
  if (translate?.with) {
    // Either "I do not speak this revision" (translate from now on) or an upstream of that
    // revision rejecting this one request (bad _meta, headers, unknown method): relayed as it is.
    const refusalBody = await readRefusal(upstream.body);
    if (translate.refused(refusalBody)) {
      // The translation holds its own session (and its own place in the quota).
      ticket?.settle();
      await translate.with(request.parsed, res);
      return { status: res.statusCode, method, translated: true };
    }
    if (notMcp(upstream, request)) return refuseNotMcp(upstream, request, res, serverName);
    res.writeHead(status, { "content-type": upstream.headers["content-type"] ?? "application/json" });
    res.end(refusalBody);
    return { status, method };
  }
  if (status === 401 || status === 403) {
    // The upstream's challenge is about the gateway's credentials, not the client's.
    await upstream.body.dump().catch(() => {});
    const error = new GatewayError("upstream_unavailable", "upstream rejected the gateway's credentials");
    sendGatewayError(res, error, request.rpcId);
    return { status: 502, method, error: `upstream ${status}` };
  }
  if (notMcp(upstream, request)) {
    await upstream.body.dump().catch(() => {});
    return refuseNotMcp(upstream, request, res, serverName);
  }
  return undefined;
}

const MCP_CONTENT_TYPES = /^\s*(application\/json|text\/event-stream)\b/i;

/**
 * An answer no MCP server gives: an error page or plain text where JSON or an event stream
 * belongs (a wrong URL, a website, a proxy's error page). Answers MCP allows without a body
 * stay as they are: any answer to a DELETE, 202/204, an empty success, 405 to a GET (no
 * listen stream).
 */
function notMcp(upstream: UpstreamResponse, request: StreamableRequest): boolean {
  const status = upstream.statusCode;
  // A DELETE's answer is its status; 202/204 and empty successes carry nothing to read.
  if (request.method === "DELETE" || status === 202 || status === 204) return false;
  if (status === 405 && request.method === "GET") return false;
  const type = upstream.headers["content-type"];
  if (typeof type === "string" && MCP_CONTENT_TYPES.test(type)) return false;
  if (status < 400) return typeof type === "string" && upstream.headers["content-length"] !== "0";
  return true;
}

/**
 * A JSON-RPC error naming the server and what its upstream answered, instead of the page. A 404
 * to a request of a session stays a 404 (the session is gone: the client initializes again).
 */
function refuseNotMcp(
  upstream: UpstreamResponse,
  request: StreamableRequest,
  res: ServerResponse,
  serverName: string,
): ProxyOutcome {
  const status = upstream.statusCode;
  const type = String(upstream.headers["content-type"] ?? "no content type")
    .split(";")[0]!
    .trim();
  const data = { server: serverName, upstream_status: status, upstream_content_type: type };
  const error =
    status === 404 && request.clientSessionId !== undefined
      ? new GatewayError("not_found", `session not found on server '${serverName}': initialize again`, {
          data,
        })
      : new GatewayError(
          "upstream_unavailable",
          `server '${serverName}' did not answer MCP: its upstream answered HTTP ${status} (${type}); check the server's URL`,
          { data },
        );
  sendGatewayError(res, error, request.rpcId);
  return { status: error.status, method: request.rpcMethod, error: `upstream answered ${status} ${type}` };
}

/** The relay stage: the answer's headers (session id rewritten), then its body, streamed. */
async function relay(
  upstream: UpstreamResponse,
  endpoint: number,
  request: StreamableRequest,
  res: ServerResponse,
  extra: {
    binding?: SessionBinding | undefined;
    hooks: ProxyHooks;
    limitHeaders?: Record<string, string> | undefined;
    ticket?: Ticket | undefined;
  },
): Promise<ProxyOutcome> {
  const status = upstream.statusCode;
  const { rpcMethod: method, hooks } = { ...request, hooks: extra.hooks };
  const out: Record<string, string> = {};
  for (const name of FORWARD_RESPONSE_HEADERS) {
    const v = upstream.headers[name];
    if (typeof v === "string") out[name] = v;
  }
  const upstreamSid = upstream.headers[MCP_HEADERS.sessionId];
  let session: ProxyOutcome["session"];
  if (typeof upstreamSid === "string") {
    const gatewaySid = encodeSessionId({ endpoint, upstreamSessionId: upstreamSid }, extra.binding);
    out[MCP_HEADERS.sessionId] = gatewaySid;
    if (method === "initialize" && status === 200) {
      const params = request.initializeParams;
      session = {
        event: "start",
        id: gatewaySid,
        protocolVersion:
          typeof params?.protocolVersion === "string" ? params.protocolVersion.slice(0, 32) : undefined,
        clientInfo: params?.clientInfo,
      };
    }
  }
  const ended =
    request.method === "DELETE" && request.clientSessionId !== undefined && status >= 200 && status < 300;
  if (ended) {
    session = { event: "end", id: request.clientSessionId! };
    hooks.sessions?.end(request.clientSessionId!);
  }
  extra.ticket?.settle(session?.event === "start" ? session.id : undefined);
  if (extra.limitHeaders) Object.assign(out, extra.limitHeaders);
  const isStream = out["content-type"]?.startsWith("text/event-stream") ?? false;
  if (hooks.keepTool && request.listed.size > 0 && status === 200)
    return relayFilteredList(
      upstream.body,
      res,
      status,
      out,
      isStream,
      request.rpcId,
      request.listed,
      hooks.keepTool,
    );
  if (isStream) out["x-accel-buffering"] = "no";
  res.writeHead(status, out);
  // A GET stream may stay quiet for long: the client must see it open now. POST responses
  // carry their first event right away, so their headers ride with it (one write fewer).
  if (isStream && request.method === "GET") res.flushHeaders();
  const error = await relayBody(upstream.body, res);
  return { status, method, ...(error ? { error } : {}), ...(session ? { session } : {}) };
}

/** Writes a refusal (one mapper: the error table's JSON-RPC form) and returns its outcome. */
function refuse(res: ServerResponse, r: Refusal): ProxyOutcome {
  sendGatewayError(res, r.error, r.id, r.status);
  return r.outcome;
}

/** One client request relayed to a streamable-HTTP upstream, stage by stage (see above). */
export async function proxyStreamableHttp(
  req: IncomingMessage,
  res: ServerResponse,
  server: ServerEntry,
  options: StreamableHttpOptions,
  hooks: ProxyHooks = {},
): Promise<ProxyOutcome> {
  const parsed = await parseStreamableRequest(req, options.maxBodyBytes, hooks.authorizeTool);
  if (!parsed.ok) return refuse(res, parsed.refusal);
  const request = parsed.request;
  const admitted = await admit(req, request, hooks);
  if (!admitted.ok) return refuse(res, admitted.refusal);
  const { ticket, limitHeaders } = admitted;
  try {
    const routed = route(request, server, options.binding, hooks.sessions);
    if (!routed.ok) return refuse(res, routed.refusal);
    const headers: Record<string, string> = {};
    for (const name of FORWARD_REQUEST_HEADERS) {
      const v = header(req.headers, name);
      if (v !== undefined) headers[name] = v;
    }
    if (routed.upstreamSessionId !== undefined) headers[MCP_HEADERS.sessionId] = routed.upstreamSessionId;
    if (hooks.upstreamHeaders) Object.assign(headers, hooks.upstreamHeaders);
    const forwarded = await forward(request, server, routed.order, headers, options.pools);
    if (!forwarded.ok) {
      if (res.destroyed) return { status: 499, method: request.rpcMethod, error: "client closed" };
      return refuse(res, forwarded.refusal);
    }
    const mapped = await mapUpstreamRefusal(forwarded.upstream, request, res, hooks, ticket, server.name);
    if (mapped) return mapped;
    return await relay(forwarded.upstream, forwarded.endpoint, request, res, {
      binding: options.binding,
      hooks,
      limitHeaders,
      ticket,
    });
  } finally {
    ticket?.settle();
  }
}
