import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { Authenticator } from "../auth/authenticator.ts";
import type { DataPlaneContext } from "../pipeline/context.ts";
import {
  asGatewayError,
  closeReason,
  GatewayError,
  refuseUpgrade,
  sendGatewayError,
} from "../pipeline/errors.ts";
import { requestIdOf } from "../pipeline/observe.ts";
import type { Resolution } from "../pipeline/resolve.ts";
import {
  firstMessageCredential,
  subprotocolCredential,
  withBearer,
} from "../pipeline/websocket-credentials.ts";
import { clientIp } from "../rate-limit/client-ip.ts";
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
 * one message-level session per socket. A client that cannot set headers presents its
 * credential as a subprotocol or in its first message (pipeline/websocket-credentials.ts).
 * `settled` learns the status (101 when upgraded).
 */
export async function upgradeWebSocket(
  cx: DataPlaneContext,
  resolve: () => Promise<Resolution>,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  settled: (status: number) => void = () => {},
  logFields: Record<string, string | undefined> = {},
): Promise<void> {
  const { deps, wss } = cx;
  try {
    const offered = subprotocolCredential(req.headers["sec-websocket-protocol"]);
    if (offered && !Authenticator.hasCredential(req.headers)) withBearer(req.headers, offered);
    const release = Authenticator.hasCredential(req.headers)
      ? undefined
      : cx.firstMessages.admit(clientIp(req, deps.trustedProxies));
    if (release) return upgradeThenAuthenticate(cx, resolve, req, socket, head, settled, release);
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

/**
 * An upgrade without a credential: the socket opens, and its first message must carry one.
 * Then the request is resolved with it as if it had come as a header; the frames the client
 * sent meanwhile are read by the session in order.
 */
function upgradeThenAuthenticate(
  cx: DataPlaneContext,
  resolve: () => Promise<Resolution>,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  settled: (status: number) => void,
  release: () => void,
): void {
  const { deps, wss, authFailures } = cx;
  wss.handleUpgrade(req, socket, head, (ws) => {
    settled(101);
    void (async () => {
      const first = await firstMessageCredential(ws).finally(release);
      if (!first.ok) {
        authFailures.inc({ reason: "websocket: no credential in the first message" });
        if (ws.readyState === ws.OPEN) ws.close(4401, closeReason(`Unauthorized: ${first.reason}`));
        return;
      }
      withBearer(req.headers, first.token);
      const r = await resolve();
      if (!r.ok) {
        first.stop();
        ws.close(r.error.wsCode, closeReason(r.error.message));
        return;
      }
      if (first.id !== undefined) ws.send(JSON.stringify({ jsonrpc: "2.0", id: first.id, result: {} }));
      // The session's listener goes on first, then the frames that came meanwhile, in order.
      const session = deps.sessions.handleWebSocket(ws, r.ctx);
      first.stop();
      for (const [data, isBinary] of first.later) ws.emit("message", data, isBinary);
      await session;
    })().catch((err) => {
      deps.logger.error({ err }, "websocket authentication failed");
      if (ws.readyState === ws.OPEN) ws.close(1011, "internal gateway error");
    });
  });
}
