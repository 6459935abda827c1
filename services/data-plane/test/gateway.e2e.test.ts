import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  type Stack,
  startEverythingServer,
  startStack,
  startTestUpstream,
  type TestUpstream,
} from "../../../packages/testing/src/index.ts";

interface ServerDto {
  id: string;
  enabled: boolean;
  status: string;
}

/** An SDK client whose every HTTP request goes to the next replica in turn. */
function roundRobinClient(stack: Stack, serverId: string, token: string, seen?: number[]) {
  let i = 0;
  const ports = stack.dataPlanes.map((d) => d.port);
  const transport = new StreamableHTTPClientTransport(
    new URL(`${stack.dataPlanes[0]!.url}/servers/${serverId}/mcp`),
    {
      requestInit: { headers: { authorization: `Bearer ${token}` } },
      fetch: (url, init) => {
        const u = new URL(url);
        const port = ports[i++ % ports.length]!;
        seen?.push(port);
        u.port = String(port);
        return fetch(u, init);
      },
    },
  );
  const client = new Client({ name: "e2e", version: "1.0.0" });
  return { client, transport };
}

async function initializeStatus(url: string, token: string): Promise<number> {
  const res = await fetch(url, {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
    },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: {
        protocolVersion: "2025-11-25",
        capabilities: {},
        clientInfo: { name: "probe", version: "1" },
      },
    }),
  });
  await res.body?.cancel();
  return res.status;
}

