import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import type { Readable } from "node:stream";
import {
  DEFAULT_PROTOCOL_VERSION,
  isJsonRpcMessage,
  isSupportedProtocolVersion,
  JsonRpcErrorCode,
  type JsonRpcId,
  jsonRpcError,
  MCP_HEADERS,
  STATELESS_PROTOCOL_VERSION,
  SUPPORTED_PROTOCOL_VERSIONS,
} from "@mcpgw/protocol";
import type { ServerEntry } from "@mcpgw/snapshot";
import type { GatewayError } from "../pipeline/errors.ts";
import { filterListResult, isFilteredList, policyTarget } from "../policy-targets.ts";
import type { UpstreamPools } from "../upstream/pools.ts";
import { sendJsonRpcError } from "./http-errors.ts";
import { batchTooLarge, MAX_BATCH_MESSAGES } from "./limits.ts";
import { decodeSessionId, encodeSessionId, type SessionBinding } from "./session-id.ts";

export interface ProxyOutcome {
  status: number;
  method: string | undefined;
  error?: string;
  /** Answered by translating a stateless request for a session-based upstream. */
  translated?: boolean;
  /** A session the upstream opened (initialize) or that the client ended (DELETE). */
  session?: {
    event: "start" | "end";
    id: string;
    protocolVersion?: string | undefined;
    clientInfo?: Record<string, unknown> | undefined;
  };
}

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
    | ((rpc: { method?: string | undefined; tool?: string | undefined }) => Promise<Admission | undefined>)
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

/** Largest tools/list response the gateway will buffer to filter. */
const MAX_FILTERED_RESPONSE = 16 * 1024 * 1024;

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

const CONNECT_ERRORS = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EHOSTUNREACH",
  "ENOTFOUND",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_SOCKET",
]);

class BodyTooLarge extends Error {}

async function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const declared = Number(req.headers["content-length"] ?? 0);
  if (declared > max) throw new BodyTooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) throw new BodyTooLarge();
    chunks.push(chunk);
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
}

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

