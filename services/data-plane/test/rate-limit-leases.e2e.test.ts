import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  type Stack,
  startStack,
  startTestUpstream,
  type TestUpstream,
} from "../../../packages/testing/src/index.ts";
import { leaseCap } from "../src/rate-limit/leased-bucket.ts";

/** Sum of a metric's series on one replica. */
async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    const m = /^(\w+)(?:\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m?.[1] === name) sum += Number(m[2]) || 0;
  }
  return sum;
}

describe("rate-limit leases across two replicas", () => {
  let stack: Stack;
  let api: Api;
  let upstream: TestUpstream;

  beforeAll(async () => {
    [stack, upstream] = await Promise.all([
      startStack({ replicas: 2, env: { MCPGW_RATE_LIMIT_REPLICAS: "2" } }),
      startTestUpstream(),
    ]);
    api = await stack.api();
  }, 90_000);

  afterAll(async () => {
    await Promise.all([stack?.stop(), upstream?.close()]);
  });

  it("admits between limit − 2·L and the limit under concurrent load on both replicas, with a Redis round trip per lease, not per call", async () => {
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", {
      name: "Leases",
      slug: "leases",
    });
    const server = await api.call<{ id: string }>("POST", "/api/v1/servers", {
      namespace_id: ns.body.id,
      name: "leased",
      transport: "streamable_http",
      url: upstream.url,
    });
    const id = server.body.id;
    const headers = (session?: string) => ({
      authorization: `Bearer ${api.token}`,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": "2025-11-25",
      ...(session ? { "mcp-session-id": session } : {}),
    });
    const post = (dp: number, body: unknown, session?: string) =>
      fetch(`${stack.dataPlanes[dp]!.url}/servers/${id}/mcp`, {
        method: "POST",
        headers: headers(session),
        body: JSON.stringify(body),
      });
    // The server reaches both replicas with the next snapshot.
    let session: string | undefined;
    for (let i = 0; i < 100 && !session; i++) {
      const init = await post(0, {
        jsonrpc: "2.0",
        id: 0,
        method: "initialize",
        params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "l", version: "1" } },
      });
      if (init.status === 200) session = init.headers.get("mcp-session-id") ?? undefined;
      await init.text();
      if (!session) await new Promise((r) => setTimeout(r, 100));
    }
    expect(session).toBeDefined();
    await (await post(0, { jsonrpc: "2.0", method: "notifications/initialized" }, session)).text();

    const limit = 400;
    const cap = leaseCap(limit, 2);
    expect(cap).toBe(10);
    const rule = await api.call<{ id: string }>("POST", "/api/v1/rate-limits", {
      name: "leased",
      scope: "server",
      match: { server_id: id, method: "tools/call" },
      limit,
      window_s: 120,
    });
    expect(rule.status).toBe(201);
    await new Promise((r) => setTimeout(r, 1000));
    const tripsBefore = (
      await Promise.all(stack.dataPlanes.map((d) => metric(d.url, "mcpgw_dp_rate_limit_store_calls_total")))
    ).reduce((a, b) => a + b, 0);

    // 10 clients, alternating replicas, 50 calls each: 500 asks for a budget of 400.
    let seq = 1;
    const statuses: number[] = [];
    await Promise.all(
      Array.from({ length: 10 }, async (_, c) => {
        for (let i = 0; i < 50; i++) {
          const res = await post(
            (c + i) % 2,
            {
              jsonrpc: "2.0",
              id: seq++,
              method: "tools/call",
              params: { name: "echo", arguments: { text: "x" } },
            },
            session,
          );
          await res.text();
          statuses.push(res.status);
        }
      }),
    );
    expect(statuses.length).toBe(500);
    expect(statuses.filter((s) => s !== 200 && s !== 429)).toEqual([]);
    const admitted = statuses.filter((s) => s === 200).length;
    expect(admitted).toBeLessThanOrEqual(limit);
    expect(admitted).toBeGreaterThanOrEqual(limit - 2 * cap);
    const trips =
      (
        await Promise.all(stack.dataPlanes.map((d) => metric(d.url, "mcpgw_dp_rate_limit_store_calls_total")))
      ).reduce((a, b) => a + b, 0) - tripsBefore;
    expect(trips).toBeLessThan(500 / 2);
  }, 60_000);
});
