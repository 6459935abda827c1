import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  freePort,
  login,
  type ManagedProcess,
  registerStdioServer,
  type Stack,
  startStack,
  startTestUpstream,
  startTsService,
  type TestUpstream,
  waitForReady,
} from "../../../packages/testing/src/index.ts";

interface ConflictsReport {
  namespace_id: string;
  slug: string;
  tool_naming: string;
  tool_separator: string;
  conflicts: Array<{ kind: string; name: string; servers: string[] }>;
  unavailable: Array<{ server: string; reason: string }>;
  replica: string;
  snapshot_version: number;
}

/** A GET on the control plane, with the headers the assertions need. */
async function get(cpUrl: string, path: string, token?: string) {
  const started = Date.now();
  const res = await fetch(`${cpUrl}${path}`, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  return {
    status: res.status,
    type: res.headers.get("content-type") ?? "",
    retryAfter: res.headers.get("retry-after"),
    body: (await res.json()) as Record<string, unknown>,
    ms: Date.now() - started,
  };
}

/**
 * A JSON-only MCP server that takes `initializeMs` to initialize, and never answers `tools/list`
 * when `hangLists` is set: a slow member and one that stops answering after its handshake.
 */
async function startSluggishUpstream(o: { initializeMs: number; hangLists?: boolean }) {
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => {
      body += c;
    });
    req.on("end", () => {
      if (req.method !== "POST") return res.writeHead(405).end();
      const m = JSON.parse(body) as { id?: number | string; method: string };
      if (m.id === undefined) return res.writeHead(202).end();
      const answer = (result: unknown) => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ jsonrpc: "2.0", id: m.id, result }));
      };
      if (m.method === "initialize")
        return void setTimeout(
          () =>
            answer({
              protocolVersion: "2025-06-18",
              capabilities: { tools: {} },
              serverInfo: { name: "sluggish", version: "1" },
            }),
          o.initializeMs,
        );
      if (m.method === "tools/list") {
        if (o.hangLists) return; // never answers
        return answer({ tools: [{ name: "slow_tool", inputSchema: { type: "object" } }] });
      }
      answer({});
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}/mcp`,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A namespace holding two servers that both offer `echo` and `add`. */
async function flatNamespace(api: Api, slug: string, alpha: TestUpstream, beta: TestUpstream) {
  const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", {
    name: slug,
    slug,
    tool_naming: "none",
  });
  expect(ns.status, JSON.stringify(ns.body)).toBe(201);
  for (const [name, upstream] of [
    ["alpha", alpha],
    ["beta", beta],
  ] as const) {
    const res = await api.call("POST", "/api/v1/servers", {
      namespace_id: ns.body.id,
      name,
      transport: "streamable_http",
      url: upstream.url,
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
  }
  return ns.body.id;
}

describe("GET /api/v1/namespaces/{id}/conflicts asks a data plane over NATS", () => {
  let stack: Stack;
  let api: Api;
  let other: Api;
  let viewer: Api;
  let alpha: TestUpstream;
  let beta: TestUpstream;
  let flat: string;
  let team: string;
  let mixed: string;
  const sluggish: Array<{ close(): Promise<void> }> = [];

  beforeAll(async () => {
    const [slow, hanging] = await Promise.all([
      startSluggishUpstream({ initializeMs: 1_200 }),
      startSluggishUpstream({ initializeMs: 0, hangLists: true }),
    ]);
    sluggish.push(slow, hanging);
    [stack, alpha, beta] = await Promise.all([
      startStack({ replicas: 1, env: { MCPGW_STDIO_ALLOWED_COMMANDS: process.execPath } }),
      startTestUpstream(),
      startTestUpstream(),
    ]);
    api = await stack.api();
    flat = await flatNamespace(api, "flat", alpha, beta);
    // A member nothing listens for: reported as unavailable, the others still answer.
    const down = await api.call("POST", "/api/v1/servers", {
      namespace_id: flat,
      name: "down",
      transport: "streamable_http",
      url: `http://127.0.0.1:${await freePort()}/mcp`,
    });
    expect(down.status, JSON.stringify(down.body)).toBe(201);
    team = (await api.call<{ id: string }>("POST", "/api/v1/namespaces", { name: "Team", slug: "team" })).body
      .id;
    // Members that answer slowly, stop answering after initialize, or cannot start at all.
    mixed = (await api.call<{ id: string }>("POST", "/api/v1/namespaces", { name: "Mixed", slug: "mixed" }))
      .body.id;
    for (const [name, url] of [
      ["alpha", alpha.url],
      ["slow", slow.url],
      ["hanging", hanging.url],
    ] as const)
      await api.call("POST", "/api/v1/servers", {
        namespace_id: mixed,
        name,
        transport: "streamable_http",
        url,
      });
    await registerStdioServer(api, {
      namespace_id: mixed,
      name: "crashes",
      command: process.execPath,
      args: ["-e", "process.exit(3)"],
    });
    await registerStdioServer(api, { namespace_id: mixed, name: "refused", command: "/bin/false" });
    for (const [name, upstream] of [
      ["alpha", alpha],
      ["beta", beta],
    ] as const)
      await api.call("POST", "/api/v1/servers", {
        namespace_id: team,
        name,
        transport: "streamable_http",
        url: upstream.url,
      });
    await api.call("POST", "/api/v1/organizations", {
      name: "Elsewhere",
      slug: "elsewhere-conflicts",
      admin: { email: "conflicts-other@example.test", password: "other admin password" },
    });
    await api.call("POST", "/api/v1/users", {
      email: "conflicts-viewer@example.test",
      password: "viewer password long",
      role: "viewer",
    });
    [other, viewer] = await Promise.all([
      login(stack.cpUrl, "conflicts-other@example.test", "other admin password"),
      login(stack.cpUrl, "conflicts-viewer@example.test", "viewer password long"),
    ]);
  }, 90_000);

  afterAll(async () => {
    const dp = stack?.dataPlanes[0]?.proc.child;
    if (dp?.pid && dp.exitCode === null) process.kill(dp.pid, "SIGCONT");
    await Promise.all([stack?.stop(), alpha?.close(), beta?.close(), ...sluggish.map((s) => s.close())]);
  });

  it("reports every member that did not answer, and gives slow members the data plane's time", async () => {
    const res = await get(stack.cpUrl, `/api/v1/namespaces/${mixed}/conflicts`, api.token);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const body = res.body as unknown as ConflictsReport;
    const reported = Object.fromEntries(body.unavailable.map((u) => [u.server, u.reason]));
    // The member that takes 1.2 s to initialize is available (the budget per member is the
    // data plane's, not a third of the control plane's wait).
    expect(Object.keys(reported).sort(), JSON.stringify(body.unavailable)).toEqual([
      "crashes",
      "hanging",
      "refused",
    ]);
    expect(reported.hanging).toContain("tools/list");
    expect(reported.refused).toMatch(/not allowed|allowlist|refuse/i);
    expect(res.ms).toBeLessThan(6_500);
    // The data plane's own view of the namespace says the same.
    const own = await fetch(`${stack.dataPlanes[0]!.url}/ns/mixed/conflicts`, {
      headers: { authorization: `Bearer ${api.token}` },
    });
    const ownBody = (await own.json()) as ConflictsReport;
    expect(ownBody.unavailable.map((u) => u.server).sort()).toEqual(["crashes", "hanging", "refused"]);
  }, 30_000);

  it("lists a tool name two servers share, with both servers, right after the change", async () => {
    // No pause after creating the servers: the data plane waits for the org's current snapshot.
    const res = await get(stack.cpUrl, `/api/v1/namespaces/${flat}/conflicts`, api.token);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.type).toContain("application/json");
    const body = res.body as unknown as ConflictsReport;
    expect(body).toMatchObject({ namespace_id: flat, slug: "flat", tool_naming: "none", replica: "dp0" });
    expect(body.snapshot_version).toBeGreaterThan(0);
    expect(body.conflicts).toContainEqual({ kind: "tools", name: "echo", servers: ["alpha", "beta"] });
    expect(body.conflicts).toContainEqual({ kind: "tools", name: "add", servers: ["alpha", "beta"] });
    expect(body.conflicts.every((c) => !c.servers.includes("down"))).toBe(true);
    expect(body.unavailable).toEqual([{ server: "down", reason: expect.any(String) }]);
  });

  it("reports no conflicts for a namespace that prefixes names", async () => {
    const res = await get(stack.cpUrl, `/api/v1/namespaces/${team}/conflicts`, api.token);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({
      slug: "team",
      tool_naming: "prefix",
      tool_separator: expect.any(String),
      conflicts: [],
      unavailable: [],
    });
  });

  it("is readable by every role that reads namespaces, and by no one without a token", async () => {
    const asViewer = await get(stack.cpUrl, `/api/v1/namespaces/${flat}/conflicts`, viewer.token);
    expect(asViewer.status, JSON.stringify(asViewer.body)).toBe(200);
    const anonymous = await get(stack.cpUrl, `/api/v1/namespaces/${flat}/conflicts`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.type).toContain("application/problem+json");
  });

  it("answers 404 problem+json for another org's namespace and for an unknown id", async () => {
    const foreign = await get(stack.cpUrl, `/api/v1/namespaces/${flat}/conflicts`, other.token);
    expect(foreign.status).toBe(404);
    expect(foreign.type).toContain("application/problem+json");
    expect(foreign.body).toMatchObject({ status: 404, detail: "namespace not found" });
    expect(JSON.stringify(foreign.body)).not.toContain("echo");
    const unknown = await get(stack.cpUrl, `/api/v1/namespaces/${randomUUID()}/conflicts`, api.token);
    expect(unknown.status).toBe(404);
    expect(unknown.type).toContain("application/problem+json");
    const malformed = await get(stack.cpUrl, "/api/v1/namespaces/not-an-id/conflicts", api.token);
    expect(malformed.status).toBe(400);
  });

  it("answers 503 problem+json after about 6 s when no data plane answers, at once when none listens", async () => {
    const dp = stack.dataPlanes[0]!.proc;
    // A frozen replica keeps its subscription: the control plane waits out its budget.
    process.kill(dp.child.pid!, "SIGSTOP");
    try {
      const frozen = await get(stack.cpUrl, `/api/v1/namespaces/${flat}/conflicts`, api.token);
      expect(frozen.status, JSON.stringify(frozen.body)).toBe(503);
      expect(frozen.type).toContain("application/problem+json");
      expect(frozen.body).toMatchObject({ status: 503, title: "Service Unavailable" });
      expect(frozen.retryAfter).not.toBeNull();
      expect(frozen.ms).toBeGreaterThanOrEqual(5_500);
      expect(frozen.ms).toBeLessThan(8_000);
    } finally {
      process.kill(dp.child.pid!, "SIGCONT");
    }
    await dp.stop();
    const gone = await get(stack.cpUrl, `/api/v1/namespaces/${flat}/conflicts`, api.token);
    expect(gone.status, JSON.stringify(gone.body)).toBe(503);
    expect(gone.type).toContain("application/problem+json");
    expect(gone.ms).toBeLessThan(4_000);
    // Existence and access are still checked first.
    expect((await get(stack.cpUrl, `/api/v1/namespaces/${flat}/conflicts`, other.token)).status).toBe(404);
  });
});