describe("gateway end to end: control plane → NATS → two data-plane replicas → upstream", () => {
  let stack: Stack;
  let api: Api;
  let upstream: TestUpstream;
  let everything: Awaited<ReturnType<typeof startEverythingServer>>;
  let namespaceId: string;

  beforeAll(async () => {
    [stack, upstream, everything] = await Promise.all([
      startStack({ replicas: 2 }),
      startTestUpstream(),
      startEverythingServer(),
    ]);
    api = await stack.api();
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", {
      name: "Team A",
      slug: "team-a",
    });
    expect(ns.status).toBe(201);
    namespaceId = ns.body.id;
  }, 90_000);

  afterAll(async () => {
    await Promise.all([stack?.stop(), upstream?.close(), everything?.proc.stop()]);
  });

  it("makes a newly registered server reachable through both replicas within one second", async () => {
    const created = await api.call<ServerDto>("POST", "/api/v1/servers", {
      namespace_id: namespaceId,
      name: "fresh",
      transport: "streamable_http",
      url: upstream.url,
    });
    expect(created.status).toBe(201);
    expect(created.body.enabled).toBe(true);
    const started = Date.now();
    const reachable = await Promise.all(
      stack.dataPlanes.map(async (dp) => {
        while (Date.now() - started < 1000) {
          if ((await initializeStatus(`${dp.url}/servers/${created.body.id}/mcp`, api.token)) === 200)
            return Date.now() - started;
          await new Promise((r) => setTimeout(r, 20));
        }
        return Number.POSITIVE_INFINITY;
      }),
    );
    for (const ms of reachable) expect(ms).toBeLessThan(1000);
  });

  it("initializes, lists and calls tools with the official SDK client, alternating replicas", async () => {
    const server = await api.call<ServerDto>("POST", "/api/v1/servers", {
      namespace_id: namespaceId,
      name: "sdk-upstream",
      transport: "streamable_http",
      url: upstream.url,
    });
    await new Promise((r) => setTimeout(r, 300));
    const ports: number[] = [];
    const { client, transport } = roundRobinClient(stack, server.body.id, api.token, ports);
    await client.connect(transport);
    expect(client.getServerVersion()?.name).toBe("mcpgw-test-upstream");
    // Sealed routing, bound to this caller and server.
    expect(transport.sessionId).toMatch(/^g2\.0\.[A-Za-z0-9_-]{22}\./);
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual(["add", "count_with_progress", "echo", "hold", "sleep"]);
    const sum = await client.callTool({ name: "add", arguments: { a: 2, b: 40 } });
    expect(sum.content).toEqual([{ type: "text", text: "42" }]);
    const echo = await client.callTool({ name: "echo", arguments: { text: "héllo ✓" } });
    expect(echo.content).toEqual([{ type: "text", text: "héllo ✓" }]);
    // The session's requests really went to both replicas.
    expect(new Set(ports).size).toBe(2);
    await transport.terminateSession();
    await client.close();
  });

  it("streams progress notifications of a tool call back as server-sent events", async () => {
    const list = await api.call<{ items: Array<ServerDto & { name: string }> }>(
      "GET",
      `/api/v1/servers?namespace_id=${namespaceId}`,
    );
    const server = list.body.items.find((s) => s.name === "sdk-upstream")!;
    const { client, transport } = roundRobinClient(stack, server.id, api.token);
    await client.connect(transport);
    const progress: number[] = [];
    const result = await client.callTool(
      { name: "count_with_progress", arguments: { steps: 5 } },
      undefined,
      {
        onprogress: (p) => progress.push(p.progress),
      },
    );
    expect(result.content).toEqual([{ type: "text", text: "counted 5" }]);
    expect(progress).toEqual([1, 2, 3, 4, 5]);
    await client.close();
  });

  it("never forwards the client's token to the upstream", async () => {
    const authorizations = upstream.received.map((r) => r.headers.authorization).filter(Boolean);
    expect(upstream.received.length).toBeGreaterThan(0);
    expect(authorizations).toEqual([]);
  });

  it("proxies @modelcontextprotocol/server-everything, including a long-running operation with progress", async () => {
    const server = await api.call<ServerDto>("POST", "/api/v1/servers", {
      namespace_id: namespaceId,
      name: "everything",
      transport: "streamable_http",
      url: everything.url,
    });
    expect(server.status).toBe(201);
    await new Promise((r) => setTimeout(r, 300));
    const { client, transport } = roundRobinClient(stack, server.body.id, api.token);
    await client.connect(transport);
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    expect(names).toContain("echo");
    const echo = await client.callTool({ name: "echo", arguments: { message: "through the gateway" } });
    expect(JSON.stringify(echo.content)).toContain("through the gateway");
    const longRunning = names.find((n) => n.includes("long-running") || n.includes("longRunning"));
    expect(longRunning).toBeDefined();
    const progress: number[] = [];
    await client.callTool({ name: longRunning!, arguments: { duration: 1, steps: 3 } }, undefined, {
      onprogress: (p) => progress.push(p.progress),
    });
    expect(progress.length).toBe(3);
    await transport.terminateSession();
    await client.close();
  });

  it("resumes a broken SSE stream with Last-Event-ID through the other replica", async () => {
    const list = await api.call<{ items: Array<{ id: string; name: string }> }>(
      "GET",
      `/api/v1/servers?namespace_id=${namespaceId}`,
    );
    const everythingId = list.body.items.find((s) => s.name === "everything")!.id;
    const [dp0, dp1] = stack.dataPlanes;
    const base = {
      authorization: `Bearer ${api.token}`,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": "2025-11-25",
    };
    const init = await fetch(`${dp0!.url}/servers/${everythingId}/mcp`, {
      method: "POST",
      headers: base,
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: {
          protocolVersion: "2025-11-25",
          capabilities: {},
          clientInfo: { name: "resume", version: "1" },
        },
      }),
    });
    const session = init.headers.get("mcp-session-id")!;
    await init.text();
    await fetch(`${dp0!.url}/servers/${everythingId}/mcp`, {
      method: "POST",
      headers: { ...base, "mcp-session-id": session },
      body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
    });
    // A long call whose stream breaks after its first event.
    const abort = new AbortController();
    const call = await fetch(`${dp0!.url}/servers/${everythingId}/mcp`, {
      method: "POST",
      headers: { ...base, "mcp-session-id": session },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 2,
        method: "tools/call",
        params: {
          name: "trigger-long-running-operation",
          arguments: { duration: 1, steps: 4 },
          _meta: { progressToken: "t" },
        },
      }),
      signal: abort.signal,
    });
    const reader = call.body!.getReader();
    let text = "";
    while (!/^id: ?(\S+)$/m.test(text)) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    const lastEventId = /^id: ?(\S+)$/m.exec(text)![1]!;
    abort.abort();
    await new Promise((r) => setTimeout(r, 1300));
    // The client reconnects through another replica and gets what it missed.
    const resumed = await fetch(`${dp1!.url}/servers/${everythingId}/mcp`, {
      headers: { ...base, "mcp-session-id": session, "last-event-id": lastEventId },
    });
    expect(resumed.status).toBe(200);
    const r = resumed.body!.getReader();
    let replay = "";
    const deadline = Date.now() + 5000;
    while (!replay.includes('"id":2') && Date.now() < deadline) {
      const { value, done } = await r.read();
      if (done) break;
      replay += new TextDecoder().decode(value);
    }
    await r.cancel();
    expect(replay).toContain("notifications/progress");
    expect(replay).toContain('"id":2');
    expect(replay).toContain("Long running operation completed");
  });

  it("stops serving a disabled server on both replicas and serves it again once enabled", async () => {
    const server = await api.call<ServerDto>("POST", "/api/v1/servers", {
      namespace_id: namespaceId,
      name: "toggle",
      transport: "streamable_http",
      url: upstream.url,
    });
    await new Promise((r) => setTimeout(r, 300));
    const disabled = await api.call<ServerDto>("PATCH", `/api/v1/servers/${server.body.id}`, {
      enabled: false,
    });
    expect(disabled.body.enabled).toBe(false);
    const started = Date.now();
    for (const dp of stack.dataPlanes) {
      let status = 0;
      while (Date.now() - started < 1000) {
        status = await initializeStatus(`${dp.url}/servers/${server.body.id}/mcp`, api.token);
        if (status === 403) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(status).toBe(403);
    }
    await api.call("PATCH", `/api/v1/servers/${server.body.id}`, { enabled: true });
    for (const dp of stack.dataPlanes) {
      await expect
        .poll(() => initializeStatus(`${dp.url}/servers/${server.body.id}/mcp`, api.token), { timeout: 1000 })
        .toBe(200);
    }
  });
});
