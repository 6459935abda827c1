import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { NatsBus } from "@mcpgw/bus";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  eventually,
  initializeRequest,
  login,
  probeStdioServer,
  registerStdioServer,
  type Stack,
  startStack,
} from "../../../packages/testing/src/index.ts";

// Orgs share data planes: a tenant's stdio server must not run with the data plane's identity,
// and one tenant must not take every stdio process of a replica.
describe("stdio servers: tenant isolation and fair capacity (distributed, real processes)", () => {
  let stack: Stack;
  let platform: Api;
  let tenant: Api;
  let tenantServer: string;
  let platformServer: string;
  let dp: string;

  beforeAll(async () => {
    stack = await startStack({
      replicas: 1,
      env: {
        MCPGW_STDIO_ALLOWED_COMMANDS: process.execPath,
        MCPGW_STDIO_POOL_SIZE: "0",
        MCPGW_STDIO_MAX_PROCESSES: "4",
        MCPGW_STDIO_MAX_PER_ORG: "3",
        MCPGW_STDIO_MAX_PER_PRINCIPAL: "3",
      },
    });
    dp = stack.dataPlanes[0]!.url;
    platform = await stack.api();
    const org = await platform.call("POST", "/api/v1/organizations", {
      name: "Tenant",
      slug: "tenant-stdio",
      admin: { email: "tenant-stdio@example.test", password: "tenant admin password" },
    });
    expect(org.status, JSON.stringify(org.body)).toBe(201);
    tenant = await login(stack.cpUrl, "tenant-stdio@example.test", "tenant admin password");
    const tenantNs = await tenant.call<{ id: string }>("POST", "/api/v1/namespaces", {
      name: "T",
      slug: "t",
    });
    const platformNs = await platform.call<{ id: string }>("POST", "/api/v1/namespaces", {
      name: "P",
      slug: "p",
    });
    const spec = { name: "probe", command: process.execPath, args: [probeStdioServer] };
    // The platform admin defines the command; the tenant's org admin only picks the entry.
    tenantServer = (await registerStdioServer(platform, { ...spec, namespace_id: tenantNs.body.id }, tenant))
      .id;
    platformServer = (await registerStdioServer(platform, { ...spec, namespace_id: platformNs.body.id })).id;
    // Ready when the data plane knows the server (an operator exchange holds no session after).
    await eventually(async () => {
      const res = await fetch(`${dp}/stdio/send`, {
        method: "POST",
        headers: { authorization: `Bearer ${tenant.token}`, "content-type": "application/json" },
        body: JSON.stringify({ server_id: tenantServer, messages: [initializeRequest("ready")] }),
      });
      await res.arrayBuffer();
      return res.status === 200;
    }, 20_000).catch((err) => {
      throw new Error(`the data plane did not learn of the tenant's stdio server: ${err}`);
    });
  }, 120_000);

  afterAll(async () => {
    await stack?.stop();
  });

  it("runs a tenant's stdio server as another user that cannot read the data plane's environment, memory or files", async () => {
    const dataDir = stack.dataPlanes[0]!.dataDir;
    const res = await fetch(`${dp}/stdio/send`, {
      method: "POST",
      headers: { authorization: `Bearer ${tenant.token}`, "content-type": "application/json" },
      body: JSON.stringify({
        server_id: tenantServer,
        wait_ms: 10_000,
        messages: [
          initializeRequest("probe", 1),
          { jsonrpc: "2.0", method: "notifications/initialized" },
          {
            jsonrpc: "2.0",
            id: 2,
            method: "tools/call",
            params: { name: "probe", arguments: { paths: [dataDir, join(dataDir, "snapshots")] } },
          },
        ],
      }),
    });
    const body = (await res.json()) as {
      received: Array<{ id?: number; result?: { content: [{ text: string }] } }>;
    };
    expect(res.status, JSON.stringify(body)).toBe(200);
    const call = body.received.find((m) => m.id === 2);
    expect(call, JSON.stringify(body)).toBeDefined();
    const report = JSON.parse(call!.result!.content[0].text) as {
      uid: number;
      cwd: string;
      home: string;
      env_names: string[];
      parent_environ: string;
      parent_mem: string;
      paths: Record<string, string>;
    };
    // The tests run as root: children run as the dedicated stdio user.
    expect(report.uid).not.toBe(0);
    expect(report.uid).not.toBe(process.getuid?.());
    expect(report.parent_environ).toBe("EACCES");
    expect(report.parent_mem).toBe("EACCES");
    expect(Object.values(report.paths)).toEqual(["EACCES", "EACCES"]);
    expect(report.home).toBe(report.cwd);
    expect(report.env_names.filter((n) => /MCPGW|DATABASE|REDIS|NATS/.test(n))).toEqual([]);
  });

  it("answers operator requests on NATS only when they are signed by this deployment", async () => {
    const orgId = (await tenant.call<{ org_id: string }>("GET", "/auth/profile")).body.org_id;
    const nats = await NatsBus.connect(stack.env.NATS_URL!);
    try {
      const subject = `${stack.env.MCPGW_BUS_PREFIX}.dataplane.ops`;
      const unsigned = await nats.gather(subject, { action: "stdio_list", org_id: orgId }, 1500, 1);
      expect(unsigned).toHaveLength(1);
      expect(JSON.stringify(unsigned)).not.toContain(tenantServer);
      expect(JSON.stringify(unsigned)).toContain("not signed");
      const push = await nats.gather(subject, { action: "push", org_id: orgId, message: {} }, 1500, 1);
      expect(JSON.stringify(push)).toContain("not signed");
    } finally {
      await nats.close();
    }
    // The gateway's own fan-out (signed) still works.
    const res = await fetch(`${dp}/stdio/process`, { headers: { authorization: `Bearer ${tenant.token}` } });
    expect(res.status).toBe(200);
  });

  it("keeps a tenant's secret parameters sealed in the database, NATS and the data plane's disk cache, and hands them only to the child", async () => {
    const SECRET = "ghp_tenant-secret-value-123";
    const entry = await platform.call<{ id: string }>("POST", "/api/v1/stdio-catalog", {
      slug: "probe-with-token",
      name: "Probe with a token",
      command: process.execPath,
      args: [probeStdioServer],
      parameters: [
        { name: "github_token", type: "string", secret: true, required: true, env: "GITHUB_TOKEN" },
      ],
    });
    expect(entry.status, JSON.stringify(entry.body)).toBe(201);
    const ns = await tenant.call<{ id: string }>("POST", "/api/v1/namespaces", {
      name: "S",
      slug: "secrets",
    });
    const server = await tenant.call<{ id: string }>("POST", "/api/v1/servers", {
      namespace_id: ns.body.id,
      name: "with-token",
      transport: "stdio",
      catalog_entry_id: "probe-with-token",
      parameters: { github_token: SECRET },
    });
    expect(server.status, JSON.stringify(server.body)).toBe(201);
    expect(JSON.stringify(server.body)).not.toContain(SECRET);
    const exchange = async () => {
      const res = await fetch(`${dp}/stdio/send`, {
        method: "POST",
        headers: { authorization: `Bearer ${tenant.token}`, "content-type": "application/json" },
        body: JSON.stringify({
          server_id: server.body.id,
          wait_ms: 10_000,
          messages: [
            initializeRequest("probe", 1),
            { jsonrpc: "2.0", id: 2, method: "tools/call", params: { name: "probe", arguments: {} } },
          ],
        }),
      });
      return {
        status: res.status,
        body: (await res.json()) as {
          received?: Array<{ id?: number; result?: { content: [{ text: string }] } }>;
        },
      };
    };
    const answered = await eventually(async () => {
      const r = await exchange();
      return r.status === 200 ? r.body : undefined;
    }, 20_000).catch((err) => {
      throw new Error(`the data plane did not run the server with a secret parameter: ${err}`);
    });
    const report = JSON.parse(answered!.received!.find((m) => m.id === 2)!.result!.content[0].text) as {
      env_names: string[];
    };
    expect(report.env_names).toContain("GITHUB_TOKEN");
    // In NATS and in the data plane's cache the value is sealed; cache files are owner-only.
    const nats = await NatsBus.connect(stack.env.NATS_URL!);
    try {
      const bucket = await nats.bucket(`${stack.env.MCPGW_BUS_PREFIX}_config`);
      const orgId = (await tenant.call<{ org_id: string }>("GET", "/auth/profile")).body.org_id;
      const value = (await bucket.get(`org.${orgId}`))?.value ?? "";
      expect(value).not.toBe("");
      expect(Buffer.from(value.split(".")[1] ?? "", "base64url").toString()).not.toContain(SECRET);
      expect(value).not.toContain(SECRET);
    } finally {
      await nats.close();
    }
    const cacheDir = join(stack.dataPlanes[0]!.dataDir, "snapshots");
    for (const file of await readdir(cacheDir)) {
      const path = join(cacheDir, file);
      expect((await stat(path)).mode & 0o777, path).toBe(0o600);
      expect(await readFile(path, "utf8")).not.toContain(SECRET);
    }
    expect((await stat(cacheDir)).mode & 0o777).toBe(0o700);
  });

  async function openSession(token: string, server: string): Promise<Response> {
    return fetch(`${dp}/servers/${server}/mcp`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${token}`,
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
      },
      body: JSON.stringify(initializeRequest("capacity")),
    });
  }

  async function ping(token: string, server: string, session: string): Promise<number> {
    const res = await fetch(`${dp}/servers/${server}/mcp`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${token}`,
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        "mcp-session-id": session,
        "mcp-protocol-version": "2025-11-25",
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 9, method: "ping" }),
    });
    await res.arrayBuffer();
    return res.status;
  }

  it("keeps one org's never-closed sessions from locking other orgs out, reclaiming idle ones", {
    timeout: 60_000,
  }, async () => {
    // One org leaks sessions (clients that never send DELETE), up to its share of 3.
    const leaked: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await openSession(platform.token, platformServer);
      await res.arrayBuffer();
      expect(res.status).toBe(200);
      leaked.push(res.headers.get("mcp-session-id")!);
    }
    // Its next session finds its share busy (every session just did something): 503 with Retry-After.
    const busy = await openSession(platform.token, platformServer);
    expect(busy.status).toBe(503);
    expect(busy.headers.get("retry-after")).toBeTruthy();
    await busy.arrayBuffer();
    // Another org still gets the last process, and then one reclaimed from the idle leaked ones.
    const first = await openSession(tenant.token, tenantServer);
    expect(first.status, await first.text()).toBe(200);
    await new Promise((r) => setTimeout(r, 2500));
    const second = await openSession(tenant.token, tenantServer);
    expect(second.status, await second.text()).toBe(200);
    // The reclaimed session was the least recently used one: its client gets 404 and re-initializes.
    await eventually(
      async () => (await ping(platform.token, platformServer, leaked[0]!)) === 404,
      10_000,
    ).catch((err) => {
      throw new Error(`the least recently used leaked session was not reclaimed: ${err}`);
    });
    expect(await ping(platform.token, platformServer, leaked[2]!)).toBe(200);
  });
});
