import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { ServerEntry } from "@mcpgw/snapshot";
import { createLogger } from "@mcpgw/telemetry";
import { startTestUpstream, type TestUpstream } from "@mcpgw/testing";
import type { UpstreamCredentials } from "@mcpgw/upstream-credentials";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { SSEServerTransport } from "@modelcontextprotocol/sdk/server/sse.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { type ConnectDeps, connectUpstream } from "./connect.ts";
import { UpstreamPools } from "./pools.ts";
import { UpstreamRevisions } from "./stateless-upstream.ts";
import type { StdioProcessManager } from "./stdio-processes.ts";

const owner = { orgId: "org_test", principalId: "p", platformOrg: false };

/** A loopback URL nothing listens on: connecting to it is refused. */
async function refusedUrl(path: string): Promise<string> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return `http://127.0.0.1:${port}${path}`;
}

/** A legacy HTTP+SSE MCP server (SDK) on loopback. */
async function startSseUpstream(): Promise<{ url: string; close: () => Promise<void> }> {
  const transports = new Map<string, SSEServerTransport>();
  const http: Server = createServer(async (req, res) => {
    if (req.method === "GET" && req.url === "/sse") {
      const t = new SSEServerTransport("/messages", res);
      transports.set(t.sessionId, t);
      await new McpServer({ name: "sse-upstream", version: "1.0.0" }).connect(t);
      return;
    }
    const id = new URL(req.url ?? "/", "http://x").searchParams.get("sessionId") ?? "";
    const t = transports.get(id);
    if (req.method === "POST" && t) return t.handlePostMessage(req, res);
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => http.listen(0, "127.0.0.1", r));
  const { port } = http.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/sse`,
    close: async () => {
      http.closeAllConnections();
      await new Promise<void>((r) => http.close(() => r()));
    },
  };
}

function server(transport: ServerEntry["transport"], urls: string[], retries: number): ServerEntry {
  return {
    id: `srv_${Math.random().toString(36).slice(2)}`,
    namespace_id: "ns_test",
    name: "failover",
    transport,
    enabled: true,
    endpoints: urls.map((url) => ({ url, weight: 1 })),
    stdio: null,
    timeout_ms: 5000,
    connect_timeout_ms: 1000,
    retries,
    credentials_sealed: null,
  };
}

/** Sends `initialize` and waits for its answer. */
async function initialize(t: Transport): Promise<JSONRPCMessage> {
  const answered = new Promise<JSONRPCMessage>((resolve) => {
    t.onmessage = (m) => resolve(m);
  });
  await t.send({
    jsonrpc: "2.0",
    id: 1,
    method: "initialize",
    params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "t", version: "1" } },
  });
  return answered;
}

describe("connectUpstream endpoint failover", () => {
  const pools = new UpstreamPools(8, true);
  const deps: ConnectDeps = {
    stdio: {} as StdioProcessManager,
    credentials: { headersFor: async () => undefined } as unknown as UpstreamCredentials,
    revisions: new UpstreamRevisions(),
    pools,
    logger: createLogger("connect-test", "silent"),
  };
  let live: TestUpstream;
  const opened: Transport[] = [];

  beforeAll(async () => {
    live = await startTestUpstream();
  });
  afterEach(async () => {
    vi.restoreAllMocks();
    for (const t of opened.splice(0)) await t.close().catch(() => {});
  });
  afterAll(async () => {
    await live.close();
    await pools.close();
  });

  async function connect(entry: ServerEntry): Promise<Transport> {
    const t = await connectUpstream(entry, "sess", deps, owner);
    opened.push(t);
    return t;
  }

  it("moves a Streamable HTTP session to the next endpoint when the first refuses the connection", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0); // the weighted pick: the first endpoint
    const t = await connect(server("streamable_http", [await refusedUrl("/mcp"), live.url], 1));
    const answer = (await initialize(t)) as { result?: { serverInfo?: { name?: string } } };
    expect(answer.result?.serverInfo?.name).toBe("mcpgw-test-upstream");
    expect(t.sessionId).toBeTruthy();
  });

  it("does not fail over when the server allows no retries", async () => {
    vi.spyOn(Math, "random").mockReturnValue(0);
    const t = await connect(server("streamable_http", [await refusedUrl("/mcp"), live.url], 0));
    const before = live.received.length;
    await expect(initialize(t)).rejects.toThrow();
    expect(live.received.length).toBe(before);
  });

  it("never repeats a message on another endpoint once one went through", async () => {
    const first = await startTestUpstream();
    const second = await startTestUpstream();
    try {
      vi.spyOn(Math, "random").mockReturnValue(0);
      const t = await connect(server("streamable_http", [first.url, second.url], 3));
      await initialize(t);
      await first.close(); // the upstream session's endpoint goes away
      await expect(
        t.send({ jsonrpc: "2.0", id: 2, method: "tools/list", params: {} } as JSONRPCMessage),
      ).rejects.toThrow();
      expect(second.received).toEqual([]);
    } finally {
      await second.close();
    }
  });

  it("moves a legacy SSE connection to the next endpoint when start() fails", async () => {
    const sse = await startSseUpstream();
    try {
      vi.spyOn(Math, "random").mockReturnValue(0);
      const t = await connect(server("sse", [await refusedUrl("/sse"), sse.url], 1));
      const answer = (await initialize(t)) as { result?: { serverInfo?: { name?: string } } };
      expect(answer.result?.serverInfo?.name).toBe("sse-upstream");
    } finally {
      await sse.close();
    }
  });

  it("fails with the last error when no endpoint starts", async () => {
    await expect(
      connectUpstream(
        server("sse", [await refusedUrl("/sse"), await refusedUrl("/sse")], 3),
        "sess",
        deps,
        owner,
      ),
    ).rejects.toThrow();
  });
});