function pickEndpoint(server: ServerEntry): number {
  const endpoints = server.endpoints;
  if (endpoints.length <= 1) return 0;
  let total = 0;
  for (const e of endpoints) total += e.weight;
  let r = Math.random() * total;
  for (let i = 0; i < endpoints.length; i++) {
    r -= endpoints[i]!.weight;
    if (r < 0) return i;
  }
  return endpoints.length - 1;
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * MCP Streamable HTTP to a streamable-HTTP upstream (MCP 2025-11-25 §transports, and the
 * stateless 2026-07-28 revision). The request body is read once (size-limited, checked to be
 * JSON-RPC) and forwarded as the same bytes; the response, JSON or SSE, is piped through as
 * it arrives, never buffered whole.
 */
export async function proxyStreamableHttp(
  req: IncomingMessage,
  res: ServerResponse,
  server: ServerEntry,
  options: StreamableHttpOptions,
  hooks: ProxyHooks = {},
): Promise<ProxyOutcome> {
  const method = req.method ?? "GET";
  if (method !== "POST" && method !== "GET" && method !== "DELETE") {
    sendJsonRpcError(res, 405, null, JsonRpcErrorCode.InvalidRequest, `method ${method} not allowed`, {
      allow: "GET, POST, DELETE",
    });
    return { status: 405, method: undefined };
  }

  // MCP §protocol-version-header: an unsupported version is a 400, naming the supported ones
  // (answered once the body is read, so that the error carries the request's id).
  const version = header(req.headers, MCP_HEADERS.protocolVersion) ?? DEFAULT_PROTOCOL_VERSION;
  const refuseVersion = (id: JsonRpcId): ProxyOutcome => {
    const requested = version.slice(0, 40);
    const body = JSON.stringify(
      jsonRpcError(
        id,
        JsonRpcErrorCode.UnsupportedProtocolVersion,
        `unsupported MCP-Protocol-Version ${JSON.stringify(requested)}; supported: ${SUPPORTED_PROTOCOL_VERSIONS.join(", ")}`,
        { supported: SUPPORTED_PROTOCOL_VERSIONS, requested },
      ),
    );
    res.writeHead(400, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
    res.end(body);
    return { status: 400, method: undefined };
  };
  if (!isSupportedProtocolVersion(version) && method !== "POST") {
    req.resume();
    return refuseVersion(null);
  }

  let body: Buffer | undefined;
  let rpcMethod: string | undefined;
  let rpcId: JsonRpcId = null;
  let toolName: string | undefined;
  let parsedBody: unknown;
  let initializeParams: { protocolVersion?: string; clientInfo?: Record<string, unknown> } | undefined;
  /** Request id → list method, for the answers policy filters. */
  const listed = new Map<string | number, string>();
  if (method === "POST") {
    const contentType = header(req.headers, "content-type") ?? "";
    if (!contentType.toLowerCase().startsWith("application/json")) {
      sendJsonRpcError(
        res,
        415,
        null,
        JsonRpcErrorCode.InvalidRequest,
        "Content-Type must be application/json",
      );
      req.resume();
      return { status: 415, method: undefined };
    }
    try {
      body = await readBody(req, options.maxBodyBytes);
    } catch (err) {
      if (err instanceof BodyTooLarge) {
        sendJsonRpcError(
          res,
          413,
          null,
          JsonRpcErrorCode.RequestTooLarge,
          `request body exceeds ${options.maxBodyBytes} bytes`,
          {
            connection: "close",
          },
        );
        return { status: 413, method: undefined };
      }
      throw err;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString("utf8"));
      parsedBody = parsed;
    } catch {
      sendJsonRpcError(
        res,
        400,
        null,
        JsonRpcErrorCode.ParseError,
        "Parse error: request body is not valid JSON",
      );
      return { status: 400, method: undefined };
    }
    const messages = Array.isArray(parsed) ? parsed : [parsed];
    if (messages.length > MAX_BATCH_MESSAGES) {
      const refusal = JSON.stringify(batchTooLarge(messages.length));
      res.writeHead(400, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(refusal),
      });
      res.end(refusal);
      return { status: 400, method: undefined };
    }
    if (messages.length === 0 || !messages.every(isJsonRpcMessage)) {
      sendJsonRpcError(
        res,
        400,
        null,
        JsonRpcErrorCode.InvalidRequest,
        "Invalid Request: body must be a JSON-RPC 2.0 message",
      );
      return { status: 400, method: undefined };
    }
    const first = messages[0]!;
    rpcMethod = first.method;
    rpcId = first.id ?? null;
    if (!isSupportedProtocolVersion(version)) return refuseVersion(rpcId);
    if (rpcMethod === "initialize") initializeParams = first.params as typeof initializeParams;
    if (rpcMethod === "tools/call") {
      const name = (first.params as { name?: unknown } | undefined)?.name;
      if (typeof name === "string") toolName = name;
    }
    // Every list request of the body, wherever it sits in a batch, has its answer filtered.
    for (const m of messages)
      if (m.id !== undefined && m.id !== null && isFilteredList(m.method)) listed.set(m.id, m.method!);
    if (hooks.authorizeTool) {
      for (const m of messages) {
        const target = policyTarget(m.method, m.params as Record<string, unknown> | undefined);
        if (target === undefined) continue;
        const decision = hooks.authorizeTool(target);
        if (!decision.allowed) {
          // A JSON-RPC error the client's SDK surfaces as such: denied by policy, not "unknown tool".
          const body = JSON.stringify(
            jsonRpcError(m.id ?? null, JsonRpcErrorCode.Forbidden, decision.reason, {
              policy: decision.rule,
            }),
          );
          res.writeHead(messages.length === 1 ? 200 : 403, {
            "content-type": "application/json",
            "content-length": Buffer.byteLength(body),
          });
          res.end(body);
          return { status: 403, method: m.method, error: "denied by policy" };
        }
      }
    }

    // 2026-07-28: the routing headers must agree with the body they describe.
    const headerMethod = header(req.headers, MCP_HEADERS.method);
    if (version === STATELESS_PROTOCOL_VERSION && headerMethod !== undefined && headerMethod !== rpcMethod) {
      sendJsonRpcError(
        res,
        400,
        rpcId,
        JsonRpcErrorCode.HeaderMismatch,
        "Mcp-Method header does not match the request body",
      );
      return { status: 400, method: rpcMethod };
    }
  }

  let limitHeaders: Record<string, string> | undefined;
  if (hooks.admit) {
    const tool = rpcMethod === "tools/call" ? toolName : undefined;
    const admission = await hooks.admit({ method: rpcMethod, tool });
    if (admission && !admission.allowed) {
      req.resume();
      const retryAfter = String(admission.retryAfterS);
      // HTTP 429 where the transport allows it, with the JSON-RPC error carrying retry data.
      const body = JSON.stringify(
        jsonRpcError(
          rpcId,
          JsonRpcErrorCode.RateLimited,
          `rate limit exceeded (${admission.rule?.name ?? "limit"}); retry in ${retryAfter}s`,
          {
            retry_after: admission.retryAfterS,
            rule: admission.rule,
          },
        ),
      );
      res.writeHead(429, {
        ...admission.headers,
        "retry-after": retryAfter,
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body),
      });
      res.end(body);
      return { status: 429, method: rpcMethod, error: "rate limited" };
    }
    limitHeaders = admission?.headers;
  }

  let ticket: string | undefined;
  if (
    hooks.sessions &&
    method === "POST" &&
    rpcMethod === "initialize" &&
    header(req.headers, MCP_HEADERS.sessionId) === undefined
  ) {
    ticket = await hooks.sessions.reserve();
    if (ticket === undefined) {
      sendJsonRpcError(
        res,
        429,
        rpcId,
        JsonRpcErrorCode.RateLimited,
        `the organization's plan allows at most ${hooks.sessions.limit} concurrent MCP sessions`,
        {
          "retry-after": "60",
        },
      );
      return { status: 429, method: rpcMethod, error: "session quota" };
    }
  }

  // Sessions: the gateway's id routes to the endpoint that holds the upstream session.
  const clientSessionId = header(req.headers, MCP_HEADERS.sessionId);
  let endpointIndex: number;
  let upstreamSessionId: string | undefined;
  if (clientSessionId !== undefined) {
    hooks.sessions?.touch(clientSessionId);
    const route = decodeSessionId(clientSessionId, options.binding);
    if (!route || route.endpoint >= server.endpoints.length) {
      // MCP §session-management: an unknown session is a 404, so the client re-initializes.
      sendJsonRpcError(res, 404, rpcId, JsonRpcErrorCode.NotFound, "Session not found");
      return { status: 404, method: rpcMethod };
    }
    endpointIndex = route.endpoint;
    upstreamSessionId = route.upstreamSessionId;
  } else {
    if (method !== "POST") {
      sendJsonRpcError(
        res,
        400,
        null,
        JsonRpcErrorCode.InvalidRequest,
        "Bad Request: Mcp-Session-Id header is required",
      );
      return { status: 400, method: undefined };
    }
    endpointIndex = pickEndpoint(server);
  }

  const headers: Record<string, string> = {};
  for (const name of FORWARD_REQUEST_HEADERS) {
    const v = header(req.headers, name);
    if (v !== undefined) headers[name] = v;
  }
  if (upstreamSessionId !== undefined) headers[MCP_HEADERS.sessionId] = upstreamSessionId;
  if (hooks.upstreamHeaders) Object.assign(headers, hooks.upstreamHeaders);

  // A request that never reached the upstream (connection refused) may go to another endpoint;
  // one that did is never repeated (JSON-RPC calls are not idempotent).
  const attempts =
    upstreamSessionId === undefined ? 1 + Math.min(server.retries, server.endpoints.length * 2) : 1;
  let upstream: Awaited<ReturnType<ReturnType<UpstreamPools["get"]>["request"]>> | undefined;
  let lastError: unknown;
  for (let attempt = 0; attempt < attempts && !upstream; attempt++) {
    if (attempt > 0 && server.endpoints.length > 1)
      endpointIndex = (endpointIndex + 1) % server.endpoints.length;
    const endpoint = server.endpoints[endpointIndex];
    if (!endpoint) break;
    const target = parsedEndpoint(endpoint.url);
    try {
      upstream = await options.pools.get(target.origin, server.connect_timeout_ms).request({
        path: target.path,
        method,
        headers,
        body,
        headersTimeout: server.timeout_ms,
        // SSE streams stay open for as long as the session wants them.
        bodyTimeout: 0,
      });
    } catch (err) {
      lastError = err;
      if (!CONNECT_ERRORS.has((err as { code?: string }).code ?? "")) break;
    }
  }

  if (!upstream) {
    if (ticket !== undefined) hooks.sessions?.settle(ticket, undefined);
    if (res.destroyed) return { status: 499, method: rpcMethod, error: "client closed" };
    const code = (lastError as { code?: string }).code ?? "";
    if (code === "UND_ERR_HEADERS_TIMEOUT") {
      sendJsonRpcError(
        res,
        504,
        rpcId,
        JsonRpcErrorCode.UpstreamTimeout,
        `upstream did not answer within ${server.timeout_ms} ms`,
      );
      return { status: 504, method: rpcMethod, error: code };
    }
    sendJsonRpcError(
      res,
      502,
      rpcId,
      JsonRpcErrorCode.UpstreamUnavailable,
      "upstream MCP server is unavailable",
    );
    return { status: 502, method: rpcMethod, error: code || String(lastError) };
  }

  const status = upstream.statusCode;
  if (
    hooks.translateStateless &&
    version === STATELESS_PROTOCOL_VERSION &&
    method === "POST" &&
    clientSessionId === undefined &&
    (status === 400 || status === 404) &&
    parsedBody !== undefined
  ) {
    // A refusal is either "I do not speak this revision" (translate from now on) or a 2026-07-28
    // server rejecting this one request (bad _meta, headers, unknown method): relayed as it is.
    const refusal = await readRefusal(upstream.body);
    if (refusesStateless(refusal)) {
      await hooks.translateStateless(parsedBody, res);
      return { status: res.statusCode, method: rpcMethod, translated: true };
    }
    if (ticket !== undefined) hooks.sessions?.settle(ticket, undefined);
    res.writeHead(status, { "content-type": upstream.headers["content-type"] ?? "application/json" });
    res.end(refusal);
    return { status, method: rpcMethod };
  }
  if (
    hooks.translateSessionful &&
    rpcMethod === "initialize" &&
    method === "POST" &&
    clientSessionId === undefined &&
    status === 400 &&
    parsedBody !== undefined
  ) {
    const refusal = await readRefusal(upstream.body);
    if (refusesSessions(refusal)) {
      if (ticket !== undefined) hooks.sessions?.settle(ticket, undefined);
      await hooks.translateSessionful(parsedBody, res);
      return { status: res.statusCode, method: rpcMethod, translated: true };
    }
    res.writeHead(400, { "content-type": upstream.headers["content-type"] ?? "application/json" });
    res.end(refusal);
    if (ticket !== undefined) hooks.sessions?.settle(ticket, undefined);
    return { status: 400, method: rpcMethod };
  }
  if (status === 401 || status === 403) {
    if (ticket !== undefined) hooks.sessions?.settle(ticket, undefined);
    // The upstream's challenge is about the gateway's credentials, not the client's.
    await upstream.body.dump().catch(() => {});
    sendJsonRpcError(
      res,
      502,
      rpcId,
      JsonRpcErrorCode.UpstreamUnavailable,
      "upstream rejected the gateway's credentials",
    );
    return { status: 502, method: rpcMethod, error: `upstream ${status}` };
  }

  const out: Record<string, string> = {};
  for (const name of FORWARD_RESPONSE_HEADERS) {
    const v = upstream.headers[name];
    if (typeof v === "string") out[name] = v;
  }
  const upstreamSid = upstream.headers[MCP_HEADERS.sessionId];
  let session: ProxyOutcome["session"];
  if (typeof upstreamSid === "string") {
    const gatewaySid = encodeSessionId(
      { endpoint: endpointIndex, upstreamSessionId: upstreamSid },
      options.binding,
    );
    out[MCP_HEADERS.sessionId] = gatewaySid;
    if (rpcMethod === "initialize" && status === 200) {
      session = {
        event: "start",
        id: gatewaySid,
        protocolVersion:
          typeof initializeParams?.protocolVersion === "string"
            ? initializeParams.protocolVersion.slice(0, 32)
            : undefined,
        clientInfo: initializeParams?.clientInfo,
      };
    }
  }
  if (method === "DELETE" && clientSessionId !== undefined && status >= 200 && status < 300) {
    session = { event: "end", id: clientSessionId };
    hooks.sessions?.end(clientSessionId);
  }
  if (ticket !== undefined)
    hooks.sessions?.settle(ticket, session?.event === "start" ? session.id : undefined);
  if (limitHeaders) Object.assign(out, limitHeaders);
  const isStream = out["content-type"]?.startsWith("text/event-stream") ?? false;
  if (hooks.keepTool && listed.size > 0 && status === 200) {
    return relayFilteredList(upstream.body, res, status, out, isStream, rpcId, listed, hooks.keepTool);
  }
  if (isStream) out["x-accel-buffering"] = "no";
  res.writeHead(status, out);
  // A GET stream may stay quiet for long: the client must see it open now. POST responses
  // carry their first event right away, so their headers ride with it (one write fewer).
  if (isStream && method === "GET") res.flushHeaders();
  const error = await relayBody(upstream.body, res);
  if (error) return { status, method: rpcMethod, error, ...(session ? { session } : {}) };
  return { status, method: rpcMethod, ...(session ? { session } : {}) };
}

