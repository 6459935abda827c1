/**
 * The stdio suite's MCP server: the SDK's low-level `Server` over `StdioServerTransport`, with one
 * tool, `add`, returning a + b as text. Plain JavaScript (no tsx loader) so that every child the
 * gateways start costs only Node and the SDK: `node bench/stdio-server.mjs`.
 */
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { CallToolRequestSchema, ListToolsRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const server = new Server({ name: "mcpgw-bench-stdio", version: "1.0.0" }, { capabilities: { tools: {} } });

server.setRequestHandler(ListToolsRequestSchema, async () => ({
  tools: [
    {
      name: "add",
      description: "Adds two numbers",
      inputSchema: {
        type: "object",
        properties: { a: { type: "number" }, b: { type: "number" } },
        required: ["a", "b"],
      },
    },
  ],
}));

server.setRequestHandler(CallToolRequestSchema, async (request) => {
  const { name, arguments: args = {} } = request.params;
  if (name !== "add") return { isError: true, content: [{ type: "text", text: `unknown tool ${name}` }] };
  return { content: [{ type: "text", text: String(Number(args.a) + Number(args.b)) }] };
});

await server.connect(new StdioServerTransport());
// Exit with the parent: stdin closes when the gateway ends the session or goes away.
process.stdin.on("end", () => process.exit(0));
process.on("SIGTERM", () => process.exit(0));
