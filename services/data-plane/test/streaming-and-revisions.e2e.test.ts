import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  eventually,
  releaseGate,
  type Stack,
  startStack,
  startTestUpstream,
  type TestUpstream,
} from "../../../packages/testing/src/index.ts";

/**
 * A raw-HTTP upstream speaking the stateless 2026-07-28 revision: no initialize, no sessions,
 * `server/discover`, and routing headers that must match the body.
 */
async function startStatelessUpstream() {
  const received: IncomingHttpHeaders[] = [];
  const server: Server = createServer(async (req, res) => {
    received.push(req.headers);
    const chunks: Buffer[] = [];
    for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
    const msg = JSON.parse(Buffer.concat(chunks).toString()) as {
      id: number;
      method: string;
      params?: { name?: string; arguments?: { text?: string } };
    };
    const reply = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.headers["mcp-protocol-version"] !== "2026-07-28" || req.headers["mcp-method"] !== msg.method) {
      return reply(400, {
        jsonrpc: "2.0",
        id: msg.id,
        error: { code: -32600, message: "bad routing headers" },
      });
    }
    if (msg.method === "server/discover") {
      return reply(200, {
        jsonrpc: "2.0",
        id: msg.id,
        result: {
          supportedVersions: ["2026-07-28"],
          capabilities: { tools: {} },
          serverInfo: { name: "stateless", version: "1" },
        },
      });
    }
    if (msg.method === "tools/call") {
      return reply(200, {
        jsonrpc: "2.0",
        id: msg.id,
        result: { content: [{ type: "text", text: `stateless ${msg.params?.arguments?.text}` }] },
      });
    }
    return reply(200, { jsonrpc: "2.0", id: msg.id, error: { code: -32601, message: "method not found" } });
  });
  server.listen(0, "127.0.0.1");
  await new Promise((r) => server.once("listening", r));
  const port = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}/mcp`, received, close: () => new Promise((r) => server.close(r)) };
}

function parseSse(text: string): unknown[] {
  return text
    .split("\n")
    .filter((l) => l.startsWith("data: "))
    .map((l) => JSON.parse(l.slice(6)));
}

describe("streaming and protocol revisions through two replicas", () => {
  let stack: Stack;
  let api: Api;
  let upstream: TestUpstream;
  let stateless: Awaited<ReturnType<typeof startStatelessUpstream>>;
  const ids: Record<string, string> = {};

  const headers = (extra: Record<string, string> = {}) => ({
    authorization: `Bearer ${api.token}`,
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    ...extra,
  });

  beforeAll(async () => {
    [stack, upstream, stateless] = await Promise.all([
      startStack({ replicas: 2 }),
      startTestUpstream(),
      startStatelessUpstream(),
    ]);
    api = await stack.api();
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", {
      name: "Revisions",
      slug: "revisions",
    });
    for (const [name, url] of [
      ["sdk", upstream.url],
      ["stateless", stateless.url],
    ] as const) {
      ids[name] = (
        await api.call<{ id: string }>("POST", "/api/v1/servers", {
          namespace_id: ns.body.id,
          name,
          transport: "streamable_http",
          url,
        })
      ).body.id;
    }
    for (const dp of stack.dataPlanes) {
      await eventually(async () => {
        const r = await fetch(`${dp.url}/servers/${ids.stateless}/mcp`, {
          method: "POST",
          headers: headers({ "mcp-protocol-version": "2026-07-28", "mcp-method": "server/discover" }),
          body: JSON.stringify({ jsonrpc: "2.0", id: 0, method: "server/discover" }),
        });
        await r.body?.cancel();
        return r.status === 200;
      }, 3000);
    }
  }, 90_000);

  afterAll(async () => {
    await Promise.all([stack?.stop(), upstream?.close(), stateless?.close()]);
  });

  it("relays SSE events as they happen: a progress event arrives while the tool call is still running", async () => {
    const dp = stack.dataPlanes[0]!.url;
    const init = await fetch(`${dp}/servers/${ids.sdk}/mcp`, {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: {
          protocolVersion: "2025-11-25",
          capabilities: {},
          clientInfo: { name: "raw", version: "1" },
        },
      }),
    });
    const session = init.headers.get("mcp-session-id")!;
    await init.text();
    const sessionHeaders = headers({ "mcp-session-id": session, "mcp-protocol-version": "2025-11-25" });
    const initialized = await fetch(`${dp}/servers/${ids.sdk}/mcp`, {
      method: "POST",
      headers: sessionHeaders,
      body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
    });
    expect(initialized.status).toBe(202);

    const call = await fetch(`${stack.dataPlanes[1]!.url}/servers/${ids.sdk}/mcp`, {
      method: "POST",
      headers: sessionHeaders,
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 2,
        method: "tools/call",
        params: { name: "hold", arguments: { gate: "g1" }, _meta: { progressToken: "p1" } },
      }),
    });
    expect(call.headers.get("content-type")).toContain("text/event-stream");
    const reader = call.body!.getReader();
    const decoder = new TextDecoder();
    let text = "";
    // The tool is blocked on the gate: only an unbuffered relay can deliver this event now.
    while (!text.includes("notifications/progress")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`stream ended before the progress event: ${text}`);
      text += decoder.decode(value, { stream: true });
    }
    releaseGate("g1");
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    const events = parseSse(text) as Array<{ method?: string; id?: number; result?: { content: unknown } }>;
    expect(events[0]?.method).toBe("notifications/progress");
    expect(events.at(-1)).toMatchObject({
      id: 2,
      result: { content: [{ type: "text", text: "released g1" }] },
    });
  });

  it("serves a stateless 2026-07-28 upstream through either replica, forwarding its routing headers", async () => {
    for (const [i, dp] of stack.dataPlanes.entries()) {
      const res = await fetch(`${dp.url}/servers/${ids.stateless}/mcp`, {
        method: "POST",
        headers: headers({
          "mcp-protocol-version": "2026-07-28",
          "mcp-method": "tools/call",
          "mcp-name": "echo",
        }),
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 10 + i,
          method: "tools/call",
          params: { name: "echo", arguments: { text: `via dp${i}` } },
        }),
      });
      expect(res.status).toBe(200);
      expect(res.headers.get("mcp-session-id")).toBeNull();
      expect(await res.json()).toMatchObject({
        id: 10 + i,
        result: { content: [{ type: "text", text: `stateless via dp${i}` }] },
      });
    }
    const calls = stateless.received.filter((h) => h["mcp-method"] === "tools/call");
    expect(calls.length).toBe(2);
    for (const h of calls) {
      expect(h["mcp-name"]).toBe("echo");
      expect(h.authorization).toBeUndefined();
      expect(h["mcp-session-id"]).toBeUndefined();
    }
  });

  it("answers server/discover for a stateless client without any session", async () => {
    const res = await fetch(`${stack.dataPlanes[1]!.url}/servers/${ids.stateless}/mcp`, {
      method: "POST",
      headers: headers({ "mcp-protocol-version": "2026-07-28", "mcp-method": "server/discover" }),
      body: JSON.stringify({ jsonrpc: "2.0", id: 20, method: "server/discover" }),
    });
    expect(await res.json()).toMatchObject({ result: { supportedVersions: ["2026-07-28"] } });
  });
});
