import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { toNodeHandler } from "@modelcontextprotocol/node";
import { acceptedContent, createMcpHandler, inputRequired, McpServer } from "@modelcontextprotocol/server";
import * as z from "zod";

export { Client as V2Client } from "@modelcontextprotocol/client";

/** An upstream built with the v2 SDK, speaking the stateless 2026-07-28 revision. */
export interface V2Upstream {
  url: string;
  /** Request headers the upstream received, newest last. */
  received: IncomingHttpHeaders[];
  /** Publishes `notifications/tools/list_changed` to open `subscriptions/listen` streams. */
  toolsChanged(): void;
  close(): Promise<void>;
}

/**
 * Starts a v2-SDK MCP server: `echo`, and `deploy`, which asks its client for confirmation with
 * an `InputRequiredResult` (elicitation) before it answers. `legacy: "reject"` makes it refuse
 * 2025-era clients (a stateless-only upstream); `"stateless"` serves them one request at a time.
 */
export async function startV2Upstream(legacy: "stateless" | "reject" = "reject"): Promise<V2Upstream> {
  const handler = createMcpHandler(
    () => {
      const server = new McpServer({ name: "v2-upstream", version: "2.0.0" });
      server.registerTool("echo", { inputSchema: z.object({ text: z.string() }) }, async ({ text }) => ({
        content: [{ type: "text", text: `v2 echo: ${text}` }],
      }));
      server.registerTool("deploy", { inputSchema: z.object({ env: z.string() }) }, async ({ env }, ctx) => {
        const schema = z.object({ confirm: z.boolean() });
        const answer = acceptedContent(ctx.mcpReq.inputResponses, "confirm", schema);
        if (answer === undefined)
          return inputRequired({
            inputRequests: {
              confirm: inputRequired.elicit({ message: `Deploy to ${env}?`, requestedSchema: schema }),
            },
          });
        return { content: [{ type: "text", text: answer.confirm ? `deployed to ${env}` : "cancelled" }] };
      });
      return server;
    },
    { legacy },
  );
  const received: IncomingHttpHeaders[] = [];
  const node = toNodeHandler(handler);
  const server = createServer((req, res) => {
    received.push(req.headers);
    void node(req, res);
  });
  server.listen(0, "127.0.0.1");
  await new Promise((r) => server.once("listening", r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    received,
    toolsChanged: () => handler.notify.toolsChanged(),
    async close() {
      if (!server.listening) return;
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await handler.close?.();
    },
  };
}

/**
 * A v2-SDK client that negotiates the newest revision both sides speak (2026-07-28 when the
 * gateway offers it) and answers elicitation and sampling requests.
 */
export async function connectV2Client(url: string, headers: Record<string, string>) {
  const client = new Client(
    { name: "v2-client", version: "2.0.0" },
    {
      capabilities: { elicitation: { form: {} }, sampling: {} },
      versionNegotiation: { mode: "auto" },
    },
  );
  const asked: string[] = [];
  client.setRequestHandler("elicitation/create", async (request) => {
    asked.push(`elicitation: ${request.params.message}`);
    // Fills the required fields: true for booleans, a name for strings, 1 for numbers.
    const schema = (
      request.params as {
        requestedSchema?: { properties?: Record<string, { type?: string }>; required?: string[] };
      }
    ).requestedSchema;
    const content: Record<string, string | number | boolean> = {};
    for (const key of schema?.required ?? []) {
      const type = schema?.properties?.[key]?.type;
      content[key] = type === "boolean" ? true : type === "string" ? "v2 tester" : 1;
    }
    return { action: "accept", content };
  });
  client.setRequestHandler("sampling/createMessage", async () => {
    asked.push("sampling");
    return { role: "assistant", content: { type: "text", text: "sampled by the v2 client" }, model: "m" };
  });
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
  await client.connect(transport);
  return { client, transport, asked };
}
