import type { ServerResponse } from "node:http";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import type { WebSocket } from "ws";

/**
 * Most bytes queued for one client stream (an SSE response or a WebSocket) before its client
 * counts as too slow and is dropped: a client that stops reading must not grow this process's
 * memory without bound. Every message-level client transport uses this one limit.
 */
export const MAX_CLIENT_BACKLOG_BYTES = 8 * 1024 * 1024;

/** Told once when a client is dropped, with the bytes it left unread. */
export type OnSlowClient = (bufferedBytes: number) => void;

/**
 * Bounds what `res` buffers for a client that does not read: once a write leaves more than
 * `limit` bytes unsent, the response is destroyed (the client's connection closes) and `onDrop`
 * is told. Call it before handing `res` to an SDK server transport.
 *
 * Every write reports itself taken (returns `true`): the SDK's legacy SSE transport ignores
 * backpressure anyway, and the Streamable HTTP transport's pump (`@hono/node-server`) would
 * otherwise park on 'drain' and leave the backlog in the SDK's web `ReadableStream`, whose queue
 * has no bound and cannot be measured. This way the backlog lands in `res`, where
 * `writableLength` (response plus socket buffers) measures it at the cost of one comparison.
 */
export function boundResponseBacklog(
  res: ServerResponse,
  onDrop: OnSlowClient,
  limit = MAX_CLIENT_BACKLOG_BYTES,
): void {
  const write = res.write as (this: ServerResponse, ...args: unknown[]) => boolean;
  res.write = function boundedWrite(this: ServerResponse, ...args: unknown[]): boolean {
    write.apply(this, args);
    const buffered = this.writableLength;
    if (buffered > limit && !this.destroyed) {
      this.destroy();
      onDrop(buffered);
    }
    return true;
  } as ServerResponse["write"];
}

/**
 * Sends to a WebSocket client without letting a slow reader grow this process's memory: past
 * MAX_CLIENT_BACKLOG_BYTES unsent bytes the connection is closed (1013, try again later), its
 * session ends and `onDrop` is told (once: the socket is no longer open after that).
 */
export function sendBounded(ws: WebSocket, message: JSONRPCMessage, onDrop: OnSlowClient): void {
  if (ws.readyState !== ws.OPEN) return;
  const buffered = ws.bufferedAmount;
  if (buffered > MAX_CLIENT_BACKLOG_BYTES) {
    ws.close(1013, "client too slow: too many unread messages");
    // A peer that does not read will not read the close frame either.
    setTimeout(() => ws.terminate(), 1000).unref();
    onDrop(buffered);
    return;
  }
  ws.send(JSON.stringify(message));
}
