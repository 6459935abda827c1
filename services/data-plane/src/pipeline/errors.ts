import { type ServerResponse, STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import { type JsonRpcErrorBody, JsonRpcErrorCode, type JsonRpcId, jsonRpcError } from "@mcpgw/protocol";

/**
 * Every way the gateway itself refuses or fails an MCP exchange, and what each transport says
 * for it: the HTTP status, the JSON-RPC error code (inside MCP, errors stay JSON-RPC), the
 * WebSocket close code when the refusal ends a socket (4xxx: the application range, mirroring
 * the HTTP status), the RFC 9457 problem type for the operator REST endpoints, and whether a
 * Retry-After goes with it. One table, so a refusal reads the same on every transport.
 */
export const GATEWAY_ERRORS = {
  parse_error: { status: 400, rpc: JsonRpcErrorCode.ParseError, ws: 1007, title: "Bad Request" },
  bad_request: { status: 400, rpc: JsonRpcErrorCode.InvalidRequest, ws: 1008, title: "Bad Request" },
  invalid_params: { status: 400, rpc: JsonRpcErrorCode.InvalidParams, ws: 1008, title: "Bad Request" },
  unauthorized: { status: 401, rpc: JsonRpcErrorCode.Unauthorized, ws: 4401, title: "Unauthorized" },
  forbidden: { status: 403, rpc: JsonRpcErrorCode.Forbidden, ws: 4403, title: "Forbidden" },
  not_found: { status: 404, rpc: JsonRpcErrorCode.NotFound, ws: 4404, title: "Not Found" },
  method_not_allowed: {
    status: 405,
    rpc: JsonRpcErrorCode.InvalidRequest,
    ws: 1008,
    title: "Method Not Allowed",
  },
  unsupported_media_type: {
    status: 415,
    rpc: JsonRpcErrorCode.InvalidRequest,
    ws: 1003,
    title: "Unsupported Media Type",
  },
  upgrade_required: {
    status: 426,
    rpc: JsonRpcErrorCode.InvalidRequest,
    ws: 1002,
    title: "Upgrade Required",
  },
  too_large: { status: 413, rpc: JsonRpcErrorCode.RequestTooLarge, ws: 1009, title: "Payload Too Large" },
  rate_limited: { status: 429, rpc: JsonRpcErrorCode.RateLimited, ws: 4429, title: "Too Many Requests" },
  internal: { status: 500, rpc: JsonRpcErrorCode.InternalError, ws: 1011, title: "Internal Server Error" },
  not_implemented: { status: 501, rpc: JsonRpcErrorCode.InternalError, ws: 1011, title: "Not Implemented" },
  upstream_unavailable: {
    status: 502,
    rpc: JsonRpcErrorCode.UpstreamUnavailable,
    ws: 1011,
    title: "Bad Gateway",
  },
  unavailable: {
    status: 503,
    rpc: JsonRpcErrorCode.UpstreamUnavailable,
    ws: 1013,
    title: "Service Unavailable",
  },
  upstream_timeout: {
    status: 504,
    rpc: JsonRpcErrorCode.UpstreamTimeout,
    ws: 1011,
    title: "Gateway Timeout",
  },
} as const satisfies Record<string, { status: number; rpc: number; ws: number; title: string }>;

export type GatewayErrorKind = keyof typeof GATEWAY_ERRORS;

/** The problem+json `type` of a kind (a stable URN: it names the kind, it is not a page). */
export const problemType = (kind: GatewayErrorKind) => `urn:mcpgw:problem:${kind.replaceAll("_", "-")}`;

/**
 * A refusal or failure of the gateway's own, safe to show the client as it is: `message` is
 * written for the client; internal detail belongs in the log, never here.
 */
export class GatewayError extends Error {
  override name = "GatewayError";
  constructor(
    readonly kind: GatewayErrorKind,
    message: string,
    readonly options: {
      /** JSON-RPC `error.data` (and problem+json extension members). */
      data?: Record<string, unknown> | undefined;
      /** Seconds; sent as Retry-After (and `retry_after` in the data). */
      retryAfterS?: number | undefined;
      /** More response headers (WWW-Authenticate, RateLimit, Allow). */
      headers?: Record<string, string> | undefined;
      /** The JSON-RPC code, where a kind's default is not the precise one (e.g. -32022). */
      rpcCode?: number | undefined;
    } = {},
  ) {
    super(message);
  }

  get status(): number {
    return GATEWAY_ERRORS[this.kind].status;
  }

  get rpcCode(): number {
    return this.options.rpcCode ?? GATEWAY_ERRORS[this.kind].rpc;
  }

  get wsCode(): number {
    return GATEWAY_ERRORS[this.kind].ws;
  }

  /** Response headers: Retry-After where the kind has a wait, then the error's own. */
  headers(): Record<string, string> {
    const out: Record<string, string> = { ...this.options.headers };
    if (this.options.retryAfterS !== undefined) out["retry-after"] = String(this.options.retryAfterS);
    return out;
  }

  /** The JSON-RPC error response for request `id`. */
  toJsonRpc(id: JsonRpcId): JsonRpcErrorBody {
    return jsonRpcError(id, this.rpcCode, this.message, this.options.data);
  }
}

/** Anything thrown, as what the client may see: a gateway error as it is, anything else as "internal". */
export function asGatewayError(err: unknown): GatewayError {
  return err instanceof GatewayError ? err : new GatewayError("internal", "internal gateway error");
}

/** Writes an error as an HTTP response carrying a JSON-RPC body (the MCP transports). */
export function sendGatewayError(
  res: ServerResponse,
  err: GatewayError,
  id: JsonRpcId = null,
  status = err.status,
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify(err.toJsonRpc(id));
  res.writeHead(status, {
    ...err.headers(),
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
  });
  res.end(body);
}

/** Writes an error as RFC 9457 problem+json (the operator REST endpoints). */
export function sendProblem(
  res: ServerResponse,
  err: GatewayError,
  instance: string,
  requestId?: string,
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify(problemBody(err, instance, requestId));
  res.writeHead(err.status, {
    ...err.headers(),
    "content-type": "application/problem+json",
    "content-length": Buffer.byteLength(body),
  });
  res.end(body);
}

/** The problem+json body of an error (`instance`: the request path, when known). */
function problemBody(err: GatewayError, instance: string | undefined, requestId: string | undefined) {
  return {
    type: problemType(err.kind),
    title: GATEWAY_ERRORS[err.kind].title,
    status: err.status,
    detail: err.message,
    ...(instance ? { instance } : {}),
    ...(requestId ? { request_id: requestId } : {}),
    ...err.options.data,
    ...(err.options.retryAfterS !== undefined ? { retry_after: err.options.retryAfterS } : {}),
  };
}

/** An error as an RFC 9457 problem+json web Response (Hono routes). */
export function problemResponse(err: GatewayError, requestId?: string, instance?: string): Response {
  return new Response(JSON.stringify(problemBody(err, instance, requestId)), {
    status: err.status,
    headers: { ...err.headers(), "content-type": "application/problem+json" },
  });
}

/** A WebSocket close reason is at most 123 bytes; cut on a character boundary. */
export function closeReason(message: string): string {
  if (Buffer.byteLength(message) <= 123) return message;
  let out = "";
  let bytes = 0;
  for (const ch of message) {
    const size = Buffer.byteLength(ch);
    if (bytes + size > 123) break;
    out += ch;
    bytes += size;
  }
  return out;
}

/** Answers a WebSocket upgrade request with an HTTP error (JSON-RPC body) and closes the socket. */
export function refuseUpgrade(socket: Duplex, requestId: string | undefined, err: GatewayError): void {
  const body = JSON.stringify(err.toJsonRpc(null));
  const headers: Record<string, string> = {
    ...err.headers(),
    "content-type": "application/json",
    "content-length": String(Buffer.byteLength(body)),
    connection: "close",
  };
  if (requestId) headers["x-request-id"] = requestId;
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}`);
  socket.end(
    `HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? ""}\r\n${lines.join("\r\n")}\r\n\r\n${body}`,
  );
}
