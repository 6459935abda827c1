import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { describe, expect, it } from "vitest";
import { SessionEventStore } from "./event-store.ts";

const note = (n: number, pad = 0): JSONRPCMessage =>
  ({
    jsonrpc: "2.0",
    method: "notifications/message",
    params: { n, pad: "x".repeat(pad) },
  }) as JSONRPCMessage;

async function replay(store: SessionEventStore, after: string) {
  const sent: number[] = [];
  const stream = await store.replayEventsAfter(after, {
    send: async (_id, m) => {
      sent.push((m as unknown as { params: { n: number } }).params.n);
    },
  });
  return { stream, sent };
}

describe("SessionEventStore", () => {
  it("replays the events of one stream after the given one", async () => {
    const store = new SessionEventStore();
    const a1 = await store.storeEvent("a", note(1));
    await store.storeEvent("b", note(2));
    await store.storeEvent("a", note(3));
    await store.storeEvent("a", note(4));
    expect(await replay(store, a1)).toEqual({ stream: "a", sent: [3, 4] });
  });

  it("keeps a bounded number of events; resuming from an evicted one gives the stream back empty", async () => {
    const store = new SessionEventStore();
    const first = await store.storeEvent("s", note(0));
    for (let i = 1; i <= 600; i++) await store.storeEvent("s", note(i));
    expect(await replay(store, first)).toEqual({ stream: "s", sent: [] });
    expect(await store.getStreamIdForEventId(first)).toBe("s");
  });

  it("keeps at most 2 MiB of events", async () => {
    const store = new SessionEventStore();
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push(await store.storeEvent("s", note(i, 400 * 1024)));
    // 10 × 400 KiB: only the newest five fit (events 5 to 9).
    expect((await replay(store, ids[5]!)).sent).toEqual([6, 7, 8, 9]);
    expect((await replay(store, ids[4]!)).sent).toEqual([]);
  });

  it("replays every kept event of a stream from its start, without priming events", async () => {
    const store = new SessionEventStore();
    await store.storeEvent("_GET_stream", note(1));
    await store.storeEvent("post", note(2));
    await store.storeEvent("_GET_stream", {} as JSONRPCMessage);
    await store.storeEvent("_GET_stream", note(3));
    expect(await replay(store, SessionEventStore.fromStart("_GET_stream"))).toEqual({
      stream: "_GET_stream",
      sent: [1, 3],
    });
  });
});