describe("GET /api/v1/namespaces/{id}/conflicts in embedded mode (in-process bus)", () => {
  let dataDir: string;
  let proc: ManagedProcess;
  let alpha: TestUpstream;
  let beta: TestUpstream;
  let cpUrl: string;

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "mcpgw-conflicts-embedded-"));
    const [dpPort, cpPort] = await Promise.all([freePort(), freePort()]);
    [alpha, beta] = await Promise.all([startTestUpstream(), startTestUpstream()]);
    cpUrl = `http://127.0.0.1:${cpPort}`;
    proc = startTsService("services/embedded/src/main.ts", {
      MCPGW_DATA_DIR: dataDir,
      DP_PORT: String(dpPort),
      CP_PORT: String(cpPort),
      MCPGW_ADMIN_PASSWORD: "embedded admin password",
      DATABASE_URL: "",
      REDIS_URL: "",
      NATS_URL: "",
    });
    await waitForReady(`${cpUrl}/ready`, proc, 60_000);
    await waitForReady(`http://127.0.0.1:${dpPort}/ready`, proc, 10_000);
  }, 90_000);

  afterAll(async () => {
    await proc?.stop();
    await Promise.all([alpha?.close(), beta?.close()]);
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it("lists the shared tool names of an unprefixed namespace", async () => {
    const api = await login(cpUrl, "admin@mcpgw.local", "embedded admin password");
    const flat = await flatNamespace(api, "local-flat", alpha, beta);
    const res = await get(cpUrl, `/api/v1/namespaces/${flat}/conflicts`, api.token);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ namespace_id: flat, replica: "embedded", unavailable: [] });
    expect((res.body as unknown as ConflictsReport).conflicts).toContainEqual({
      kind: "tools",
      name: "echo",
      servers: ["alpha", "beta"],
    });
  });
});
