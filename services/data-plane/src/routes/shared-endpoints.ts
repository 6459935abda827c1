import type { IncomingMessage, ServerResponse } from "node:http";
import type { DataPlaneContext } from "../pipeline/context.ts";
import { GatewayError, sendGatewayError } from "../pipeline/errors.ts";
import type { SessionContext } from "../transports/message-sessions.ts";

/*
 * Endpoints a server and a namespace serve the same way once their target is resolved: the
 * legacy SSE message endpoint and JSON-RPC introspection.
 */

/** A JSON body with its length. */
export function sendJsonBody(res: ServerResponse, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  res.end(body);
}

/** `POST …/message?sessionId=…[&replica=…]`: one message of a legacy SSE session. */
export async function sseMessage(
  { deps }: DataPlaneContext,
  req: IncomingMessage,
  res: ServerResponse,
  ctx: SessionContext,
  query: URLSearchParams,
): Promise<void> {
  const sessionId = query.get("sessionId");
  if (req.method !== "POST" || !sessionId) {
    req.resume();
    sendGatewayError(res, new GatewayError("bad_request", "POST with ?sessionId= from the endpoint event"));
    return;
  }
  await deps.sessions.handleSseMessage(req, res, ctx, sessionId, query.get("replica") ?? undefined);
}

/** `GET …/rpc/introspection`: what the JSON-RPC endpoint of the target serves. */
export async function rpcIntrospection(
  { deps }: DataPlaneContext,
  req: IncomingMessage,
  res: ServerResponse,
  ctx: SessionContext,
): Promise<void> {
  req.resume();
  sendJsonBody(res, await deps.rpc.introspect(ctx));
}
