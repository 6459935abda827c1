import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  everythingEntry,
  registerStdioServer,
  type Stack,
  startStack,
  startTestUpstream,
  type TestUpstream,
} from "../../../packages/testing/src/index.ts";

const MEMBER_TIMEOUT_MS = 1500;

describe("namespace endpoints aggregate every server of a namespace", () => {
  let stack: Stack;
  let api: Api;
  let alpha: TestUpstream;
  let beta: TestUpstream;
  let team: string;
  let flat: string;

  const connect = async (
    path: string,
    headers: Record<string, string> = { authorization: `Bearer ${api.token}` },
  ) => {
    const client = new Client({ name: "ns-e2e", version: "1.0.0" });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${stack.dataPlanes[0]!.url}${path}`), {
        requestInit: { headers },
      }),
    );
    return client;
  };

  beforeAll(async () => {
    [stack, alpha, beta] = await Promise.all([
      startStack({
        replicas: 1,
        worker: true,
        env: {
          MCPGW_AGGREGATE_MEMBER_TIMEOUT_MS: String(MEMBER_TIMEOUT_MS),
          MCPGW_STDIO_ALLOWED_COMMANDS: process.execPath,
        },
      }),
      startTestUpstream(),
      startTestUpstream(),
    ]);
    api = await stack.api();
    team = (await api.call<{ id: string }>("POST", "/api/v1/namespaces", { name: "Team", slug: "team" })).body
      .id;
    flat = (
      await api.call<{ id: string }>("POST", "/api/v1/namespaces", {
        name: "Flat",
        slug: "flat",
        tool_naming: "none",
      })
    ).body.id;
    const add = async (namespace_id: string, name: string, body: Record<string, unknown>) => {
      const res = await api.call("POST", "/api/v1/servers", { namespace_id, name, ...body });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
    };
    await add(team, "alpha", { transport: "streamable_http", url: alpha.url });
    await add(team, "beta", { transport: "streamable_http", url: beta.url });
    await registerStdioServer(api, {
      namespace_id: team,
      name: "gamma",
      command: process.execPath,
      args: [everythingEntry, "stdio"],
    });
    await add(flat, "alpha", { transport: "streamable_http", url: alpha.url });
    await add(flat, "beta", { transport: "streamable_http", url: beta.url });
    await new Promise((r) => setTimeout(r, 500));
  }, 90_000);

  afterAll(async () => {
    await Promise.all([stack?.stop(), alpha?.close(), beta?.close()]);
  });

  it("lists every member's tools under qualified names and routes calls to the right server", async () => {
    const client = await connect("/ns/team/mcp");
    expect(client.getServerVersion()?.name).toBe("mcpgw/team");
    const names = (await client.listTools()).tools.map((t) => t.name);
    expect(names).toEqual(
      expect.arrayContaining(["alpha__echo", "beta__echo", "alpha__add", "gamma__echo", "gamma__get-sum"]),
    );
    alpha.received.length = 0;
    beta.received.length = 0;
    expect((await client.callTool({ name: "alpha__echo", arguments: { text: "to alpha" } })).content).toEqual(
      [{ type: "text", text: "to alpha" }],
    );
    expect(alpha.received.length).toBeGreaterThan(0);
    expect(beta.received.filter((r) => r.method === "POST").length).toBe(0);
    expect((await client.callTool({ name: "beta__echo", arguments: { text: "to beta" } })).content).toEqual([
      { type: "text", text: "to beta" },
    ]);
    expect(
      JSON.stringify((await client.callTool({ name: "gamma__get-sum", arguments: { a: 2, b: 3 } })).content),
    ).toContain("5");
    const unknown = await client
      .callTool({ name: "delta__echo", arguments: {} })
      .catch((e: { code?: number }) => e);
    expect((unknown as { code?: number }).code).toBe(-32602);
    // Prompts and resources of members come through too.
    const prompts = (await client.listPrompts()).prompts.map((p) => p.name);
    expect(prompts).toContain("gamma__simple-prompt");
    expect((await client.getPrompt({ name: "gamma__simple-prompt" })).messages.length).toBeGreaterThan(0);
    const { resources } = await client.listResources();
    expect(resources.length).toBeGreaterThan(0);
    expect((await client.readResource({ uri: resources[0]!.uri })).contents.length).toBeGreaterThan(0);
    // Progress of a member's long call reaches the client.
    const progress: number[] = [];
    await client.callTool({ name: "alpha__count_with_progress", arguments: { steps: 3 } }, undefined, {
      onprogress: (p) => progress.push(p.progress),
    });
    expect(progress).toEqual([1, 2, 3]);
    await client.close();
  });

  it("reports one owner per name in an unprefixed namespace", async () => {
    const client = await connect("/ns/flat/mcp");
    const names = (await client.listTools()).tools.map((t) => t.name);
    expect(names.filter((n) => n === "echo")).toHaveLength(1);
    expect((await client.callTool({ name: "add", arguments: { a: 1, b: 2 } })).content).toEqual([
      { type: "text", text: "3" },
    ]);
    await client.close();
    // The names hidden by the conflict are reported.
    const report = await fetch(`${stack.dataPlanes[0]!.url}/ns/flat/conflicts`, {
      headers: { authorization: `Bearer ${api.token}` },
    });
    const body = (await report.json()) as {
      conflicts: Array<{ kind: string; name: string; servers: string[] }>;
    };
    expect(body.conflicts).toContainEqual({
      kind: "tools",
      name: "echo",
      servers: expect.arrayContaining(["alpha", "beta"]),
    });
    expect(body.conflicts.every((c) => c.servers.length === 2)).toBe(true);
  });

  it("serves the caller's default namespace at /mcp for a key scoped to it, and JSON-RPC at /ns/{slug}/rpc", async () => {
    const key = await api.call<{ key: string }>("POST", "/auth/api-keys", {
      name: "team-key",
      namespace_id: team,
    });
    await new Promise((r) => setTimeout(r, 500));
    const client = await connect("/mcp", { "x-api-key": key.body.key });
    expect(client.getServerVersion()?.name).toBe("mcpgw/team");
    await client.close();
    const other = await fetch(`${stack.dataPlanes[0]!.url}/ns/flat/rpc`, {
      method: "POST",
      headers: { "x-api-key": key.body.key, "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
    });
    expect(other.status).toBe(403);
    const rpc = await fetch(`${stack.dataPlanes[0]!.url}/ns/team/rpc`, {
      method: "POST",
      headers: { authorization: `Bearer ${api.token}`, "content-type": "application/json" },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 2,
        method: "tools/call",
        params: { name: "beta__add", arguments: { a: 20, b: 22 } },
      }),
    });
    expect(await rpc.json()).toMatchObject({ id: 2, result: { content: [{ type: "text", text: "42" }] } });
    const unknownNs = await fetch(`${stack.dataPlanes[0]!.url}/ns/nope/rpc`, {
      method: "POST",
      headers: { authorization: `Bearer ${api.token}`, "content-type": "application/json" },
      body: "{}",
    });
    expect(unknownNs.status).toBe(404);
  });

  it("records sessions through the worker for GET /api/v1/namespaces/{id}/sessions", async () => {
    const transport = new StreamableHTTPClientTransport(new URL(`${stack.dataPlanes[0]!.url}/ns/team/mcp`), {
      requestInit: { headers: { authorization: `Bearer ${api.token}` } },
    });
    const client = new Client({ name: "session-record", version: "1.0.0" });
    await client.connect(transport);
    const sessionId = transport.sessionId!;
    await expect
      .poll(
        async () =>
          (
            await api.call<{ items: Array<{ session_id: string; status: string }> }>(
              "GET",
              `/api/v1/namespaces/${team}/sessions`,
            )
          ).body.items.find((s) => s.session_id === sessionId)?.status,
        { timeout: 10_000 },
      )
      .toBe("active");
    await transport.terminateSession();
    await client.close();
    await expect
      .poll(
        async () =>
          (
            await api.call<{
              items: Array<{ session_id: string; status: string; ended_at: string | null; replica: string }>;
            }>("GET", `/api/v1/namespaces/${team}/sessions?status=ended`)
          ).body.items.find((s) => s.session_id === sessionId),
        { timeout: 10_000 },
      )
      .toMatchObject({ status: "ended", replica: "dp0", ended_at: expect.any(String) });
    const servers = await api.call<{ items: Array<{ name: string }> }>(
      "GET",
      `/api/v1/namespaces/${team}/servers`,
    );
    expect(servers.body.items.map((s) => s.name).sort()).toEqual(["alpha", "beta", "gamma"]);
  });

  it("still answers a list within the member timeout when one upstream is down", async () => {
    await beta.close();
    const started = Date.now();
    const client = await connect("/ns/team/mcp");
    const names = (await client.listTools()).tools.map((t) => t.name);
    expect(Date.now() - started).toBeLessThan(MEMBER_TIMEOUT_MS * 2 + 2000);
    expect(names).toEqual(expect.arrayContaining(["alpha__echo", "gamma__echo"]));
    expect(names.some((n) => n.startsWith("beta__"))).toBe(false);
    expect(
      (await client.callTool({ name: "alpha__echo", arguments: { text: "still here" } })).content,
    ).toEqual([{ type: "text", text: "still here" }]);
    await client.close();
    expect(stack.dataPlanes[0]!.proc.output()).toMatch(
      /namespace member (unavailable|did not initialize|timed out)/,
    );
  });
});
