import type { IncomingMessage } from "node:http";
import type { EventStore } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";

/** The SDK's id for a Streamable HTTP session's standalone (GET) stream. */
export const STANDALONE_STREAM_ID = "_GET_stream";

/** Events one message-level session keeps for resumption, and the bytes they may take. */
const MAX_EVENTS = 512;
const MAX_BYTES = 2 * 1024 * 1024;

/**
 * The SSE events of one message-level Streamable HTTP session, kept so that a client whose
 * stream broke can resume it with `Last-Event-ID` (the gateway offers resumption even when the
 * upstream, a stdio process or a legacy SSE server, has none). Bounded per session: the oldest
 * events go first, and a client resuming from an event no longer kept gets its stream back with
 * nothing replayed.
 */
export class SessionEventStore implements EventStore {
  private readonly events: Array<{ id: string; streamId: string; message: JSONRPCMessage; bytes: number }> =
    [];
  private bytes = 0;
  private seq = 0;

  async storeEvent(streamId: string, message: JSONRPCMessage): Promise<string> {
    const id = `${streamId}.${++this.seq}`;
    const bytes = JSON.stringify(message).length;
    this.events.push({ id, streamId, message, bytes });
    this.bytes += bytes;
    while (this.events.length > MAX_EVENTS || (this.bytes > MAX_BYTES && this.events.length > 1))
      this.bytes -= this.events.shift()!.bytes;
    return id;
  }

  /** The stream an event id names (`<stream>.<seq>`), whether or not the event is still kept. */
  async getStreamIdForEventId(eventId: string): Promise<string | undefined> {
    const dot = eventId.lastIndexOf(".");
    return dot > 0 ? eventId.slice(0, dot) : undefined;
  }

  /** An event id before every event of `streamId`: resuming from it replays all that is kept. */
  static fromStart(streamId: string): string {
    return `${streamId}.0`;
  }

  async replayEventsAfter(
    lastEventId: string,
    { send }: { send: (eventId: string, message: JSONRPCMessage) => Promise<void> },
  ): Promise<string> {
    const streamId = (await this.getStreamIdForEventId(lastEventId)) ?? "";
    const fromStart = lastEventId === SessionEventStore.fromStart(streamId);
    const at = fromStart ? -1 : this.events.findIndex((e) => e.id === lastEventId);
    // Evicted: the client resumes its stream with nothing replayed (what it missed is lost).
    if (at < 0 && !fromStart) return streamId;
    // Priming events (empty data) only mark a position; they are not messages to replay.
    for (const e of this.events.slice(at + 1))
      if (e.streamId === streamId && Object.keys(e.message).length > 0) await send(e.id, e.message);
    return streamId;
  }
}

/** Sets `Last-Event-ID` on a request before the SDK reads it (from `rawHeaders`, or `headers`). */
export function setLastEventId(req: IncomingMessage, eventId: string): void {
  req.headers["last-event-id"] = eventId;
  req.rawHeaders.push("Last-Event-ID", eventId);
}
