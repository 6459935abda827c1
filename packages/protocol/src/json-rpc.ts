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

export interface JsonRpcMessageShape {
  jsonrpc: "2.0";
  id?: JsonRpcId;
  method?: string;
  params?: unknown;
  result?: unknown;
  error?: unknown;
}

/** Checks the envelope of one JSON-RPC message (request, notification or response). */
export function isJsonRpcMessage(value: unknown): value is JsonRpcMessageShape {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const m = value as Record<string, unknown>;
  if (m.jsonrpc !== "2.0") return false;
  if ("method" in m) return typeof m.method === "string";
  return "id" in m && ("result" in m || "error" in m);
}
