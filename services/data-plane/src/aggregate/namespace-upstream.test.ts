import type { NamespaceEntry, ServerEntry } from "@mcpgw/snapshot";
import { createLogger } from "@mcpgw/telemetry";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import { completable } from "@modelcontextprotocol/sdk/server/completable.js";
import { McpServer, ResourceTemplate } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { afterEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { type Member, NamespaceUpstream } from "./namespace-upstream.ts";

/** A member MCP server: the same resource URI and template as every other, plus its own. */
function memberServer(name: string, o: { logging?: boolean; completions?: boolean } = {}) {
  const server = new McpServer(
    { name, version: "1" },
    { capabilities: { ...(o.logging ? { logging: {} } : {}) } },
  );
  server.registerResource("readme", "docs://readme", { mimeType: "text/plain" }, async (uri) => ({
    contents: [{ uri: uri.href, text: `readme of ${name}` }],
  }));
  server.registerResource(
    "item",
    new ResourceTemplate("items://{id}", {
      list: undefined,
      complete: o.completions
        ? { id: (v) => ["1", "2", "3"].filter((x) => x.startsWith(v)).map((x) => `${name}-${x}`) }
        : undefined,
    }),
    { mimeType: "text/plain" },
    async (uri, { id }) => ({ contents: [{ uri: uri.href, text: `item ${String(id)} of ${name}` }] }),
  );
  if (o.completions)
    server.registerPrompt(
      "greet",
      { argsSchema: { who: completable(z.string(), (v) => ["ada", "alan"].filter((x) => x.startsWith(v))) } },
      ({ who }) => ({ messages: [{ role: "user", content: { type: "text", text: `hi ${who}` } }] }),
    );
  return server;
}

const logger = createLogger("test", "silent");
const open: Array<{ close(): Promise<unknown> }> = [];
afterEach(async () => {
  for (const o of open.splice(0)) await o.close().catch(() => {});
});

/** An aggregate of `servers` in a namespace with the given naming, and an SDK client on it. */
async function namespaceClient(tool_naming: "prefix" | "none", servers: Record<string, McpServer>) {
  const namespace = {
    id: "ns1",
    slug: "team",
    name: "Team",
    tool_naming,
    tool_separator: "__",
  } as NamespaceEntry;
  const members: Member[] = Object.keys(servers).map((name) => ({
    server: { id: `id-${name}`, name, namespace_id: "ns1", timeout_ms: 5_000 } as ServerEntry,
    guards: {},
  }));
  const aggregate = new NamespaceUpstream({
    namespace,
    members,
    connect: async (server): Promise<Transport> => {
      const [client, member] = InMemoryTransport.createLinkedPair();
      await servers[server.name]!.connect(member);
      return client;
    },
    memberTimeoutMs: 2_000,
    logger,
  });
  const client = new Client({ name: "ns-test", version: "1" });
  await client.connect(aggregate);
  open.push(client, ...Object.values(servers));
  return client;
}

describe("namespace aggregate: resources, templates, completions and logging", () => {
  it("prefixes resource URIs and templates, and reads template-derived URIs from their member", async () => {
    const client = await namespaceClient("prefix", {
      alpha: memberServer("alpha"),
      beta: memberServer("beta"),
    });
    const { resources } = await client.listResources();
    expect(resources.map((r) => r.uri).sort()).toEqual(["alpha__docs://readme", "beta__docs://readme"]);
    expect(resources.map((r) => r.name).sort()).toEqual(["alpha__readme", "beta__readme"]);
    const { resourceTemplates } = await client.listResourceTemplates();
    expect(resourceTemplates.map((t) => t.uriTemplate).sort()).toEqual([
      "alpha__items://{id}",
      "beta__items://{id}",
    ]);

    const read = await client.readResource({ uri: "beta__docs://readme" });
    expect(read.contents).toEqual([{ uri: "beta__docs://readme", text: "readme of beta" }]);
    // Expanded from a listed template, never listed itself.
    const item = await client.readResource({ uri: "alpha__items://7" });
    expect(item.contents).toEqual([{ uri: "alpha__items://7", text: "item 7 of alpha" }]);
    await expect(client.readResource({ uri: "docs://readme" })).rejects.toThrow(
      /no server of namespace 'team'/,
    );
  });

  it("unprefixed: a URI two members offer goes to the first and is a conflict; templates route too", async () => {
    const alpha = memberServer("alpha");
    const beta = memberServer("beta");
    const client = await namespaceClient("none", { alpha, beta });
    const { resources } = await client.listResources();
    expect(resources.map((r) => r.uri)).toEqual(["docs://readme"]);
    expect((await client.readResource({ uri: "docs://readme" })).contents[0]).toMatchObject({
      text: "readme of alpha",
    });
    // Without listing first: the aggregate reads the lists itself to find the template's member.
    expect((await client.readResource({ uri: "items://9" })).contents[0]).toMatchObject({
      text: "item 9 of alpha",
    });
  });

  it("routes completion/complete by the prompt or template it names, under the member's own name", async () => {
    const client = await namespaceClient("prefix", {
      alpha: memberServer("alpha"),
      beta: memberServer("beta", { completions: true }),
    });
    expect(client.getServerCapabilities()?.completions).toEqual({});
    await client.listPrompts();
    const prompt = await client.complete({
      ref: { type: "ref/prompt", name: "beta__greet" },
      argument: { name: "who", value: "a" },
    });
    expect(prompt.completion.values).toEqual(["ada", "alan"]);
    const template = await client.complete({
      ref: { type: "ref/resource", uri: "beta__items://{id}" },
      argument: { name: "id", value: "" },
    });
    expect(template.completion.values).toEqual(["beta-1", "beta-2", "beta-3"]);
    await expect(
      client.complete({
        ref: { type: "ref/prompt", name: "nobody__greet" },
        argument: { name: "who", value: "" },
      }),
    ).rejects.toThrow(/unknown prompt/);
  });

  it("fans logging/setLevel out to the members that log, and advertises only what members serve", async () => {
    const quiet = await namespaceClient("prefix", { alpha: memberServer("alpha") });
    expect(quiet.getServerCapabilities()?.logging).toBeUndefined();
    expect(quiet.getServerCapabilities()?.completions).toBeUndefined();

    const loud = memberServer("beta", { logging: true });
    const client = await namespaceClient("prefix", { alpha: memberServer("alpha"), beta: loud });
    expect(client.getServerCapabilities()?.logging).toEqual({});
    const logged: unknown[] = [];
    client.setNotificationHandler(
      (await import("@modelcontextprotocol/sdk/types.js")).LoggingMessageNotificationSchema,
      (n) => {
        logged.push(n.params.data);
      },
    );
    await client.setLoggingLevel("error");
    // The member now filters by the level the client set through the namespace.
    await loud.sendLoggingMessage({ level: "info", data: "dropped" });
    await loud.sendLoggingMessage({ level: "error", data: "kept" });
    await expect.poll(() => logged).toEqual(["kept"]);
  });
});
