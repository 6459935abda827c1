import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryBus } from "@mcpgw/bus";
import { Keyring } from "@mcpgw/secrets";
import { generateSnapshotKeys } from "@mcpgw/snapshot";
import { createLogger, createMetricsRegistry } from "@mcpgw/telemetry";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
// The data plane never needs the database; the control plane that configures it here does.
import { type DbHandle, openDatabase } from "../../../packages/db/src/index.ts";
import {
  createTestDatabase,
  eventually,
  initializeRequest,
  runId,
  startTestUpstream,
  type TestUpstream,
} from "../../../packages/testing/src/index.ts";
import { startControlPlane } from "../../control-plane/src/runtime.ts";
import { startDataPlane } from "../src/runtime.ts";

type ControlPlane = Awaited<ReturnType<typeof startControlPlane>>;
type DataPlane = Awaited<ReturnType<typeof startDataPlane>>;

const ACCEPT = "application/json, text/event-stream";
const ping = (id: number | string = 1) => ({ jsonrpc: "2.0", id, method: "ping" });

// Every data-plane route reached in process with `app.request()`: the same route table, Host
// guard and observe frame (request id, metrics) as the node server, without a socket. The
// control plane and data plane share a memory bus, the database is a real Postgres, the
// upstream a real SDK server on loopback.
describe("data-plane routes through app.request()", () => {
  let drop: () => Promise<void>;
  let database: DbHandle;
  let cp: ControlPlane;
  let dp: DataPlane;
  let upstream: TestUpstream;
  let dataDir: string;
  let token = "";
  let serverId = "";
  const slug = `inproc${runId().slice(0, 6)}`;
  const admin = { email: `admin-${runId()}@example.test`, password: "correct horse battery staple" };

  async function api(method: string, path: string, body?: unknown) {
    const res = await cp.app.request(path, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    // biome-ignore lint/suspicious/noExplicitAny: JSON bodies of many shapes
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as any };
  }

  /** A data-plane request in process; JSON bodies are sent as JSON. */
  function request(
    path: string,
    init: { method?: string; body?: unknown; headers?: Record<string, string> } = {},
  ) {
    return dp.app.request(path, {
      method: init.method ?? (init.body === undefined ? "GET" : "POST"),
      headers: {
        authorization: `Bearer ${token}`,
        accept: ACCEPT,
        ...(init.body === undefined ? {} : { "content-type": "application/json" }),
        ...init.headers,
      },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    });
  }

  beforeAll(async () => {
    const test = await createTestDatabase();
    drop = test.drop;
    database = await openDatabase(test.url, { max: 8 });
    upstream = await startTestUpstream();
    dataDir = await mkdtemp(join(tmpdir(), "mcpgw-inproc-"));
    const bus = new MemoryBus();
    const busPrefix = `t${runId()}`;
    const masterKey = Keyring.generateKey();
    const { privateJwk, publicJwk } = await generateSnapshotKeys();
    cp = await startControlPlane({
      database,
      bus,
      busPrefix,
      logger: createLogger("cp-inproc-test", "silent"),
      metrics: createMetricsRegistry("cp-inproc-test"),
      masterKey,
      snapshotSigningKey: JSON.stringify(privateJwk),
      jwtIssuer: "mcpgw",
      jwtAudience: "mcpgw",
      accessTokenTtlS: 300,
      allowPrivateUpstreams: true,
      publishSweepMs: 500,
      admin,
    });
    dp = await startDataPlane({
      bus: Promise.resolve(bus),
      busPrefix,
      snapshotPublicKey: JSON.stringify(publicJwk),
      dataDir,
      maxBodyBytes: 1 << 20,
      replicaId: "inproc",
      logger: createLogger("dp-inproc-test", "silent"),
      metrics: createMetricsRegistry("dp-inproc-test"),
      masterKey,
      allowPrivateUpstreams: true,
      publicUrl: "http://gateway.example.test",
      loopbackUrl: "http://127.0.0.1:9",
    });
    const login = await api("POST", "/auth/login", admin);
    expect(login.status, "admin login").toBe(200);
    token = login.body.access_token;
    const ns = await api("POST", "/api/v1/namespaces", { name: "In process", slug });
    expect(ns.status, JSON.stringify(ns.body)).toBe(201);
    const namespaces = await api("GET", "/api/v1/namespaces");
    const list = (namespaces.body.items ?? namespaces.body) as Array<{ id: string; slug: string }>;
    if (!list.some((n) => n.slug === "default"))
      expect((await api("POST", "/api/v1/namespaces", { name: "Default", slug: "default" })).status).toBe(
        201,
      );
    const server = await api("POST", "/api/v1/servers", {
      namespace_id: ns.body.id,
      name: "sdk",
      transport: "streamable_http",
      url: upstream.url,
    });
    expect(server.status, JSON.stringify(server.body)).toBe(201);
    serverId = server.body.id;
    await eventually(
      async () => (await request(`/servers/${serverId}/rpc`, { body: ping() })).status === 200,
      20_000,
    ).catch((err) => {
      throw new Error(`the data plane did not serve the new server in process: ${err}`);
    });
  }, 120_000);

  afterAll(async () => {
    await dp?.stop();
    await cp?.stop();
    await upstream?.close();
    await database?.close();
    await drop?.();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it("health, readiness and metrics", async () => {
    const health = await dp.app.request("/health");
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: "ok", replica: "inproc" });
    expect(health.headers.get("x-request-id")).toMatch(/\S/);
    const ready = await dp.app.request("/ready");
    expect(ready.status).toBe(200);
    const metrics = await dp.app.request("/metrics");
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain("mcpgw_dp_");
  });

  it("protected-resource metadata, for the gateway and per server", async () => {
    const root = await dp.app.request("/.well-known/oauth-protected-resource");
    expect(root.status).toBe(200);
    expect((await root.json()).resource).toMatch(/^http:\/\/gateway\.example\.test/);
    const perServer = await dp.app.request(`/.well-known/oauth-protected-resource/servers/${serverId}/mcp`);
    expect(perServer.status).toBe(200);
    expect((await perServer.json()).resource).toContain(`/servers/${serverId}/mcp`);
  });

  it("a Streamable HTTP session on a server: initialize, call, delete", async () => {
    const init = await request(`/servers/${serverId}/mcp`, { body: initializeRequest("inproc") });
    expect(init.status).toBe(200);
    const session = init.headers.get("mcp-session-id");
    expect(session).toBeTruthy();
    expect(await init.text()).toContain("serverInfo");
    const headers = { "mcp-session-id": session!, "mcp-protocol-version": "2025-06-18" };
    const notified = await request(`/servers/${serverId}/mcp`, {
      body: { jsonrpc: "2.0", method: "notifications/initialized" },
      headers,
    });
    expect(notified.status).toBe(202);
    const list = await request(`/servers/${serverId}/mcp`, {
      body: { jsonrpc: "2.0", id: 2, method: "tools/list" },
      headers,
    });
    expect(list.status).toBe(200);
    expect(await list.text()).toContain('"tools"');
    const closed = await request(`/servers/${serverId}/mcp`, { method: "DELETE", headers });
    expect(closed.status).toBeLessThan(300);
  });

  it("JSON-RPC on a server, and introspection", async () => {
    const res = await request(`/servers/${serverId}/rpc`, { body: ping(7) });
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ jsonrpc: "2.0", id: 7, result: {} });
    const intro = await request(`/servers/${serverId}/rpc/introspection`);
    expect(intro.status).toBe(200);
  });

  it("JSON-RPC initialize negotiates the revision the client asks for", async () => {
    const ask = async (protocolVersion: string) => {
      const res = await request(`/servers/${serverId}/rpc`, {
        body: {
          ...initializeRequest("rpc-negotiation", 8),
          params: { ...initializeRequest("rpc").params, protocolVersion },
        },
      });
      expect(res.status).toBe(200);
      return ((await res.json()) as { result: { protocolVersion: string; capabilities: unknown } }).result;
    };
    const old = await ask("2024-11-05");
    expect(old.protocolVersion).toBe("2024-11-05");
    expect(old.capabilities).toBeTypeOf("object");
    expect((await ask("2025-06-18")).protocolVersion).toBe("2025-06-18");
    // Unknown (and the sessionless 2026-07-28) revisions get the newest one with sessions.
    expect((await ask("2099-01-01")).protocolVersion).toBe("2025-11-25");
    expect((await ask("2026-07-28")).protocolVersion).toBe("2025-11-25");
  });

  it("legacy SSE on a server: the stream names its message endpoint, which accepts a message", async () => {
    const abort = new AbortController();
    const stream = await dp.app.request(`/servers/${serverId}/sse`, {
      headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" },
      signal: abort.signal,
    });
    expect(stream.status).toBe(200);
    expect(stream.headers.get("content-type")).toContain("text/event-stream");
    const reader = stream.body!.getReader();
    let text = "";
    while (!/event: endpoint\r?\ndata: \S+/.test(text)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the SSE stream ended before naming its endpoint: ${text}`);
      text += new TextDecoder().decode(value);
    }
    const endpoint = /data: (\S+)/.exec(text)![1]!;
    expect(endpoint).toMatch(/\/message\?.*sessionId=/);
    const path = endpoint.startsWith("http")
      ? new URL(endpoint).pathname + new URL(endpoint).search
      : endpoint;
    const posted = await request(path, { body: initializeRequest("inproc-sse") });
    expect(posted.status).toBe(202);
    abort.abort();
    await reader.cancel().catch(() => undefined);
  });

  it("namespace endpoints: /ns/{slug}/… and the caller's default namespace", async () => {
    const init = await request(`/ns/${slug}/mcp`, { body: initializeRequest("inproc-ns") });
    expect(init.status).toBe(200);
    expect(init.headers.get("mcp-session-id")).toBeTruthy();
    await init.text();
    const rpc = await request(`/ns/${slug}/rpc`, { body: { jsonrpc: "2.0", id: 3, method: "tools/list" } });
    expect(rpc.status).toBe(200);
    expect(JSON.stringify(await rpc.json())).toContain("sdk");
    const batch = await request(`/ns/${slug}/rpc/batch`, { body: [ping(1), ping(2)] });
    expect(batch.status).toBe(200);
    expect(await batch.json()).toHaveLength(2);
    expect((await request(`/ns/${slug}/rpc/introspection`)).status).toBe(200);
    expect((await request(`/ns/${slug}/conflicts`)).status).toBe(200);
    const fallback = await request("/rpc", { body: ping(4) });
    expect(fallback.status).toBe(200);
    expect(await fallback.json()).toMatchObject({ id: 4, result: {} });
  });

  it("operator endpoints answer an admin", async () => {
    for (const path of ["/mcp/capabilities", "/mcp/status", "/sse/status", "/ws/status", "/stdio/process"]) {
      const res = await request(path);
      expect(res.status, path).toBe(200);
      expect(res.headers.get("x-request-id"), path).toMatch(/\S/);
    }
  });

  it("WebSocket endpoints without an upgrade: 426 and Upgrade: websocket", async () => {
    for (const path of [`/servers/${serverId}/ws`, `/ns/${slug}/ws`, "/ws"]) {
      const res = await request(path);
      expect(res.status, path).toBe(426);
      expect(res.headers.get("upgrade"), path).toBe("websocket");
      expect((await res.json()).error.message, path).toMatch(/WebSocket/);
    }
  });

  it("refusals: no credential, unknown server, unknown route, another Host", async () => {
    const anon = await dp.app.request(`/servers/${serverId}/mcp`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: ACCEPT },
      body: JSON.stringify(initializeRequest("anon")),
    });
    expect(anon.status).toBe(401);
    expect(anon.headers.get("www-authenticate")).toContain("resource_metadata=");
    expect(
      (await request("/servers/00000000-0000-4000-8000-000000000000/rpc", { body: ping() })).status,
    ).toBe(404);
    const nowhere = await request("/nowhere");
    expect(nowhere.status).toBe(404);
    expect(nowhere.headers.get("x-request-id")).toMatch(/\S/);
    const rebound = await dp.app.request(`http://attacker.example/servers/${serverId}/rpc`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify(ping()),
    });
    expect(rebound.status).toBe(403);
  });

  it("x-request-id: a sane client id is kept, anything else replaced", async () => {
    const kept = await request("/health", { headers: { "x-request-id": "client-trace-42" } });
    expect(kept.headers.get("x-request-id")).toBe("client-trace-42");
    const replaced = await request(`/servers/${serverId}/rpc`, {
      body: ping(),
      headers: { "x-request-id": "bad id with spaces and {braces}" },
    });
    expect(replaced.headers.get("x-request-id")).not.toContain(" ");
    expect(replaced.headers.get("x-request-id")).toMatch(/\S/);
  });

  it("/metrics counts the requests and refusals above by route", async () => {
    const text = await (await dp.app.request("/metrics")).text();
    for (const route of [
      "server.mcp",
      "server.rpc",
      "server.sse",
      "namespace.rpc",
      "namespace.ws",
      "operator",
    ])
      expect(text, route).toMatch(new RegExp(`route="${route.replace(".", "\\.")}"`));
  });
});
