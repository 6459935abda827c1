import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import type { DataPlaneContext } from "../pipeline/context.ts";
import { asGatewayError, GatewayError, refuseUpgrade, sendGatewayError } from "../pipeline/errors.ts";
import { requestIdOf } from "../pipeline/observe.ts";
import type { Resolution } from "../pipeline/resolve.ts";
import type { SessionContext } from "../transports/message-sessions.ts";

/*
 * Endpoints a server and a namespace serve the same way once their target is resolved: the
 * legacy SSE message endpoint, JSON-RPC introspection and WebSocket upgrades.
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

/**
 * A WebSocket upgrade: the request is resolved (authenticated, its target authorized) like any
 * other, refused with an HTTP answer on the socket when it does not pass, otherwise upgraded to
 * one message-level session per socket. `settled` learns the status (101 when upgraded).
 */
export async function upgradeWebSocket(
  { deps, wss }: DataPlaneContext,
  resolve: () => Promise<Resolution>,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  settled: (status: number) => void = () => {},
  logFields: Record<string, string | undefined> = {},
): Promise<void> {
  try {
    const r = await resolve();
    if (!r.ok) {
      settled(r.error.status);
      return refuseUpgrade(socket, requestIdOf(req), r.error);
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      settled(101);
      void deps.sessions.handleWebSocket(ws, r.ctx);
    });
  } catch (err) {
    deps.logger.error({ err, ...logFields }, "websocket upgrade failed");
    settled(500);
    refuseUpgrade(socket, requestIdOf(req), asGatewayError(err));
  }
}
