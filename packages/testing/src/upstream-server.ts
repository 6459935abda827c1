import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";

export interface TestUpstream {
  url: string;
  port: number;
  /** Requests received, with their headers, so tests can check what the gateway forwarded. */
  received: Array<{ method: string; headers: IncomingMessage["headers"] }>;
  sessions(): number;
  close(): Promise<void>;
}

/** Gates held open by the `hold` tool until the test releases them. */
const gates = new Map<string, () => void>();

/** Lets a `hold` tool call with this `gate` finish. */
export function releaseGate(gate: string): void {
  gates.get(gate)?.();
  gates.delete(gate);
}

function buildServer(): McpServer {
  const server = new McpServer({ name: "mcpgw-test-upstream", version: "1.0.0" });
  server.registerTool(
    "echo",
    { description: "Echoes its input", inputSchema: { text: z.string() } },
    async ({ text }) => ({
      content: [{ type: "text", text }],
    }),
  );
  server.registerTool(
    "add",
    { description: "Adds two numbers", inputSchema: { a: z.number(), b: z.number() } },
    async ({ a, b }) => ({
      content: [{ type: "text", text: String(a + b) }],
    }),
  );
  server.registerTool(
    "count_with_progress",
    {
      description: "Sends a progress notification per step",
      inputSchema: { steps: z.number().int().min(1).max(50) },
    },
    async ({ steps }, extra) => {
      const token = extra._meta?.progressToken;
      for (let i = 1; i <= steps; i++) {
        if (token !== undefined) {
          await extra.sendNotification({
            method: "notifications/progress",
            params: { progressToken: token, progress: i, total: steps },
          });
        }
        await new Promise((r) => setTimeout(r, 10));
      }
      return { content: [{ type: "text", text: `counted ${steps}` }] };
    },
  );
  server.registerTool(
    "hold",
    {
      description: "Sends one progress notification, then waits until the test releases the gate",
      inputSchema: { gate: z.string() },
    },
    async ({ gate }, extra) => {
      const token = extra._meta?.progressToken;
      const released = new Promise<void>((resolve) => gates.set(gate, resolve));
      if (token !== undefined) {
        await extra.sendNotification({
          method: "notifications/progress",
          params: { progressToken: token, progress: 1, total: 2 },
        });
      }
      await released;
      return { content: [{ type: "text", text: `released ${gate}` }] };
    },
  );
  server.registerTool(
    "sleep",
    { description: "Waits", inputSchema: { ms: z.number().int().min(0).max(60_000) } },
    async ({ ms }) => {
      await new Promise((r) => setTimeout(r, ms));
      return { content: [{ type: "text", text: `slept ${ms}` }] };
    },
  );
  return server;
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : undefined;
}

/**
 * An MCP server built with the official SDK, over Streamable HTTP with sessions, on a loopback
 * port (fixed when `port` is given, so it can be stopped and started again at the same URL).
 */
export async function startTestUpstream(port = 0): Promise<TestUpstream> {
  const transports = new Map<string, StreamableHTTPServerTransport>();
  const received: TestUpstream["received"] = [];
  const http: Server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    received.push({ method: req.method ?? "", headers: req.headers });
    if (!req.url?.startsWith("/mcp")) {
      res.writeHead(404).end();
      return;
    }
    try {
      const sessionId = req.headers["mcp-session-id"] as string | undefined;
      const body = req.method === "POST" ? await readJson(req) : undefined;
      let transport = sessionId ? transports.get(sessionId) : undefined;
      if (!transport) {
        if (sessionId || req.method !== "POST") {
          res.writeHead(404, { "content-type": "application/json" });
          res.end(
            JSON.stringify({
              jsonrpc: "2.0",
              id: null,
              error: { code: -32001, message: "Session not found" },
            }),
          );
          return;
        }
        const t = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          onsessioninitialized: (id) => {
            transports.set(id, t);
          },
        });
        t.onclose = () => {
          if (t.sessionId) transports.delete(t.sessionId);
        };
        await buildServer().connect(t);
        transport = t;
      }
      await transport.handleRequest(req, res, body);
    } catch (err) {
      if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
      res.end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32603, message: String(err) } }));
    }
  });
  http.listen(port, "127.0.0.1");
  await new Promise<void>((resolve, reject) => {
    http.once("listening", resolve);
    http.once("error", reject);
  });
  const actual = (http.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${actual}/mcp`,
    port: actual,
    received,
    sessions: () => transports.size,
    close: async () => {
      for (const t of transports.values()) await t.close().catch(() => {});
      http.closeAllConnections();
      await new Promise<void>((r) => http.close(() => r()));
    },
  };
}
