import type { IncomingHttpHeaders, IncomingMessage } from "node:http";
import {
  DEFAULT_PROTOCOL_VERSION,
  isJsonRpcMessage,
  isSupportedProtocolVersion,
  JsonRpcErrorCode,
  type JsonRpcId,
  MCP_HEADERS,
  STATELESS_PROTOCOL_VERSION,
  SUPPORTED_PROTOCOL_VERSIONS,
} from "@mcpgw/protocol";
import { GatewayError } from "../pipeline/errors.ts";
import { isFilteredList, policyTarget } from "../policy-targets.ts";
import { batchTooLargeError, MAX_BATCH_MESSAGES } from "./limits.ts";

/*
 * The parse stage of the Streamable HTTP relay: one client request read (size-limited), checked
 * to be JSON-RPC of a supported revision, and described for the stages after it. Nothing here
 * writes to the client: a request that cannot go on comes back as a `Refusal`.
 */

/** What the outcome of one relayed request says (metrics, logs, the session registry). */
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

/** A request that goes no further: the error the client gets, and the outcome to record. */
export interface Refusal {
  error: GatewayError;
  /** The JSON-RPC id the error answers (null before the body is read). */
  id: JsonRpcId;
  /** HTTP status, where it is not the error kind's (a denied single message answers 200). */
  status?: number | undefined;
  outcome: ProxyOutcome;
}

export const refusal = (
  error: GatewayError,
  id: JsonRpcId,
  method: string | undefined,
  options: { status?: number; note?: string; outcomeStatus?: number } = {},
): Refusal => ({
  error,
  id,
  status: options.status,
  outcome: {
    status: options.outcomeStatus ?? options.status ?? error.status,
    method,
    ...(options.note ? { error: options.note } : {}),
  },
});

/** One client request as the relay's later stages need it. */
export interface StreamableRequest {
  method: "GET" | "POST" | "DELETE";
  /** The MCP-Protocol-Version the client speaks (the default revision when it sent none). */
  version: string;
  clientSessionId: string | undefined;
  /** The body as it arrived (forwarded as the same bytes) and parsed. */
  body?: Buffer | undefined;
  parsed?: unknown;
  /** The first message's method and id (a batch is answered under its first). */
  rpcMethod?: string | undefined;
  rpcId: JsonRpcId;
  /** The tool of a `tools/call`. */
  toolName?: string | undefined;
  initializeParams?: { protocolVersion?: string; clientInfo?: Record<string, unknown> } | undefined;
  /** Request id → list method, for the answers policy filters. */
  listed: Map<string | number, string>;
}

export type Authorize = (target: string) => { allowed: boolean; reason: string; rule: unknown };

export function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

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

/** MCP §protocol-version-header: an unsupported version is a 400 naming the supported ones. */
function unsupportedVersion(version: string, id: JsonRpcId): Refusal {
  const requested = version.slice(0, 40);
  return refusal(
    new GatewayError(
      "bad_request",
      `unsupported MCP-Protocol-Version ${JSON.stringify(requested)}; supported: ${SUPPORTED_PROTOCOL_VERSIONS.join(", ")}`,
      {
        rpcCode: JsonRpcErrorCode.UnsupportedProtocolVersion,
        data: { supported: SUPPORTED_PROTOCOL_VERSIONS, requested },
      },
    ),
    id,
    undefined,
  );
}

/**
 * Reads and checks one request. `authorize` decides each message's tool, prompt or resource
 * against the current snapshot: a denial is answered here, before anything reaches the upstream.
 */
