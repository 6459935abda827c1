import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { WebSocketClientTransport } from "@modelcontextprotocol/sdk/client/websocket.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { CreateMessageRequestSchema, ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket as NodeWebSocket } from "ws";
import {
  type Api,
  everythingEntry,
  freePort,
  type ManagedProcess,
  registerStdioServer,
  type Stack,
  startEverythingServer,
  startProcess,
  startStack,
  statelessPost,
} from "../../../packages/testing/src/index.ts";

type ClientKind = "streamable_http" | "sse" | "websocket";
type UpstreamKind = "streamable_http" | "sse" | "stdio";

/** server-everything in its legacy SSE mode on a free port. */
async function startEverythingSse(): Promise<{ url: string; proc: ManagedProcess }> {
  const port = await freePort();
  const proc = startProcess(process.execPath, [everythingEntry, "sse"], { PORT: String(port) });
  const deadline = Date.now() + 20_000;
  while (!/running on port|listening/i.test(proc.output())) {
    if (Date.now() > deadline || proc.child.exitCode !== null)
      throw new Error(`server-everything (sse) did not start:\n${proc.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `http://127.0.0.1:${port}/sse`, proc };
}

describe("every client transport × every upstream transport, against server-everything", () => {
  let stack: Stack;
  let api: Api;
  let http: Awaited<ReturnType<typeof startEverythingServer>>;
  let sse: Awaited<ReturnType<typeof startEverythingSse>>;
  const servers = {} as Record<UpstreamKind, string>;

  beforeAll(async () => {
    [stack, http, sse] = await Promise.all([
      startStack({
        replicas: 1,
        env: { MCPGW_STDIO_ALLOWED_COMMANDS: process.execPath, MCPGW_STDIO_POOL_SIZE: "1" },
      }),
      startEverythingServer(),
      startEverythingSse(),
    ]);
    api = await stack.api();
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", {
      name: "Matrix",
      slug: "matrix",
    });
    const register = async (name: UpstreamKind, body: Record<string, unknown>) => {
      const res = await api.call<{ id: string }>("POST", "/api/v1/servers", {
        namespace_id: ns.body.id,
        name,
        transport: name,
        ...body,
      });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      servers[name] = res.body.id;
    };
    await register("streamable_http", { url: http.url });
    await register("sse", { url: sse.url });
    servers.stdio = (
      await registerStdioServer(api, {
        namespace_id: ns.body.id,
        name: "stdio",
        command: process.execPath,
        args: [everythingEntry, "stdio"],
      })
    ).id;
    await new Promise((r) => setTimeout(r, 500));
  }, 90_000);

  afterAll(async () => {
    await Promise.all([stack?.stop(), http?.proc.stop(), sse?.proc.stop()]);
  });

  function clientTransport(kind: ClientKind, serverId: string): Transport {
    const base = `${stack.dataPlanes[0]!.url}/servers/${serverId}`;
    const headers = { authorization: `Bearer ${api.token}` };
    if (kind === "streamable_http")
      return new StreamableHTTPClientTransport(new URL(`${base}/mcp`), { requestInit: { headers } });
    if (kind === "sse") {
      return new SSEClientTransport(new URL(`${base}/sse`), {
        requestInit: { headers },
        eventSourceInit: {
          fetch: (url, init) =>
            fetch(url, { ...init, headers: { ...(init?.headers as Record<string, string>), ...headers } }),
        },
      });
    }
    // The SDK's WebSocket transport uses the global WebSocket; Node 20 has none, so lend it ws,
    // with the bearer token a non-browser client sends in the upgrade request.
    (globalThis as { WebSocket?: unknown }).WebSocket = class extends NodeWebSocket {
      constructor(url: string | URL, protocols?: string | string[]) {
        super(url, protocols, { headers });
      }
    };
    return new WebSocketClientTransport(new URL(`${base.replace(/^http/, "ws")}/ws`));
  }

  async function connect(kind: ClientKind, upstream: UpstreamKind) {
    const client = new Client(
      { name: `matrix-${kind}`, version: "1.0.0" },
      { capabilities: { sampling: {}, elicitation: {} } },
    );
    client.setRequestHandler(CreateMessageRequestSchema, async () => ({
      role: "assistant",
      content: { type: "text", text: "sampled by the test client" },
      model: "test-model",
    }));
    client.setRequestHandler(ElicitRequestSchema, async () => ({
      action: "accept",
      content: { name: "Ada", check: true },
    }));
    await client.connect(clientTransport(kind, servers[upstream]));
    return client;
  }

  const matrix: Array<[ClientKind, UpstreamKind]> = [];
  for (const c of ["streamable_http", "sse", "websocket"] as const)
    for (const u of ["streamable_http", "sse", "stdio"] as const) matrix.push([c, u]);

  it.each(matrix)(
    "client %s → upstream %s: tools, resources, prompts, progress, sampling, elicitation",
    async (kind, upstream) => {
      const client = await connect(kind, upstream);
      try {
        expect(client.getServerVersion()?.name).toMatch(/everything/i);
        const { tools } = await client.listTools();
        const names = tools.map((t) => t.name);
        expect(names).toEqual(
          expect.arrayContaining([
            "echo",
            "get-sum",
            "trigger-long-running-operation",
            "trigger-sampling-request",
          ]),
        );

        const echo = await client.callTool({
          name: "echo",
          arguments: { message: `via ${kind} to ${upstream}` },
        });
        expect(JSON.stringify(echo.content)).toContain(`via ${kind} to ${upstream}`);

        const { resources } = await client.listResources();
        expect(resources.length).toBeGreaterThan(0);
        const read = await client.readResource({ uri: resources[0]!.uri });
        expect(read.contents.length).toBeGreaterThan(0);

        const prompt = await client.getPrompt({ name: "simple-prompt" });
        expect(prompt.messages.length).toBeGreaterThan(0);

        const progress: number[] = [];
        await client.callTool(
          { name: "trigger-long-running-operation", arguments: { duration: 0.3, steps: 3 } },
          undefined,
          {
            onprogress: (p) => progress.push(p.progress),
          },
        );
        expect(progress.length).toBe(3);

        const sampled = await client.callTool({
          name: "trigger-sampling-request",
          arguments: { prompt: "hello", maxTokens: 10 },
        });
        expect(JSON.stringify(sampled.content)).toContain("sampled by the test client");

        if (names.includes("trigger-elicitation-request")) {
          const elicited = await client.callTool({ name: "trigger-elicitation-request", arguments: {} });
          expect(JSON.stringify(elicited.content)).toContain("Ada");
        }
      } finally {
        await client.close();
      }
    },
    30_000,
  );

  it.each(["streamable_http", "sse", "stdio"] as const)(
    "plain JSON-RPC → upstream %s: single calls, batches and introspection",
    async (upstream) => {
      const url = `${stack.dataPlanes[0]!.url}/servers/${servers[upstream]}/rpc`;
      const post = async (body: unknown) => {
        const res = await fetch(url, {
          method: "POST",
          headers: { authorization: `Bearer ${api.token}`, "content-type": "application/json" },
          body: JSON.stringify(body),
        });
        return { status: res.status, body: res.status === 202 ? undefined : await res.json() };
      };
      const init = await post({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: {
          protocolVersion: "2025-11-25",
          capabilities: {},
          clientInfo: { name: "rpc", version: "1" },
        },
      });
      expect(init.body).toMatchObject({
        id: 1,
        result: { serverInfo: { name: expect.stringMatching(/everything/i) } },
      });
      const call = await post({
        jsonrpc: "2.0",
        id: "a",
        method: "tools/call",
        params: { name: "get-sum", arguments: { a: 2, b: 3 } },
      });
      expect(JSON.stringify(call.body)).toContain("5");
      expect((call.body as { id: string }).id).toBe("a");
      const batch = await post([
        { jsonrpc: "2.0", id: 10, method: "tools/list" },
        { jsonrpc: "2.0", method: "notifications/roots/list_changed" },
        {
          jsonrpc: "2.0",
          id: 11,
          method: "tools/call",
          params: { name: "echo", arguments: { message: "batched" } },
        },
        { not: "json-rpc" },
      ]);
      const answers = batch.body as Array<{ id: unknown; result?: unknown; error?: { code: number } }>;
      expect(answers.map((a) => a.id)).toEqual([10, 11, null]);
      expect(JSON.stringify(answers[1])).toContain("batched");
      expect(answers[2]!.error!.code).toBe(-32600);
      expect((await post({ jsonrpc: "2.0", method: "notifications/initialized" })).status).toBe(202);
      const intro = await fetch(`${url}/introspection`, {
        headers: { authorization: `Bearer ${api.token}` },
      });
      const listing = (await intro.json()) as { methods: string[]; tools: string[] };
      expect(listing.methods).toContain("tools/call");
      expect(listing.tools).toContain("echo");
    },
    30_000,
  );

  it.each(["stdio", "sse", "streamable_http"] as const)(
    "translates a stateless 2026-07-28 client for a session-based %s upstream",
    async (upstream) => {
      const post = async (method: string, params: Record<string, unknown>, id: number) => {
        const res = await statelessPost(
          `${stack.dataPlanes[0]!.url}/servers/${servers[upstream]}/mcp`,
          { authorization: `Bearer ${api.token}` },
          { id, method, params },
        );
        expect(res.headers.get("mcp-session-id")).toBeNull();
        return (await res.json()) as { id: number; result?: Record<string, unknown>; error?: unknown };
      };
      const discover = await post("server/discover", {}, 1);
      expect(discover.result).toMatchObject({
        resultType: "complete",
        supportedVersions: ["2026-07-28"],
        capabilities: { tools: expect.any(Object) },
      });
      expect(JSON.stringify(discover.result?._meta)).toMatch(/everything/i);
      const sum = await post("tools/call", { name: "get-sum", arguments: { a: 4, b: 5 } }, 2);
      expect(sum.result?.resultType).toBe("complete");
      expect(JSON.stringify(sum.result)).toContain("9");
      // Again (for Streamable HTTP upstreams the gateway now knows to translate straight away).
      const again = await post("tools/call", { name: "get-sum", arguments: { a: 1, b: 1 } }, 3);
      expect(JSON.stringify(again.result)).toContain("2");
    },
  );

  it("answers bad input on every transport with JSON-RPC errors and stays up", async () => {
    const base = `${stack.dataPlanes[0]!.url}/servers/${servers.stdio}`;
    const auth = { authorization: `Bearer ${api.token}` };
    const rpcBad = await fetch(`${base}/rpc`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: "{nope",
    });
    expect(rpcBad.status).toBe(400);
    expect(((await rpcBad.json()) as { error: { code: number } }).error.code).toBe(-32700);
    const unknownSse = await fetch(`${base}/message?sessionId=missing`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: "{}",
    });
    expect(unknownSse.status).toBe(404);
    const unknownSession = await fetch(`${base}/mcp`, {
      method: "POST",
      headers: {
        ...auth,
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        "mcp-session-id": "s1.dp0.missing",
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
    });
    expect(unknownSession.status).toBe(404);
    // WebSocket: a malformed frame and a non-JSON-RPC frame each get an error; the socket stays open.
    const ws = new NodeWebSocket(`${base.replace(/^http/, "ws")}/ws`, "mcp", { headers: auth });
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    const replies: Array<{ error?: { code: number } }> = [];
    ws.on("message", (d) => replies.push(JSON.parse(d.toString())));
    ws.send("{not json");
    ws.send(JSON.stringify({ hello: "world" }));
    await expect.poll(() => replies.map((r) => r.error?.code)).toEqual([-32700, -32600]);
    expect(ws.readyState).toBe(ws.OPEN);
    ws.close();
    // Without a credential the socket opens for one in its first message; anything else ends it.
    const noAuth = new NodeWebSocket(`${base.replace(/^http/, "ws")}/ws`, "mcp");
    noAuth.once("open", () => noAuth.send(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" })));
    const code = await new Promise<number>((resolve) => {
      noAuth.once("close", (closeCode) => resolve(closeCode));
      noAuth.once("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
    });
    expect(code).toBe(4401);
    expect((await fetch(`${stack.dataPlanes[0]!.url}/health`)).status).toBe(200);
  });
});
