/** JSON-RPC 2.0 error codes, plus the implementation-defined range the gateway uses. */
export const JsonRpcErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  /** MCP 2026-07-28: routing headers disagree with the body, or are missing. */
  HeaderMismatch: -32020,
  /** MCP 2026-07-28: a capability the request needs was not declared by the client. */
  MissingClientCapability: -32021,
  /** MCP 2026-07-28: the protocol version is not one the server speaks. */
  UnsupportedProtocolVersion: -32022,
  /** Gateway-defined (-32000..-32099 is reserved for implementation errors). */
  Unauthorized: -32001,
  Forbidden: -32003,
  NotFound: -32004,
  RequestTooLarge: -32013,
  RateLimited: -32029,
  UpstreamUnavailable: -32050,
  UpstreamTimeout: -32054,
} as const;

export type JsonRpcId = string | number | null;

export interface JsonRpcErrorBody {
  jsonrpc: "2.0";
  id: JsonRpcId;
  error: { code: number; message: string; data?: unknown };
}

/** Builds a JSON-RPC error response object. */
export function jsonRpcError(id: JsonRpcId, code: number, message: string, data?: unknown): JsonRpcErrorBody {
  const error: JsonRpcErrorBody["error"] = { code, message };
  if (data !== undefined) error.data = data;
  return { jsonrpc: "2.0", id, error };
}

/** A request: a method and an id the answer will carry. */
export interface JsonRpcRequest {
  jsonrpc: "2.0";
  id: JsonRpcId;
  method: string;
  params?: Record<string, unknown>;
}

/** A notification: a method and no id; nothing answers it. */
export interface JsonRpcNotification {
  jsonrpc: "2.0";
  method: string;
  params?: Record<string, unknown>;
}

/** A successful answer to a request. */
export interface JsonRpcResult {
  jsonrpc: "2.0";
  id: JsonRpcId;
  result: Record<string, unknown>;
}

export type JsonRpcResponse = JsonRpcResult | JsonRpcErrorBody;

/** Every JSON-RPC 2.0 message, by kind. */
export type JsonRpcMessage = JsonRpcRequest | JsonRpcNotification | JsonRpcResponse;

/**
 * A message as relays carry it: its fields readable before it is narrowed, anything else kept
 * as it came (relays forward what they do not understand unchanged). Narrow with the guards.
 */
export type RelayedMessage = Record<string, unknown> & {
  jsonrpc?: string;
  id?: JsonRpcId;
  method?: string;
  params?: Record<string, unknown>;
  result?: Record<string, unknown>;
  error?: unknown;
};

/** What the guards read: any message type (ours, the SDK's) has these fields or lacks them. */
type Envelope = { id?: unknown; method?: unknown };

/** Checks the envelope of one JSON-RPC message (request, notification or response). */
export function isJsonRpcMessage(value: unknown): value is RelayedMessage {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const m = value as Record<string, unknown>;
  if (m.jsonrpc !== "2.0") return false;
  if ("method" in m) return typeof m.method === "string";
  return "id" in m && ("result" in m || "error" in m);
}

/**
 * A request: a method and an id. A `null` id counts (JSON-RPC discourages it, but a relay must
 * still apply the guards of a request to it, and answer it).
 */
export function isRequest<M extends Envelope>(m: M): m is M & JsonRpcRequest {
  return typeof m.method === "string" && m.id !== undefined;
}

/** A notification: a method and no id. */
export function isNotification<M extends Envelope>(m: M): m is M & JsonRpcNotification {
  return typeof m.method === "string" && m.id === undefined;
}

/** A response (result or error) to the request with its id; `isJsonRpcMessage` checks the rest. */
export function isResponse<M extends Envelope>(m: M): m is M & JsonRpcResponse {
  return m.method === undefined && m.id !== undefined;
}

/** An error response. */
export function isErrorResponse<M extends Envelope>(m: M): m is M & JsonRpcErrorBody {
  return m.method === undefined && "error" in m;
}
