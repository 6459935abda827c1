import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  type Stack,
  startPrivateRedis,
  startStack,
  startTestUpstream,
  type TestUpstream,
} from "../../../packages/testing/src/index.ts";

interface Reply {
  status: number;
  headers: Headers;
  body: string;
}

describe("rate limits shared by two replicas on Redis", () => {
  let redis: Awaited<ReturnType<typeof startPrivateRedis>>;
  let stack: Stack;
  let api: Api;
  let upstream: TestUpstream;
  let namespaceId: string;

  const headers = (extra: Record<string, string> = {}) => ({
    authorization: `Bearer ${api.token}`,
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    "mcp-protocol-version": "2025-11-25",
    ...extra,
  });

  async function post(
    dp: number,
    serverId: string,
    body: unknown,
    extra: Record<string, string> = {},
  ): Promise<Reply> {
    const res = await fetch(`${stack.dataPlanes[dp]!.url}/servers/${serverId}/mcp`, {
      method: "POST",
      headers: headers(extra),
      body: JSON.stringify(body),
    });
    return { status: res.status, headers: res.headers, body: await res.text() };
  }

  /** A server of its own, with an initialized session. */
  /** An initialized session with a server, for the given credential. */
  async function openSession(serverId: string, auth: Record<string, string>): Promise<string> {
    const init = await post(
      0,
      serverId,
      {
        jsonrpc: "2.0",
        id: 0,
        method: "initialize",
        params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "rl", version: "1" } },
      },
      auth,
    );
    expect(init.status).toBe(200);
    const session = init.headers.get("mcp-session-id")!;
    await post(
      0,
      serverId,
      { jsonrpc: "2.0", method: "notifications/initialized" },
      { ...auth, "mcp-session-id": session },
    );
    return session;
  }

  async function serverWithSession(name: string): Promise<{ id: string; session: string }> {
    const created = await api.call<{ id: string }>("POST", "/api/v1/servers", {
      namespace_id: namespaceId,
      name,
      transport: "streamable_http",
      url: upstream.url,
    });
    const id = created.body.id;
    for (;;) {
      const init = await post(0, id, {
        jsonrpc: "2.0",
        id: 0,
        method: "initialize",
        params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "rl", version: "1" } },
      });
      if (init.status === 200) {
        const session = init.headers.get("mcp-session-id")!;
        await post(
          0,
          id,
          { jsonrpc: "2.0", method: "notifications/initialized" },
          { "mcp-session-id": session },
        );
        return { id, session };
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  let seq = 1;
  const call = (
    dp: number,
    s: { id: string; session: string },
    tool: string,
    args: Record<string, unknown>,
    extra: Record<string, string> = {},
  ) =>
    post(
      dp,
      s.id,
      { jsonrpc: "2.0", id: seq++, method: "tools/call", params: { name: tool, arguments: args } },
      { "mcp-session-id": s.session, ...extra },
    );

  async function rule(body: Record<string, unknown>): Promise<string> {
    const res = await api.call<{ id: string }>("POST", "/api/v1/rate-limits", body);
    expect(res.status).toBe(201);
    // Within one second both replicas enforce it.
    await new Promise((r) => setTimeout(r, 1000));
    return res.body.id;
  }

  beforeAll(async () => {
    redis = await startPrivateRedis();
    [stack, upstream] = await Promise.all([
      startStack({
        replicas: 2,
        env: { REDIS_URL: redis.url, MCPGW_RATE_LIMIT_REPLICAS: "2" },
        // dp1 sits behind a (loopback) proxy it trusts; dp0 trusts nobody.
        replicaEnv: [{}, { MCPGW_TRUSTED_PROXIES: "127.0.0.1/32" }],
      }),
      startTestUpstream(),
    ]);
    api = await stack.api();
    namespaceId = (
      await api.call<{ id: string }>("POST", "/api/v1/namespaces", { name: "Limits", slug: "limits" })
    ).body.id;
  }, 90_000);

  afterAll(async () => {
    await Promise.all([stack?.stop(), upstream?.close()]);
    await redis?.stop();
  });

  it("admits exactly N requests spread over both replicas, then 429 with Retry-After and RateLimit headers, and again after the window", async () => {
    const s = await serverWithSession("exact");
    const ruleId = await rule({
      name: "exact",
      scope: "server",
      match: { server_id: s.id },
      limit: 6,
      window_s: 3,
    });
    const replies: Reply[] = [];
    for (let i = 0; i < 9; i++) replies.push(await call(i % 2, s, "echo", { text: `n${i}` }));
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200, 429, 429, 429]);
    expect(replies[0]!.headers.get("ratelimit-policy")).toBe(`"${ruleId}";q=6;w=3`);
    expect(replies[0]!.headers.get("ratelimit")).toMatch(new RegExp(`^"${ruleId}";r=5;t=\\d+$`));
    const rejected = replies[6]!;
    const retryAfter = Number(rejected.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(3);
    expect(rejected.headers.get("ratelimit")).toMatch(/;r=0;/);
    const error = JSON.parse(rejected.body) as { error: { code: number; data: { retry_after: number } } };
    expect(error.error.code).toBe(-32029);
    expect(error.error.data.retry_after).toBe(retryAfter);
    // Rejections are counted in metrics and logged.
    const metrics = await (await fetch(`${stack.dataPlanes[0]!.url}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`mcpgw_dp_rate_limited_total\\{[^}]*rule="${ruleId}"[^}]*\\} [1-9]`));
    await expect
      .poll(() => stack.dataPlanes.map((d) => d.proc.output()).join("\n"))
      .toContain("request rejected by rate limit");
    await new Promise((r) => setTimeout(r, retryAfter * 1000 + 200));
    expect((await call(1, s, "echo", { text: "again" })).status).toBe(200);
  });

  it("applies per-key and per-tool rules independently, and the most restrictive answer wins", async () => {
    const s = await serverWithSession("independent");
    const k1 = (await api.call<{ key: string }>("POST", "/auth/api-keys", { name: "k1" })).body.key;
    const k2 = (await api.call<{ key: string }>("POST", "/auth/api-keys", { name: "k2" })).body.key;
    const perKey = await rule({
      name: "per-key",
      scope: "api_key",
      match: { server_id: s.id, method: "tools/call" },
      limit: 3,
      window_s: 60,
    });
    const perTool = await rule({
      name: "add-tool",
      scope: "tool",
      match: { server_id: s.id, tool: "add" },
      limit: 2,
      window_s: 60,
    });
    const as = (key: string) => ({ authorization: `Bearer ${key}` });
    // Session ids are bound to the principal that opened them: each key opens its own.
    const s1 = { id: s.id, session: await openSession(s.id, as(k1)) };
    const s2 = { id: s.id, session: await openSession(s.id, as(k2)) };
    expect((await call(0, s1, "add", { a: 1, b: 1 }, as(k1))).status).toBe(200);
    expect((await call(1, s1, "add", { a: 1, b: 1 }, as(k1))).status).toBe(200);
    const toolLimited = await call(0, s1, "add", { a: 1, b: 1 }, as(k1));
    expect(toolLimited.status).toBe(429);
    expect(toolLimited.headers.get("ratelimit-policy")).toContain(perTool);
    // k1 used its three calls (the rejected one counted against the key rule too).
    const keyLimited = await call(1, s1, "echo", { text: "x" }, as(k1));
    expect(keyLimited.status).toBe(429);
    expect(keyLimited.headers.get("ratelimit-policy")).toContain(perKey);
    // Another key has its own budget, but the tool budget is shared by everyone.
    expect((await call(0, s2, "echo", { text: "x" }, as(k2))).status).toBe(200);
    expect((await call(1, s2, "add", { a: 1, b: 1 }, as(k2))).status).toBe(429);
  });

  it("weighs tool calls by their configured cost", async () => {
    const s = await serverWithSession("weighted");
    await rule({
      name: "budget",
      scope: "server",
      match: { server_id: s.id, method: "tools/call" },
      limit: 6,
      window_s: 60,
      costs: { "sl*": 4 },
    });
    expect((await call(0, s, "sleep", { ms: 1 })).status).toBe(200); // 4 of 6
    expect((await call(1, s, "echo", { text: "x" })).status).toBe(200); // 5 of 6
    const over = await call(0, s, "sleep", { ms: 1 }); // 9 of 6
    expect(over.status).toBe(429);
    expect((await call(1, s, "echo", { text: "x" })).status).toBe(429);
  });

  it("takes a rule change through the API into effect on both replicas within one second", async () => {
    const s = await serverWithSession("changing");
    const id = await rule({
      name: "changing",
      scope: "server",
      match: { server_id: s.id },
      limit: 1000,
      window_s: 60,
    });
    expect((await call(0, s, "echo", { text: "x" })).status).toBe(200);
    expect((await api.call("PATCH", `/api/v1/rate-limits/${id}`, { limit: 1 })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 1000));
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await call(i % 2, s, "echo", { text: "x" })).status);
    expect(statuses).toEqual([200, 429, 429, 429]);
  });

  it("never believes X-Forwarded-For from an untrusted peer, and does through a trusted proxy", async () => {
    const s = await serverWithSession("by-ip");
    await rule({
      name: "per-ip",
      scope: "ip",
      match: { server_id: s.id, method: "tools/call" },
      limit: 2,
      window_s: 60,
    });
    // dp0 trusts nobody: three different spoofed addresses are all 127.0.0.1.
    const spoofed = [];
    for (const ip of ["203.0.113.1", "203.0.113.2", "203.0.113.3"]) {
      spoofed.push((await call(0, s, "echo", { text: "x" }, { "x-forwarded-for": ip })).status);
    }
    expect(spoofed).toEqual([200, 200, 429]);
    // dp1 trusts its loopback proxy: each forwarded client has its own budget.
    const viaProxy = [];
    for (const ip of ["198.51.100.1", "198.51.100.1", "198.51.100.1", "198.51.100.2"]) {
      viaProxy.push((await call(1, s, "echo", { text: "x" }, { "x-forwarded-for": ip })).status);
    }
    expect(viaProxy).toEqual([200, 200, 429, 200]);
  });

  it("stays up under concurrent sessions and calls checked against several rules at once", async () => {
    const s = await serverWithSession("concurrent");
    await rule({ name: "c1", scope: "server", match: { server_id: s.id }, limit: 1_000_000, window_s: 60 });
    await rule({ name: "c2", scope: "user", match: { server_id: s.id }, limit: 1_000_000, window_s: 60 });
    await rule({ name: "c3", scope: "method", match: { server_id: s.id }, limit: 1_000_000, window_s: 60 });
    // New sessions (quota scripts and transactions) and calls (limiter scripts) at the same time.
    const inits = Array.from({ length: 40 }, (_, i) =>
      post(i % 2, s.id, {
        jsonrpc: "2.0",
        id: i,
        method: "initialize",
        params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "c", version: "1" } },
      }),
    );
    const calls = Array.from({ length: 120 }, (_, i) => call(i % 2, s, "echo", { text: `c${i}` }));
    const statuses = (await Promise.all([...inits, ...calls])).map((r) => r.status);
    expect(statuses.filter((st) => st !== 200)).toEqual([]);
    for (const dp of stack.dataPlanes) {
      expect(dp.proc.child.exitCode).toBeNull();
      expect((await fetch(`${dp.url}/health`)).status).toBe(200);
    }
  }, 60_000);

  it("keeps serving under per-replica insurance limits while Redis is down, and resumes shared limits when it is back", async () => {
    const s = await serverWithSession("outage");
    await rule({
      name: "outage",
      scope: "server",
      match: { server_id: s.id, method: "tools/call" },
      limit: 10,
      window_s: 30,
    });
    const during: number[] = [];
    for (let i = 0; i < 4; i++) during.push((await call(i % 2, s, "echo", { text: "x" })).status);
    await redis.stop();
    // Each replica now enforces half of the limit on its own: 5 each, never a 5xx.
    const dp0: number[] = [];
    const dp1: number[] = [];
    for (let i = 0; i < 7; i++) dp0.push((await call(0, s, "echo", { text: "x" })).status);
    for (let i = 0; i < 7; i++) dp1.push((await call(1, s, "echo", { text: "x" })).status);
    expect([...during, ...dp0, ...dp1].every((st) => st === 200 || st === 429)).toBe(true);
    expect(dp0.filter((st) => st === 200).length).toBe(5);
    expect(dp1.filter((st) => st === 200).length).toBe(5);
    const metrics = await (await fetch(`${stack.dataPlanes[0]!.url}/metrics`)).text();
    expect(metrics).toMatch(/mcpgw_dp_rate_limit_store_errors_total\{[^}]*\} [1-9]/);

    await redis.start();
    // Redis came back empty: the shared budget of 10 applies again across both replicas.
    await new Promise((r) => setTimeout(r, 1500));
    const after: number[] = [];
    for (let i = 0; i < 12; i++) after.push((await call(i % 2, s, "echo", { text: "x" })).status);
    expect(after.filter((st) => st === 200).length).toBe(10);
    expect(after.slice(10)).toEqual([429, 429]);
  }, 60_000);
});