/**
 * Streams an upstream body to the client with backpressure; a client that goes away ends the
 * upstream response (and so frees its connection). Resolves with an error message, if any.
 */
function relayBody(body: Readable, res: ServerResponse): Promise<string | undefined> {
  return new Promise((resolve) => {
    const onClientClose = () => {
      if (res.writableFinished) return;
      body.destroy();
      resolve("client closed");
    };
    res.once("close", onClientClose);
    body.once("error", (err) => {
      res.off("close", onClientClose);
      res.destroy();
      resolve(err.message);
    });
    // Chunks arriving in one tick (typically a whole small response and its end) leave in one
    // write: corked until the next tick. Backpressure as with pipe: pause until the client drains.
    let corked = false;
    const uncork = () => {
      corked = false;
      res.uncork();
    };
    body.on("data", (chunk: Buffer) => {
      if (!corked) {
        corked = true;
        res.cork();
        process.nextTick(uncork);
      }
      if (!res.write(chunk)) {
        body.pause();
        res.once("drain", () => body.resume());
      }
    });
    body.once("end", () => {
      res.off("close", onClientClose);
      res.end();
      resolve(undefined);
    });
  });
}

/**
 * Reads a response to list requests whole (JSON or SSE, one answer or a batch), drops from each
 * list answer the items policy hides from this caller, and writes it on. Only bodies with list
 * requests pay for buffering; everything else streams.
 */
