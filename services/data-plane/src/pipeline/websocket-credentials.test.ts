import { EventEmitter } from "node:events";
import { describe, expect, it } from "vitest";
import type { WebSocket } from "ws";
import {
  FirstMessageWindow,
  firstMessageCredential,
  subprotocolCredential,
  withBearer,
} from "./websocket-credentials.ts";

/** Just enough of a ws socket: message and close events. */
const fakeSocket = () => new EventEmitter() as unknown as WebSocket & EventEmitter;
const frame = (value: unknown) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value));

describe("WebSocket credentials without headers", () => {
  it("reads a credential offered as a subprotocol next to mcp, in any position", () => {
    expect(subprotocolCredential("mcp, mcpgw.bearer.abc.def")).toBe("abc.def");
    expect(subprotocolCredential("mcpgw.bearer.k1,mcp")).toBe("k1");
    expect(subprotocolCredential(["mcp", "mcpgw.bearer.x"])).toBe("x");
    expect(subprotocolCredential("mcp")).toBeUndefined();
    expect(subprotocolCredential("mcp, mcpgw.bearer.")).toBeUndefined();
    expect(subprotocolCredential(undefined)).toBeUndefined();
  });

  it("a credential becomes the bearer, replacing an X-API-Key", () => {
    const headers: Record<string, string> = { "x-api-key": "old" };
    withBearer(headers, "mcpgw_new");
    expect(headers).toEqual({ authorization: "Bearer mcpgw_new" });
  });

  it("bounds the sockets waiting for their first message, per client and in all", () => {
    const window = new FirstMessageWindow();
    const releases = Array.from({ length: 32 }, () => window.admit("10.0.0.1"));
    expect(releases.every(Boolean)).toBe(true);
    expect(window.admit("10.0.0.1")).toBeUndefined();
    expect(window.admit("10.0.0.2")).toBeDefined();
    releases[0]!();
    releases[0]!(); // twice is once
    expect(window.admit("10.0.0.1")).toBeDefined();
    expect(window.admit("10.0.0.1")).toBeUndefined();
  });

  it("takes the token of an authenticate first message and keeps the frames behind it", async () => {
    const ws = fakeSocket();
    const pending = firstMessageCredential(ws, 1000);
    ws.emit(
      "message",
      frame({ jsonrpc: "2.0", id: 7, method: "mcpgw/authenticate", params: { token: "Bearer t1" } }),
      false,
    );
    ws.emit("message", frame({ jsonrpc: "2.0", id: 1, method: "initialize" }), false);
    const first = await pending;
    ws.emit("message", frame({ jsonrpc: "2.0", id: 2, method: "tools/list" }), false);
    expect(first).toMatchObject({ ok: true, token: "t1", id: 7 });
    if (!first.ok) return;
    expect(first.later.map(([d]) => JSON.parse(String(d)).id)).toEqual([1, 2]);
    first.stop();
    ws.emit("message", frame({ jsonrpc: "2.0", id: 3, method: "ping" }), false);
    expect(first.later).toHaveLength(2);
  });

  it("refuses anything else first, a close, and silence", async () => {
    for (const bad of [
      "{nope",
      { jsonrpc: "2.0", id: 1, method: "initialize" },
      { jsonrpc: "2.0", method: "mcpgw/authenticate" },
    ]) {
      const ws = fakeSocket();
      const pending = firstMessageCredential(ws, 1000);
      ws.emit("message", frame(bad), false);
      expect((await pending).ok).toBe(false);
    }
    const closed = fakeSocket();
    const pendingClose = firstMessageCredential(closed, 1000);
    closed.emit("close");
    expect(await pendingClose).toEqual({ ok: false, reason: "closed before authenticating" });
    const silent = await firstMessageCredential(fakeSocket(), 50);
    expect(silent.ok).toBe(false);
    if (!silent.ok) expect(silent.reason).toContain("no credential within");
  });
});
