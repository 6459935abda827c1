import { readFileSync } from "node:fs";
import { type IncomingMessage, request } from "node:http";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import {
  type Api,
  eventually,
  everythingEntry,
  initializeRequest,
  registerStdioServer,
  type Stack,
  startStack,
} from "../../../packages/testing/src/index.ts";

/** The data plane's per-client backlog limit (MAX_CLIENT_BACKLOG_BYTES). */
const BACKLOG_LIMIT = 8 * 1024 * 1024;
/** MCPGW_MAX_BODY_BYTES of this stack; WebSocket frames are capped at the same size. */
const MAX_BODY = 2 * 1024 * 1024;
const MiB = 1024 * 1024;

/** A client stream read with raw HTTP, so the test decides when (and whether) it is read. */
interface RawStream {
  res: IncomingMessage;
  /** The first chunk of the body. */
  first: string;
  /** Bytes of the body received so far. */
  received: () => number;
  /** Resolves when the stream is over (ended by the server or cut). */
  closed: Promise<void>;
  /** The client stops reading: nothing more leaves the kernel's socket buffers. */
  stopReading: () => void;
  /** The client reads (and discards) again. */
  resumeReading: () => void;
}

describe("slow readers: a client that stops reading is dropped, never buffered for without bound", () => {
  let stack: Stack;
  let api: Api;
  let serverId: string;

  const dp = () => stack.dataPlanes[0]!;
  const auth = () => ({ authorization: `Bearer ${api.token}` });

  /** Resident memory of the data-plane process, in bytes. */
  const rss = () =>
    1024 *
    Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${dp().proc.child.pid}/status`, "utf8"))?.[1] ?? 0);

  async function slowDisconnects(transport: string): Promise<number> {
    const text = await (await fetch(`${dp().url}/metrics`)).text();
    const line = new RegExp(
      `^mcpgw_slow_client_disconnects_total\\{[^}]*transport="${transport}"[^}]*\\} (\\d+)`,
      "m",
    ).exec(text);
    return Number(line?.[1] ?? 0);
  }

  function openStream(path: string, headers: Record<string, string>): Promise<RawStream> {
    return new Promise((resolve, reject) => {
      const req = request(`${dp().url}${path}`, { method: "GET", headers, agent: false }, (res) => {
        let received = 0;
        const closed = new Promise<void>((done) => res.once("close", () => done()));
        res.once("error", () => {});
        res.once("data", (chunk: Buffer) => {
          received += chunk.length;
          res.on("data", (more: Buffer) => {
            received += more.length;
          });
          resolve({
            res,
            first: chunk.toString(),
            received: () => received,
            closed,
            stopReading: () => {
              res.pause();
              res.socket.pause();
            },
            resumeReading: () => {
              res.socket.resume();
              res.resume();
            },
          });
        });
      });
      req.once("error", reject);
      req.end();
    });
  }

  const broadcast = async (data: string) => {
    const res = await fetch(`${dp().url}/sse/broadcast`, {
      method: "POST",
      headers: { ...auth(), "content-type": "application/json" },
      body: JSON.stringify({
        message: { jsonrpc: "2.0", method: "notifications/message", params: { level: "info", data } },
      }),
    });
    expect(res.status).toBe(200);
    return ((await res.json()) as { delivered: number }).delivered;
  };

  beforeAll(async () => {
    stack = await startStack({
      replicas: 1,
      env: {
        MCPGW_STDIO_ALLOWED_COMMANDS: process.execPath,
        MCPGW_STDIO_POOL_SIZE: "0",
        MCPGW_MAX_BODY_BYTES: String(MAX_BODY),
      },
    });
    api = await stack.api();
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", {
      name: "Slow readers",
      slug: "slow-readers",
    });
    serverId = (
      await registerStdioServer(api, {
        namespace_id: ns.body.id,
        name: "everything",
        command: process.execPath,
        args: [everythingEntry, "stdio"],
      })
    ).id;
    // The data plane has the server once its snapshot arrived.
    await eventually(async () => {
      const res = await fetch(`${dp().url}/servers/${serverId}/rpc`, {
        method: "POST",
        headers: { ...auth(), "content-type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
      });
      await res.arrayBuffer();
      return res.status !== 404;
    }, 10_000);
  }, 90_000);

  afterAll(async () => {
    await stack?.stop();
  });

  it("closes a legacy SSE stream whose client stops reading, counts it, and serves everyone else", async () => {
    const sseStatus = async () =>
      (
        (await (await fetch(`${dp().url}/sse/status`, { headers: auth() })).json()) as {
          connections: number;
        }
      ).connections;
    const slow = await openStream(`/servers/${serverId}/sse`, { ...auth(), accept: "text/event-stream" });
    expect(slow.first).toMatch(/event: endpoint/);
    const healthy = await openStream(`/servers/${serverId}/sse`, { ...auth(), accept: "text/event-stream" });
    await eventually(async () => (await sseStatus()) === 2, 10_000);
    slow.stopReading();
    const before = rss();
    const dropsBefore = await slowDisconnects("sse");

    // 96 MiB for a client that reads nothing, bounded in count and time.
    const data = "x".repeat(256 * 1024);
    const deadline = Date.now() + 90_000;
    let sent = 0;
    let sentAtDrop = 0;
    let rssAtDrop = 0;
    for (let i = 0; i < 384 && Date.now() < deadline; i++) {
      await broadcast(data);
      sent += data.length;
      if (!sentAtDrop && i % 8 === 7 && (await slowDisconnects("sse")) > dropsBefore) {
        sentAtDrop = sent;
        rssAtDrop = rss();
      }
    }
    expect(sent).toBe(96 * MiB);
    const after = rss();

    expect(await slowDisconnects("sse")).toBe(dropsBefore + 1);
    // Dropped soon after its backlog passed the limit (the kernel's socket buffers hold some more).
    expect(sentAtDrop).toBeGreaterThan(0);
    expect(sentAtDrop).toBeLessThan(4 * BACKLOG_LIMIT);
    // The slow client's session ended with its stream; the healthy one is still there.
    expect(await sseStatus()).toBe(1);
    // Nothing accumulated for it after the drop (unbounded, the ~80 MiB sent after it would be
    // held; the GC's timing alone moves RSS by ~30 MiB on a busy machine), and overall the process
    // grew by less than the limit plus what handling 96 MiB of broadcasts churns (~45 MiB here;
    // ~130 MiB without the bound).
    expect(after - rssAtDrop).toBeLessThan(48 * MiB);
    expect(after - before).toBeLessThan(BACKLOG_LIMIT + 56 * MiB);
    // The healthy client got everything.
    await eventually(() => healthy.received() > sent, 10_000);
    healthy.res.destroy();

    slow.resumeReading();
    await expect(Promise.race([slow.closed.then(() => "closed"), sleep(30_000, "open")])).resolves.toBe(
      "closed",
    );
    expect(slow.received()).toBeLessThan(sent);

    // A new legacy SSE client is served as before.
    const client = new Client({ name: "after-slow", version: "1" });
    await client.connect(
      new SSEClientTransport(new URL(`${dp().url}/servers/${serverId}/sse`), {
        requestInit: { headers: auth() },
        eventSourceInit: {
          fetch: (url, init) =>
            fetch(url, { ...init, headers: { ...(init?.headers as Record<string, string>), ...auth() } }),
        },
      }),
    );
    const tools = await client.listTools();
    expect(tools.tools.map((t) => t.name)).toContain("echo");
    await client.close();
  }, 120_000);

  it("closes a Streamable HTTP GET stream whose client stops reading, and keeps the session", async () => {
    const url = `${dp().url}/servers/${serverId}/mcp`;
    let sessionId = "";
    let nextId = 1;
    const post = async (message: Record<string, unknown>) => {
      const res = await fetch(url, {
        method: "POST",
        headers: {
          ...auth(),
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          ...(sessionId ? { "mcp-session-id": sessionId, "mcp-protocol-version": "2025-11-25" } : {}),
        },
        body: JSON.stringify({ jsonrpc: "2.0", ...message }),
      });
      const text = await res.text();
      return { status: res.status, headers: res.headers, text };
    };
    const call = (method: string, params: Record<string, unknown>) => post({ id: nextId++, method, params });

    const init = await call("initialize", {
      protocolVersion: "2025-11-25",
      capabilities: {},
      clientInfo: { name: "slow-get", version: "1" },
    });
    expect(init.status).toBe(200);
    sessionId = init.headers.get("mcp-session-id") ?? "";
    expect(sessionId).not.toBe("");
    expect((await post({ method: "notifications/initialized" })).status).toBe(202);
    expect((await call("logging/setLevel", { level: "emergency" })).status).toBe(200);
    // server-everything sends `notifications/resources/updated {uri}` for every subscribed URI
    // every 5 s once updates are on: 20 URIs of 1 MiB make 20 MiB a round, on the GET stream
    // (no request of the client is in flight then).
    for (let i = 0; i < 20; i++) {
      const sub = await call("resources/subscribe", { uri: `test://big/${i}/${"x".repeat(MiB)}` });
      expect(sub.status).toBe(200);
    }

    const getHeaders = {
      ...auth(),
      accept: "text/event-stream",
      "mcp-session-id": sessionId,
      "mcp-protocol-version": "2025-11-25",
    };
    const toggle = () => call("tools/call", { name: "toggle-subscriber-updates", arguments: {} });
    const dropsBefore = await slowDisconnects("streamable_http");
    const before = rss();
    // The GET stream only carries data once updates flow: open it, then turn them on.
    const opening = openStream(`/servers/${serverId}/mcp`, getHeaders);
    await sleep(300, undefined);
    expect((await toggle()).text).toMatch(/Started simulated resource/);
    const slow = await opening;
    slow.stopReading();

    await eventually(async () => (await slowDisconnects("streamable_http")) > dropsBefore, 45_000);
    expect(rss() - before).toBeLessThan(BACKLOG_LIMIT + 48 * MiB);
    expect((await toggle()).text).toMatch(/Stopped simulated resource/);
    slow.resumeReading();
    await expect(Promise.race([slow.closed.then(() => "closed"), sleep(30_000, "open")])).resolves.toBe(
      "closed",
    );

    // The session outlived its dropped stream: requests work, and a new GET stream is accepted.
    const echo = await call("tools/call", { name: "echo", arguments: { message: "still here" } });
    expect(echo.text).toMatch(/Echo: still here/);
    const again = await new Promise<number>((resolve, reject) => {
      const req = request(url, { method: "GET", headers: getHeaders, agent: false }, (res) => {
        resolve(res.statusCode ?? 0);
        res.destroy();
      });
      req.once("error", reject);
      req.end();
    });
    expect(again).toBe(200);
    await fetch(url, { method: "DELETE", headers: { ...getHeaders } });
  }, 120_000);

  it("drops a WebSocket client that stops reading and counts it with the same metric", async () => {
    const ws = new WebSocket(`${dp().url.replace(/^http/, "ws")}/servers/${serverId}/ws`, "mcp", {
      headers: auth(),
    });
    ws.on("error", () => {});
    await new Promise((resolve) => ws.once("open", resolve));
    const closed = new Promise<number>((resolve) => ws.once("close", (code) => resolve(code)));
    // "open" can come before the data plane lists the session for broadcasts (a loaded machine):
    // wait until a small broadcast reaches it, then stop reading.
    await eventually(async () => {
      const res = await fetch(`${dp().url}/ws/broadcast`, {
        method: "POST",
        headers: { ...auth(), "content-type": "application/json" },
        body: JSON.stringify({
          message: {
            jsonrpc: "2.0",
            method: "notifications/message",
            params: { level: "info", data: "ready" },
          },
        }),
      });
      return res.status === 200 && ((await res.json()) as { delivered: number }).delivered > 0;
    }, 20_000).catch((err) => {
      throw new Error(`the WebSocket session was not reachable by /ws/broadcast: ${err}`);
    });
    const socket = (ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    socket.pause();
    const dropsBefore = await slowDisconnects("websocket");
    const data = "x".repeat(256 * 1024);
    const deadline = Date.now() + 60_000;
    let sent = 0;
    while (sent < 6 * BACKLOG_LIMIT && Date.now() < deadline) {
      const res = await fetch(`${dp().url}/ws/broadcast`, {
        method: "POST",
        headers: { ...auth(), "content-type": "application/json" },
        body: JSON.stringify({
          message: { jsonrpc: "2.0", method: "notifications/message", params: { level: "info", data } },
        }),
      });
      expect(res.status).toBe(200);
      sent += data.length;
      if (((await res.json()) as { delivered: number }).delivered === 0) break;
    }
    expect(await slowDisconnects("websocket")).toBe(dropsBefore + 1);
    socket.resume();
    expect([1013, 1006]).toContain(await closed);
  }, 90_000);

  it("refuses a WebSocket frame larger than MCPGW_MAX_BODY_BYTES with 1009 and keeps serving", async () => {
    const wsUrl = `${dp().url.replace(/^http/, "ws")}/servers/${serverId}/ws`;
    const open = async () => {
      const ws = new WebSocket(wsUrl, "mcp", { headers: auth() });
      ws.on("error", () => {});
      await new Promise((resolve, reject) => {
        ws.once("open", resolve);
        ws.once("unexpected-response", (_req, res) =>
          reject(new Error(`upgrade refused: ${res.statusCode}`)),
        );
      });
      return ws;
    };
    const answer = (ws: WebSocket, message: { id: number } & Record<string, unknown>) =>
      new Promise<Record<string, unknown>>((resolve) => {
        const onMessage = (data: Buffer) => {
          const m = JSON.parse(data.toString()) as Record<string, unknown>;
          if (m.id !== message.id) return;
          ws.off("message", onMessage);
          resolve(m);
        };
        ws.on("message", onMessage);
        ws.send(JSON.stringify(message));
      });
    const initialize = initializeRequest("ws-big");

    const big = await open();
    const closed = new Promise<number>((resolve) => big.once("close", (code) => resolve(code)));
    big.send(
      JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping", params: { pad: "x".repeat(MAX_BODY) } }),
    );
    expect(await closed).toBe(1009);

    // A frame within the limit is taken, and the data plane keeps serving.
    const ws = await open();
    expect(JSON.stringify(await answer(ws, initialize))).toMatch(/serverInfo/);
    ws.send(JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }));
    const pong = await answer(ws, {
      jsonrpc: "2.0",
      id: 2,
      method: "ping",
      params: { _meta: { pad: "x".repeat(MAX_BODY - 1024) } },
    });
    expect(pong).toMatchObject({ id: 2, result: {} });
    ws.close();
    expect((await fetch(`${dp().url}/health`)).status).toBe(200);
  }, 60_000);
});

function sleep<T>(ms: number, value: T): Promise<T> {
  return new Promise((resolve) => setTimeout(() => resolve(value), ms));
}
