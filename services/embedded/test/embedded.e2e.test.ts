import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  eventually,
  freePort,
  login,
  type ManagedProcess,
  startTestUpstream,
  startTsService,
  type TestUpstream,
  waitForReady,
} from "../../../packages/testing/src/index.ts";

describe("embedded mode: one process, PGlite, in-process bus and jobs, no external services", () => {
  let dataDir: string;
  let proc: ManagedProcess;
  let upstream: TestUpstream;
  let dpPort: number;
  let cpPort: number;
  let env: Record<string, string>;
  let password: string;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "mcpgw-embedded-"));
    [dpPort, cpPort, upstream] = await Promise.all([freePort(), freePort(), startTestUpstream()]);
    // No DATABASE_URL, REDIS_URL or NATS_URL: embedded mode must not need them.
    env = {
      MCPGW_DATA_DIR: dataDir,
      DP_PORT: String(dpPort),
      CP_PORT: String(cpPort),
      DATABASE_URL: "",
      REDIS_URL: "",
      NATS_URL: "",
    };
    proc = startTsService("services/embedded/src/main.ts", env);
    await waitForReady(`http://127.0.0.1:${cpPort}/ready`, proc, 60_000);
    await waitForReady(`http://127.0.0.1:${dpPort}/ready`, proc, 10_000);
  }, 90_000);

  afterAll(async () => {
    await proc?.stop();
    await upstream?.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it("creates an admin on first start and prints its generated password once", async () => {
    const match = /created admin (\S+) with password (\S+)/.exec(proc.output());
    expect(match).not.toBeNull();
    password = match![2]!;
    expect(password.length).toBeGreaterThanOrEqual(20);
    expect((await stat(join(dataDir, "keys.json"))).mode & 0o077).toBe(0);
  });

  it("runs the same SDK client flow as the distributed mode", async () => {
    const api = await login(`http://127.0.0.1:${cpPort}`, "admin@mcpgw.local", password);
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", { name: "Local", slug: "local" });
    const server = await api.call<{ id: string }>("POST", "/api/v1/servers", {
      namespace_id: ns.body.id,
      name: "local-upstream",
      transport: "streamable_http",
      url: upstream.url,
    });
    expect(server.status).toBe(201);
    const connect = async () => {
      const c = new Client({ name: "embedded-e2e", version: "1.0.0" });
      const transport = new StreamableHTTPClientTransport(
        new URL(`http://127.0.0.1:${dpPort}/servers/${server.body.id}/mcp`),
        {
          requestInit: { headers: { authorization: `Bearer ${api.token}` } },
        },
      );
      await c.connect(transport);
      return c;
    };
    // The snapshot reaches the in-process data plane a few milliseconds after the commit.
    const client = await eventually(connect, 3000);
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name)).toContain("add");
    expect((await client.callTool({ name: "add", arguments: { a: 20, b: 22 } })).content).toEqual([
      { type: "text", text: "42" },
    ]);
    await client.close();
    // The in-process worker checks the new server's health.
    await eventually(
      async () =>
        (await api.call<{ status: string }>("GET", `/api/v1/servers/${server.body.id}`)).body.status ===
        "healthy",
      20_000,
    );
  }, 40_000);

  it("keeps its data across a restart and does not print credentials again", async () => {
    await proc.stop();
    expect(proc.child.exitCode).toBe(0);
    proc = startTsService("services/embedded/src/main.ts", env);
    await waitForReady(`http://127.0.0.1:${dpPort}/ready`, proc, 60_000);
    const api = await login(`http://127.0.0.1:${cpPort}`, "admin@mcpgw.local", password);
    const servers = await api.call<{ items: Array<{ name: string }> }>("GET", "/api/v1/servers");
    expect(servers.body.items.map((s) => s.name)).toEqual(["local-upstream"]);
    expect(proc.output()).not.toContain("created admin");
  }, 90_000);
});