export async function parseStreamableRequest(
  req: IncomingMessage,
  maxBodyBytes: number,
  authorize?: Authorize,
): Promise<{ ok: true; request: StreamableRequest } | { ok: false; refusal: Refusal }> {
  const method = req.method ?? "GET";
  if (method !== "POST" && method !== "GET" && method !== "DELETE") {
    req.resume();
    const error = new GatewayError("method_not_allowed", `method ${method} not allowed`, {
      headers: { allow: "GET, POST, DELETE" },
    });
    return { ok: false, refusal: refusal(error, null, undefined) };
  }
  const version = header(req.headers, MCP_HEADERS.protocolVersion) ?? DEFAULT_PROTOCOL_VERSION;
  const request: StreamableRequest = {
    method,
    version,
    clientSessionId: header(req.headers, MCP_HEADERS.sessionId),
    rpcId: null,
    listed: new Map(),
  };
  if (method !== "POST") {
    if (isSupportedProtocolVersion(version)) return { ok: true, request };
    req.resume();
    return { ok: false, refusal: unsupportedVersion(version, null) };
  }
  const refused = await readMessages(req, request, maxBodyBytes, authorize);
  return refused ? { ok: false, refusal: refused } : { ok: true, request };
}

/** The body of a POST: read, parsed, checked and described into `request`. */
async function readMessages(
  req: IncomingMessage,
  request: StreamableRequest,
  maxBodyBytes: number,
  authorize: Authorize | undefined,
): Promise<Refusal | undefined> {
  const contentType = header(req.headers, "content-type") ?? "";
  if (!contentType.toLowerCase().startsWith("application/json")) {
    req.resume();
    const error = new GatewayError("unsupported_media_type", "Content-Type must be application/json");
    return refusal(error, null, undefined);
  }
  try {
    request.body = await readBody(req, maxBodyBytes);
  } catch (err) {
    if (!(err instanceof BodyTooLarge)) throw err;
    // The rest of the body is not read: the connection closes after the answer.
    const error = new GatewayError("too_large", `request body exceeds ${maxBodyBytes} bytes`, {
      headers: { connection: "close" },
    });
    return refusal(error, null, undefined);
  }
  try {
    request.parsed = JSON.parse(request.body.toString("utf8"));
  } catch {
    return refusal(
      new GatewayError("parse_error", "Parse error: request body is not valid JSON"),
      null,
      undefined,
    );
  }
  const messages = Array.isArray(request.parsed) ? request.parsed : [request.parsed];
  if (messages.length > MAX_BATCH_MESSAGES) {
    return refusal(batchTooLargeError(messages.length), null, undefined);
  }
  if (messages.length === 0 || !messages.every(isJsonRpcMessage)) {
    const error = new GatewayError("bad_request", "Invalid Request: body must be a JSON-RPC 2.0 message");
    return refusal(error, null, undefined);
  }
  const first = messages[0]!;
  request.rpcMethod = first.method;
  request.rpcId = first.id ?? null;
  if (!isSupportedProtocolVersion(request.version)) return unsupportedVersion(request.version, request.rpcId);
  if (first.method === "initialize")
    request.initializeParams = first.params as StreamableRequest["initializeParams"];
  if (first.method === "tools/call") {
    const name = (first.params as { name?: unknown } | undefined)?.name;
    if (typeof name === "string") request.toolName = name;
  }
  // Every list request of the body, wherever it sits in a batch, has its answer filtered.
  for (const m of messages)
    if (m.id !== undefined && m.id !== null && isFilteredList(m.method)) request.listed.set(m.id, m.method!);
  if (authorize) {
    for (const m of messages) {
      const target = policyTarget(m.method, m.params as Record<string, unknown> | undefined);
      if (target === undefined) continue;
      const decision = authorize(target);
      if (decision.allowed) continue;
      // A JSON-RPC error the client's SDK surfaces as such: denied by policy, not "unknown tool".
      const error = new GatewayError("forbidden", decision.reason, { data: { policy: decision.rule } });
      return refusal(error, m.id ?? null, m.method, {
        status: messages.length === 1 ? 200 : 403,
        outcomeStatus: 403,
        note: "denied by policy",
      });
    }
  }
  // 2026-07-28: the routing headers must agree with the body they describe.
  const headerMethod = header(req.headers, MCP_HEADERS.method);
  if (
    request.version === STATELESS_PROTOCOL_VERSION &&
    headerMethod !== undefined &&
    headerMethod !== request.rpcMethod
  ) {
    const error = new GatewayError("bad_request", "Mcp-Method header does not match the request body", {
      rpcCode: JsonRpcErrorCode.HeaderMismatch,
    });
    return refusal(error, request.rpcId, request.rpcMethod);
  }
  return undefined;
}
