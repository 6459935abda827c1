import type { ServerResponse } from "node:http";
import { type JsonRpcId, jsonRpcError } from "@mcpgw/protocol";

/** Writes a JSON-RPC error as an HTTP response (MCP errors stay JSON-RPC, even at the HTTP layer). */
export function sendJsonRpcError(
  res: ServerResponse,
  status: number,
  id: JsonRpcId,
  code: number,
  message: string,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify(jsonRpcError(id, code, message));
  res.writeHead(status, {
    ...headers,
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
  });
  res.end(body);
}
