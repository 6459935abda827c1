import type { NamespaceEntry, OrgSnapshot, RateLimitEntry, ServerEntry } from "@mcpgw/snapshot";
import { createLogger, createMetricsRegistry, type Registry } from "@mcpgw/telemetry";
import { Redis } from "ioredis";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { deleteRedisKeys } from "../../../../packages/testing/src/cleanup.ts";
import { runId, testEnv } from "../../../../packages/testing/src/env.ts";
import { startPrivateRedis } from "../../../../packages/testing/src/redis.ts";
import type { Principal } from "../auth/principal.ts";
import { leaseCap } from "./leased-bucket.ts";
import { type RateLimitSubject, RateLimits } from "./rate-limits.ts";

const logger = createLogger("rate-limit-test", "silent");
const prefix = `rltest${runId()}`;
const clients: Redis[] = [];

/** A connection configured as the data plane's (runtime.ts): no offline queue, short timeouts. */
function connect(url = testEnv.redisUrl): Redis {
  const redis = new Redis(url, {
    enableOfflineQueue: false,
    commandTimeout: 1000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => 100,
  });
  redis.on("error", () => {});
  clients.push(redis);
  return redis;
}

async function ready(redis: Redis, want = true): Promise<void> {
  const deadline = Date.now() + 15_000;
  while ((redis.status === "ready") !== want) {
    if (Date.now() > deadline) throw new Error(`redis status stayed ${redis.status}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Replica {
  limits: RateLimits;
  metrics: Registry;
}

/** One data-plane replica's limiter; replicas of one test share Redis and a key prefix. */
async function replica(
  test: string,
  replicas: number,
  redis: Redis | undefined = connect(),
): Promise<Replica> {
  if (redis) await ready(redis);
  const metrics = createMetricsRegistry("rate-limit-test");
  return {
    limits: new RateLimits({ redis, prefix: `${prefix}:${test}`, replicas, logger, metrics }),
    metrics,
  };
}

async function metric(r: Replica, name: string, labels: Record<string, string> = {}): Promise<number> {
  const values = (await r.metrics.getSingleMetric(name)?.get())?.values ?? [];
  return values
    .filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))
    .reduce((n, v) => n + v.value, 0);
}
const storeCalls = (r: Replica) => metric(r, "mcpgw_dp_rate_limit_store_calls_total");

let ruleSeq = 0;
function rule(r: Partial<RateLimitEntry> & Pick<RateLimitEntry, "limit" | "window_s">): RateLimitEntry {
  ruleSeq++;
  return {
    id: `rl_${ruleSeq}`,
    name: `rule ${ruleSeq}`,
    scope: "server",
    match: {},
    burst: null,
    block_s: null,
    costs: {},
    ...r,
  };
}

function subject(rules: RateLimitEntry[], tool = "echo"): RateLimitSubject {
  const principal: Principal = {
    kind: "user",
    id: "usr_1",
    org_id: "org_1",
    role: "member",
    user_id: "usr_1",
  };
  return {
    ip: "127.0.0.1",
    principal,
    routed: {
      server: { id: "srv_1" } as ServerEntry,
      namespace: { id: "ns_1" } as NamespaceEntry,
      org: { org_id: "org_1", rate_limits: rules } as unknown as OrgSnapshot,
    },
    method: "tools/call",
    tool,
  };
}

/** Admitted calls of `n` sequential checks. */
async function admitted(r: Replica, s: RateLimitSubject, n: number): Promise<number> {
  let ok = 0;
  for (let i = 0; i < n; i++) if ((await r.limits.check(s))?.allowed) ok++;
  return ok;
}

afterEach(() => {
  for (const c of clients.splice(0)) c.disconnect();
});
afterAll(async () => {
  await deleteRedisKeys(testEnv.redisUrl, prefix);
});

describe("rate limits shared through Redis leases", () => {
  it("admits exactly 5 of a 5-per-minute limit across two replicas, refusing the 6th with Retry-After and RateLimit headers", async () => {
    const a = await replica("exact", 2);
    const b = await replica("exact", 2);
    const r = rule({ limit: 5, window_s: 60 });
    const s = subject([r]);
    const verdicts = [];
    for (let i = 0; i < 8; i++) verdicts.push(await (i % 2 ? b : a).limits.check(s));
    expect(verdicts.map((v) => v?.allowed)).toEqual([true, true, true, true, true, false, false, false]);
    expect(verdicts[0]!.headers).toEqual({
      "ratelimit-policy": `"${r.id}";q=5;w=60`,
      ratelimit: expect.stringMatching(new RegExp(`^"${r.id}";r=4;t=(59|60)$`)),
    });
    expect(verdicts[4]!.headers.ratelimit).toMatch(/;r=0;/);
    const refused = verdicts[5]!;
    expect(refused.retryAfterS).toBeGreaterThanOrEqual(59);
    expect(refused.retryAfterS).toBeLessThanOrEqual(60);
    expect(refused.headers.ratelimit).toMatch(new RegExp(`^"${r.id}";r=0;t=${refused.retryAfterS}$`));
    expect(refused.rule).toEqual({ id: r.id, name: r.name });
    expect(await metric(b, "mcpgw_dp_rate_limited_total", { rule: r.id })).toBe(2);
    // Small limits are counted call by call; a replica Redis refused once refuses in memory.
    expect(await storeCalls(a)).toBe(3 + 1);
    expect(await storeCalls(b)).toBe(2 + 1);
    expect(await metric(a, "mcpgw_dp_rate_limit_store_calls_total", { kind: "lease" })).toBe(0);
  });

  it("admits again once the window has passed", async () => {
    const a = await replica("window", 2);
    const s = subject([rule({ limit: 2, window_s: 1 })]);
    expect(await admitted(a, s, 3)).toBe(2);
    const refused = await a.limits.check(s);
    expect(refused?.retryAfterS).toBe(1);
    await new Promise((r) => setTimeout(r, 1200));
    expect((await a.limits.check(s))?.allowed).toBe(true);
  });

  it("decides calls from leases, with a round trip per batch instead of per call", async () => {
    const a = await replica("leases", 1);
    const s = subject([
      rule({ limit: 1_000_000, window_s: 60 }),
      rule({ scope: "user", limit: 1_000_000, window_s: 60 }),
      rule({ scope: "method", limit: 1_000_000, window_s: 60 }),
    ]);
    expect(await admitted(a, s, 3000)).toBe(3000);
    // Leases double from 1 to 128 points: ~3000 / 64 refills per rule plus the ramp.
    const calls = await storeCalls(a);
    expect(calls).toBeLessThan(3 * 80);
    expect(await metric(a, "mcpgw_dp_rate_limit_store_calls_total", { kind: "call" })).toBeLessThan(3 * 10);
    const v = await a.limits.check(s);
    expect(v?.headers.ratelimit).toMatch(/;r=99\d{4};t=(59|60)$/);
  });

  it("admits between limit − 2·L and the limit across two replicas under concurrent load", async () => {
    const limit = 2000;
    const cap = leaseCap(limit, 2);
    expect(cap).toBe(50);
    const a = await replica("shared", 2);
    const b = await replica("shared", 2);
    const s = subject([rule({ limit, window_s: 60 })]);
    let ok = 0;
    let calls = 0;
    for (let round = 0; round < 60; round++) {
      const batch = [...Array.from({ length: 20 }, () => a), ...Array.from({ length: 20 }, () => b)];
      const verdicts = await Promise.all(batch.map((r) => r.limits.check(s)));
      ok += verdicts.filter((v) => v?.allowed).length;
      calls += batch.length;
    }
    expect(calls).toBe(2400);
    expect(ok).toBeLessThanOrEqual(limit);
    expect(ok).toBeGreaterThanOrEqual(limit - 2 * cap);
    expect((await storeCalls(a)) + (await storeCalls(b))).toBeLessThan(calls / 5);
  });

  it("falls short of the limit by at most the other replica's lease when the window ends (R·L, L = leaseCap)", async () => {
    const limit = 400;
    const cap = leaseCap(limit, 2);
    expect(cap).toBe(10);
    const a = await replica("stranded", 2);
    const b = await replica("stranded", 2);
    const s = subject([rule({ limit, window_s: 3 })]);
    // A takes a few leases and goes quiet; B then asks for far more than is left.
    const fromA = await admitted(a, s, 40);
    const fromB = await admitted(b, s, 600);
    expect(fromA).toBe(40);
    expect(fromA + fromB).toBeLessThanOrEqual(limit);
    expect(fromA + fromB).toBeGreaterThanOrEqual(limit - cap);
    // What A still holds is its own to spend in this window, never more than the limit in all.
    const rest = await admitted(a, s, cap + 5);
    expect(fromA + fromB + rest).toBe(limit);
  });

  it("keeps a lease from outliving its Redis window", async () => {
    const a = await replica("expiry", 1);
    const s = subject([rule({ limit: 10_000, window_s: 1 })]);
    expect(await admitted(a, s, 200)).toBe(200);
    await new Promise((r) => setTimeout(r, 1100));
    const before = await storeCalls(a);
    // The unspent points of the old window are written off: the next call asks Redis again.
    expect((await a.limits.check(s))?.allowed).toBe(true);
    expect(await storeCalls(a)).toBe(before + 1);
  });

  it("holds a key for block_s after it goes over, on every replica", async () => {
    const a = await replica("block", 2);
    const b = await replica("block", 2);
    const s = subject([rule({ limit: 2, window_s: 1, block_s: 3 })]);
    expect(await admitted(a, s, 2)).toBe(2);
    const over = await a.limits.check(s);
    expect(over?.allowed).toBe(false);
    expect(over?.retryAfterS).toBe(3);
    await new Promise((r) => setTimeout(r, 1200));
    // The window has passed, the block has not.
    const elsewhere = await b.limits.check(s);
    expect(elsewhere?.allowed).toBe(false);
    expect(elsewhere?.retryAfterS).toBeGreaterThanOrEqual(1);
    expect((await a.limits.check(s))?.allowed).toBe(false);
  });

  it("admits a burst on top of the limit, then refuses", async () => {
    const a = await replica("burst", 1);
    const s = subject([rule({ limit: 2, window_s: 60, burst: 2 })]);
    const verdicts = [];
    for (let i = 0; i < 5; i++) verdicts.push(await a.limits.check(s));
    expect(verdicts.map((v) => v?.allowed)).toEqual([true, true, true, true, false]);
    expect(verdicts[2]!.headers.ratelimit).toMatch(/;r=0;/);
  });

  it("weighs a call by its tool's cost and counts refused calls, as before", async () => {
    const a = await replica("costs", 2);
    const b = await replica("costs", 2);
    const r = rule({ limit: 6, window_s: 60, costs: { "sl*": 4 } });
    expect((await a.limits.check(subject([r], "sleep")))?.allowed).toBe(true);
    expect((await b.limits.check(subject([r], "echo")))?.allowed).toBe(true);
    expect((await a.limits.check(subject([r], "sleep")))?.allowed).toBe(false);
    expect((await b.limits.check(subject([r], "echo")))?.allowed).toBe(false);
  });

  it("refuses everything under a limit of 0", async () => {
    const a = await replica("zero", 2);
    const r = rule({ limit: 0, window_s: 60 });
    const v = await a.limits.check(subject([r]));
    expect(v?.allowed).toBe(false);
    expect(v?.headers.ratelimit).toMatch(/;r=0;t=60$/);
  });

  it("answers undefined when no rule applies", async () => {
    const a = await replica("none", 1);
    expect(await a.limits.check(subject([]))).toBeUndefined();
    expect(
      await a.limits.check(subject([rule({ limit: 1, window_s: 60, match: { server_id: "srv_other" } })])),
    ).toBe(undefined);
    expect(await storeCalls(a)).toBe(0);
  });

  it("counts in memory without Redis (embedded mode)", async () => {
    const a = await replica("memory", 1, undefined);
    const s = subject([rule({ limit: 3, window_s: 60 })]);
    expect(await admitted(a, s, 5)).toBe(3);
  });
});

describe("rate limits while Redis is down", () => {
  it("enforce this replica's share in memory, keep refused keys refused, and void leases taken before the outage", async () => {
    const redis = await startPrivateRedis();
    try {
      const client = connect(redis.url);
      await ready(client);
      const a = await replica("outage", 2, client);
      const small = subject([rule({ limit: 10, window_s: 60 })]);
      const large = rule({ limit: 100_000, window_s: 60 });
      const refusedKey = subject([rule({ limit: 1, window_s: 60 })]);
      expect(await admitted(a, small, 4)).toBe(4);
      expect(await admitted(a, subject([large]), 50)).toBe(50);
      expect(await admitted(a, refusedKey, 2)).toBe(1);

      await redis.stop();
      await ready(client, false);
      // Half of 10 for this replica, whatever Redis had counted; never an error.
      expect(await admitted(a, small, 7)).toBe(5);
      expect(await metric(a, "mcpgw_dp_rate_limit_store_errors_total")).toBeGreaterThanOrEqual(7);
      expect(await admitted(a, subject([large]), 20)).toBe(20);
      expect(await admitted(a, refusedKey, 1)).toBe(0);

      await redis.start();
      await ready(client);
      // Redis came back empty: the shared budget applies again, and the points leased before the
      // outage are not spent against it (the next call takes a new lease).
      const calls = await storeCalls(a);
      expect((await a.limits.check(subject([large])))?.allowed).toBe(true);
      expect(await storeCalls(a)).toBe(calls + 1);
      expect(await admitted(a, small, 12)).toBe(10);
    } finally {
      await redis.stop();
    }
  }, 60_000);
});
