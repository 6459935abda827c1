import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CreateMessageRequestSchema } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  everythingEntry,
  initializeRequest,
  registerStdioServer,
  type Stack,
  startStack,
  startTestUpstream,
  type TestUpstream,
  waitForReady,
} from "../../../packages/testing/src/index.ts";

describe("sessions survive the replica that answers (and the one that started them)", () => {
  let stack: Stack;
  let api: Api;
  let upstream: TestUpstream;
  let httpServer: string;
  let stdioServer: string;

  /** A fetch that sends each request to the next replica in turn. */
  const alternating = (ports: number[], seen: number[]) => {
    let i = 0;
    return (url: string | URL, init?: RequestInit) => {
      const u = new URL(url);
      const port = ports[i++ % ports.length]!;
      seen.push(port);
      u.port = String(port);
      return fetch(u, init);
    };
  };

  /**
   * Opens a session with raw HTTP (`initialize` + `notifications/initialized`); the headers of
   * its later requests, session id included.
   */
  const rawSession = async (url: string, clientName: string) => {
    const headers = {
      authorization: `Bearer ${api.token}`,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": "2025-11-25",
    };
    const init = await fetch(url, {
      method: "POST",
      headers,
      body: JSON.stringify(initializeRequest(clientName)),
    });
    await init.text();
    const session = { ...headers, "mcp-session-id": init.headers.get("mcp-session-id")! };
    const ack = await fetch(url, {
      method: "POST",
      headers: session,
      body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
    });
    await ack.text();
    return session;
  };

  beforeAll(async () => {
    [stack, upstream] = await Promise.all([
      startStack({ replicas: 2, env: { MCPGW_STDIO_ALLOWED_COMMANDS: process.execPath } }),
      startTestUpstream(),
    ]);
    api = await stack.api();
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", {
      name: "Replicas",
      slug: "replicas",
    });
    httpServer = (
      await api.call<{ id: string }>("POST", "/api/v1/servers", {
        namespace_id: ns.body.id,
        name: "http",
        transport: "streamable_http",
        url: upstream.url,
      })
    ).body.id;
    stdioServer = (
      await registerStdioServer(api, {
        namespace_id: ns.body.id,
        name: "stdio",
        command: process.execPath,
        args: [everythingEntry, "stdio"],
      })
    ).id;
    // Replicas announce themselves to each other over NATS.
    await new Promise((r) => setTimeout(r, 1000));
  }, 90_000);

  afterAll(async () => {
    await Promise.all([stack?.stop(), upstream?.close()]);
  });

  it("serves a stdio session through either replica: requests reach the replica running its process", async () => {
    const seen: number[] = [];
    const ports = stack.dataPlanes.map((d) => d.port);
    const transport = new StreamableHTTPClientTransport(
      new URL(`${stack.dataPlanes[0]!.url}/servers/${stdioServer}/mcp`),
      {
        requestInit: { headers: { authorization: `Bearer ${api.token}` } },
        fetch: alternating(ports, seen),
      },
    );
    const client = new Client(
      { name: "cross-replica", version: "1.0.0" },
      { capabilities: { sampling: {} } },
    );
    client.setRequestHandler(CreateMessageRequestSchema, async () => ({
      role: "assistant",
      content: { type: "text", text: "sampled across replicas" },
      model: "m",
    }));
    await client.connect(transport);
    expect(transport.sessionId).toMatch(/^s1\.dp[01]\./);
    for (let i = 0; i < 3; i++) {
      const sum = await client.callTool({ name: "get-sum", arguments: { a: i, b: 1 } });
      expect(JSON.stringify(sum.content)).toContain(String(i + 1));
    }
    const progress: number[] = [];
    await client.callTool(
      { name: "trigger-long-running-operation", arguments: { duration: 0.2, steps: 2 } },
      undefined,
      { onprogress: (p) => progress.push(p.progress) },
    );
    expect(progress.length).toBe(2);
    const sampled = await client.callTool({
      name: "trigger-sampling-request",
      arguments: { prompt: "hi", maxTokens: 5 },
    });
    expect(JSON.stringify(sampled.content)).toContain("sampled across replicas");
    // Bodies larger than one bus message travel in chunks, both ways.
    const big = "x".repeat(700_000);
    for (let i = 0; i < 2; i++) {
      const echo = await client.callTool({ name: "echo", arguments: { message: big } });
      expect(JSON.stringify(echo.content)).toContain(big);
    }
    expect(new Set(seen).size).toBe(2);
    // Requests landing on the other replica were carried over NATS to the owner.
    const owner = transport.sessionId!.split(".")[1]!;
    const [ownerDp, otherDp] = owner === "dp0" ? stack.dataPlanes : [...stack.dataPlanes].reverse();
    const forwarded = (text: string, direction: string) =>
      Number(
        new RegExp(
          `mcpgw_forwarded_requests_total\\{[^}]*direction="${direction}"[^}]*outcome="answered"[^}]*\\} (\\d+)`,
        ).exec(text)?.[1] ?? 0,
      );
    const metricsOf = async (dp: typeof ownerDp) => (await fetch(`${dp!.url}/metrics`)).text();
    expect(forwarded(await metricsOf(otherDp), "out")).toBeGreaterThanOrEqual(4);
    expect(forwarded(await metricsOf(ownerDp), "in")).toBeGreaterThanOrEqual(4);
    await transport.terminateSession();
    await client.close();
  });

  it("resumes a broken stream of a stdio session with Last-Event-ID, on the other replica", async () => {
    const [dp0, dp1] = stack.dataPlanes;
    const session = await rawSession(`${dp0!.url}/servers/${stdioServer}/mcp`, "raw");
    expect(session["mcp-session-id"]).toMatch(/^s1\.dp0\./);

    /** SSE events (id and data) of a response, until `stop` says so. */
    const readEvents = async (res: Response, stop: (data: string) => boolean) => {
      const events: Array<{ id?: string; data: string }> = [];
      const reader = res.body!.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut = buffer.indexOf("\n\n");
        while (cut >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const id = /^id: ?(.*)$/m.exec(block)?.[1];
          const data = /^data: ?(.*)$/m.exec(block)?.[1] ?? "";
          if (data) events.push({ id, data });
          if (data && stop(data)) {
            await reader.cancel();
            return events;
          }
          cut = buffer.indexOf("\n\n");
        }
      }
      return events;
    };

    // A long tool call; the client's connection breaks after the first progress event.
    const aborted = new AbortController();
    const call = await fetch(`${dp0!.url}/servers/${stdioServer}/mcp`, {
      method: "POST",
      headers: session,
      signal: aborted.signal,
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 2,
        method: "tools/call",
        params: {
          name: "trigger-long-running-operation",
          arguments: { duration: 1.5, steps: 3 },
          _meta: { progressToken: "resume-me" },
        },
      }),
    });
    const before = await readEvents(call, (d) => d.includes("notifications/progress"));
    aborted.abort();
    const lastId = before.filter((e) => e.id).at(-1)!.id!;
    expect(before.some((e) => e.data.includes('"progress":1'))).toBe(true);

    // The client reconnects through the other replica; the owner replays what it missed.
    const resumed = await fetch(`${dp1!.url}/servers/${stdioServer}/mcp`, {
      headers: { ...session, accept: "text/event-stream", "last-event-id": lastId },
    });
    expect(resumed.status).toBe(200);
    const after = await readEvents(resumed, (d) => d.includes('"id":2'));
    const progress = after.filter((e) => e.data.includes("notifications/progress"));
    expect(
      progress.map((e) => (JSON.parse(e.data) as { params: { progress: number } }).params.progress),
    ).toEqual([2, 3]);
    expect(after.at(-1)!.data).toContain("Long running operation completed");
    await fetch(`${dp0!.url}/servers/${stdioServer}/mcp`, { method: "DELETE", headers: session });
  });

  it("accepts legacy SSE messages on the replica that does not hold the stream", async () => {
    const [sseReplica, otherReplica] = stack.dataPlanes;
    const headers = { authorization: `Bearer ${api.token}` };
    const transport = new SSEClientTransport(new URL(`${sseReplica!.url}/servers/${stdioServer}/sse`), {
      requestInit: { headers },
      eventSourceInit: {
        fetch: (url, init) =>
          fetch(url, { ...init, headers: { ...(init?.headers as Record<string, string>), ...headers } }),
      },
      // Every message POST goes to the other replica.
      fetch: (url, init) => {
        const u = new URL(url);
        if (init?.method === "POST") u.port = String(otherReplica!.port);
        return fetch(u, init);
      },
    });
    const client = new Client({ name: "sse-cross", version: "1.0.0" });
    await client.connect(transport);
    const echo = await client.callTool({ name: "echo", arguments: { message: "posted elsewhere" } });
    expect(JSON.stringify(echo.content)).toContain("posted elsewhere");
    await client.close();
  });

  it("survives clients that go away while their forwarded requests are in flight", async () => {
    const [owner, other] = stack.dataPlanes;
    const session = await rawSession(`${owner!.url}/servers/${stdioServer}/mcp`, "impatient");
    // Requests through the other replica, each abandoned by its client after 1–12 ms: some before
    // the owner answers, some while the answer streams (in batches, so that the timing spreads).
    for (let batch = 0; batch < 6; batch++)
      await Promise.all(
        Array.from({ length: 25 }, async (_, i) => {
          const abandon = new AbortController();
          setTimeout(() => abandon.abort(), 1 + ((i + batch) % 12));
          await fetch(`${other!.url}/servers/${stdioServer}/mcp`, {
            method: "POST",
            headers: session,
            signal: abandon.signal,
            body: JSON.stringify({
              jsonrpc: "2.0",
              id: 100 + batch * 25 + i,
              method: "tools/call",
              params: { name: "trigger-long-running-operation", arguments: { duration: 0.2, steps: 2 } },
            }),
          })
            .then((r) => r.text())
            .catch(() => undefined);
        }),
      );
    await new Promise((r) => setTimeout(r, 500));
    // Both replicas are up and the session still answers through either.
    for (const dp of [owner, other]) {
      const sum = await fetch(`${dp!.url}/servers/${stdioServer}/mcp`, {
        method: "POST",
        headers: session,
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 200,
          method: "tools/call",
          params: { name: "get-sum", arguments: { a: 2, b: 3 } },
        }),
      });
      expect(sum.status).toBe(200);
      expect(await sum.text()).toMatch(/"result":\{"content":\[\{"type":"text","text":"[^"]*5/);
    }
    await fetch(`${owner!.url}/servers/${stdioServer}/mcp`, { method: "DELETE", headers: session });
  });

  it("ends a forwarded stream when the replica owning its session shuts down, and forgets the session", async () => {
    const [owner, other] = stack.dataPlanes;
    const session = await rawSession(`${owner!.url}/servers/${stdioServer}/mcp`, "orphan");
    expect(session["mcp-session-id"]).toMatch(/^s1\.dp0\./);
    // The session's GET stream, opened through the other replica (carried over NATS).
    const stream = await fetch(`${other!.url}/servers/${stdioServer}/mcp`, {
      headers: { ...session, accept: "text/event-stream" },
    });
    expect(stream.status).toBe(200);
    const ended = stream.text().then(
      () => Date.now(),
      () => Date.now(),
    );
    const stoppedAt = Date.now();
    await owner!.proc.stop();
    // The stream ends soon after its owner goes (not left hanging).
    expect((await ended) - stoppedAt).toBeLessThan(10_000);
    // The session is gone with its process: 404, so the client initializes again.
    const after = await fetch(`${other!.url}/servers/${stdioServer}/mcp`, {
      method: "POST",
      headers: session,
      body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/list" }),
    });
    expect(after.status).toBe(404);
    await owner!.restart();
    await waitForReady(`${owner!.url}/ready`, owner!.proc);
  });

  it("keeps an HTTP-upstream session going after the replica that started it dies", async () => {
    const [first, second] = stack.dataPlanes;
    const session = await rawSession(`${first!.url}/servers/${httpServer}/mcp`, "survivor");
    await first!.proc.kill();
    const call = await fetch(`${second!.url}/servers/${httpServer}/mcp`, {
      method: "POST",
      headers: session,
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 2,
        method: "tools/call",
        params: { name: "add", arguments: { a: 40, b: 2 } },
      }),
    });
    expect(call.status).toBe(200);
    expect(await call.text()).toContain('"text":"42"');
    // Bring the replica back for the rest of the suite's clean shutdown.
    await first!.restart();
    await waitForReady(`${first!.url}/ready`, first!.proc);
  });
});