async function relayFilteredList(
  body: AsyncIterable<Buffer> & { destroy(): void },
  res: ServerResponse,
  status: number,
  headers: Record<string, string>,
  isStream: boolean,
  rpcId: JsonRpcId,
  listed: ReadonlyMap<string | number, string>,
  keepTool: (target: string) => boolean,
): Promise<ProxyOutcome> {
  const method = listed.values().next().value as string;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > MAX_FILTERED_RESPONSE) {
      body.destroy();
      sendJsonRpcError(
        res,
        502,
        rpcId,
        JsonRpcErrorCode.UpstreamUnavailable,
        "upstream tools/list response too large to filter",
      );
      return { status: 502, method, error: "list too large to filter" };
    }
    chunks.push(chunk);
  }
  const filterOne = (message: unknown): unknown => {
    const m = message as { id?: unknown; result?: unknown };
    const listMethod = typeof m?.id === "string" || typeof m?.id === "number" ? listed.get(m.id) : undefined;
    if (listMethod === undefined || m.result === undefined) return message;
    return { ...m, result: filterListResult(listMethod, m.result, keepTool) };
  };
  const filter = (message: unknown): unknown =>
    Array.isArray(message) ? message.map(filterOne) : filterOne(message);
  const text = Buffer.concat(chunks, size).toString("utf8");
  let out: string;
  if (isStream) {
    // SSE: rewrite the data of the event that carries the response; leave other events as they are.
    out = text
      .split(/\r?\n\r?\n/)
      .map((event) => {
        const lines = event.split(/\r?\n/);
        const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, ""));
        if (data.length === 0) return event;
        let parsed: unknown;
        try {
          parsed = JSON.parse(data.join("\n"));
        } catch {
          return event;
        }
        const rewritten = JSON.stringify(filter(parsed));
        return [...lines.filter((l) => !l.startsWith("data:")), `data: ${rewritten}`].join("\n");
      })
      .join("\n\n");
  } else {
    try {
      out = JSON.stringify(filter(JSON.parse(text)));
    } catch {
      out = text;
    }
  }
  res.writeHead(status, { ...headers, "content-length": String(Buffer.byteLength(out)) });
  res.end(out);
  return { status, method };
}
