/**
 * Gateway overhead benchmark: the same MCP load (`tools/call add {a:1,b:2}` on one initialized
 * session per target) against an SDK-built Streamable HTTP upstream directly, and through one
 * data-plane replica of the distributed gateway (real control plane, Postgres, NATS and Redis on
 * loopback) in four variants, all measured side by side in one run:
 *
 *   gw-jwt  user JWT (`Authorization: Bearer <jwt>`), server without rate-limit rules
 *   gw-key  user API key (`Authorization: Bearer mcpgw_…`), same server
 *   gw-rl1  user JWT, a server with one rate-limit rule (huge limit, nothing is rejected)
 *   gw-rl3  user JWT, a server with three rules (scopes server, user, method)
 *
 *   BENCH_SUITE=gateway pnpm bench  this suite only
 *   BENCH_SUITE=stdio pnpm bench    the stdio suite of stdio.ts only (stdio upstream through the
 *                                   gateway vs supergateway vs mcp-proxy; memory per idle session)
 *   BENCH_SUITE=all pnpm bench      both, one after the other (~7 min; the default)
 *   BENCH_SUITE=forwarding pnpm bench  requests of a session carried to its replica over NATS vs
 *                                   sent to it directly (forwarding.ts; not part of `all`)
 *
 * Environment: BENCH_DURATION_S (measured seconds per phase, 5), BENCH_WARMUP_S (warm-up
 * before each phase, 0.5), BENCH_ROUNDS (rounds of every target per load level, 4),
 * BENCH_NOISY_CORES (a phase during which other processes kept more cores busy is flagged, 0.25),
 * BENCH_RETRY_BUDGET_S (seconds that may go to re-measuring noisy phases in place, 30; 0: never),
 * BENCH_CONNECTIONS (load levels, "10"; "10,1" adds the single-connection level),
 * BENCH_TIMEOUT_S (hard limit for the whole run), BENCH_PROFILE=1 (CPU-profile the data plane;
 * profiles, their summaries and the figures of that run go to results/profiles/<time>/, not to
 * results/latest.json).
 */
import { readdirSync, readFileSync } from "node:fs";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import autocannon from "autocannon";
import { type ManagedProcess, startProcess, waitForReady } from "../packages/testing/src/processes.ts";
import { type Stack, startStack } from "../packages/testing/src/stack.ts";
import {
  envNumber,
  gitRevision,
  machineBusyMs,
  mcpHeaders,
  median,
  metricSum,
  openSession,
  PROTOCOL_VERSION,
  percentile,
  percentileOf,
  post,
  processCpuMs,
  repoRoot,
  resultsDir,
  round1,
  round2,
  round3,
  selfCpuMs,
  startBenchUpstream,
  table,
  waitForQuiet,
} from "./common.ts";
import { forwardingSuiteTimeoutS, runForwardingSuite, stopForwardingSuite } from "./forwarding.ts";
import { formatSummary, summarizeProfileFile } from "./profile-summary.ts";
import { runStdioSuite, stdioSuiteTimeoutS, stopStdioSuite } from "./stdio.ts";

/**
 * Which suites run: `gateway` (the default: this file's gateway-overhead suite), `stdio`
 * (`stdio.ts`: stdio upstream through the gateway vs supergateway vs mcp-proxy, and memory per
 * idle session), or `all` (both, one after the other).
 */
const SUITE = (() => {
  const v = process.env.BENCH_SUITE || "all";
  if (v !== "gateway" && v !== "stdio" && v !== "forwarding" && v !== "all")
    throw new Error(`BENCH_SUITE must be gateway, stdio, forwarding or all, got ${JSON.stringify(v)}`);
  return v;
})();
const RUN_GATEWAY = SUITE === "gateway" || SUITE === "all";
const RUN_STDIO = SUITE === "stdio" || SUITE === "all";
const RUN_FORWARDING = SUITE === "forwarding";

const DURATION_S = envNumber("BENCH_DURATION_S", 5);
const WARMUP_S = envNumber("BENCH_WARMUP_S", 0.5);
const ROUNDS = Math.round(envNumber("BENCH_ROUNDS", 4));
const NOISY_CORES = envNumber("BENCH_NOISY_CORES", 0.25);
/**
 * Seconds the run may spend re-measuring noisy phases (in place, so the order is kept), at most
 * twice per phase; 0 disables. Other jobs on the machine come in bursts: a phase is worth redoing.
 */
const RETRY_BUDGET_S = envNumber("BENCH_RETRY_BUDGET_S", 30, true);
const MAX_RETRIES_PER_PHASE = 2;
const LEVELS = (process.env.BENCH_CONNECTIONS || "10").split(",").map((s) => {
  const n = Number(s.trim());
  if (!Number.isInteger(n) || n < 1) throw new Error(`BENCH_CONNECTIONS: bad value ${JSON.stringify(s)}`);
  return n;
});
const PROFILE = process.env.BENCH_PROFILE === "1";
/** Unmeasured JIT warm-up of every target at the start. */
const INITIAL_WARMUP_S = Math.max(2, WARMUP_S);
/** Rate-limit rules reach the replica with the next org snapshot; wait before measuring. */
const RULES_SETTLE_MS = 1500;

type TargetName = "direct" | "gw-jwt" | "gw-key" | "gw-rl1" | "gw-rl3";
/**
 * Phase order of odd rounds; even rounds run it backwards (ABBA generalized), so over every two
 * rounds each target has the same mean position. gw-jwt, the baseline of the ratios, sits in the
 * middle, next to gw-key and gw-rl1.
 */
const ORDER: TargetName[] = ["direct", "gw-key", "gw-jwt", "gw-rl1", "gw-rl3"];
const PHASES = LEVELS.length * ROUNDS * ORDER.length;
const TIMEOUT_S = envNumber(
  "BENCH_TIMEOUT_S",
  (RUN_GATEWAY
    ? 120 +
      RETRY_BUDGET_S * 1.5 +
      ORDER.length * (INITIAL_WARMUP_S + 2) +
      PHASES * (DURATION_S + WARMUP_S + 2)
    : 0) +
    (RUN_STDIO ? stdioSuiteTimeoutS() : 0) +
    (RUN_FORWARDING ? forwardingSuiteTimeoutS() : 0),
);

/** What is compared: `b` relative to `a` (throughput b/a, latency b − a). */
const PAIRS: Array<{ id: string; b: TargetName; a: TargetName; what: string }> = [
  { id: "jwt/direct", b: "gw-jwt", a: "direct", what: "gateway, user JWT, no rules vs direct" },
  { id: "key/direct", b: "gw-key", a: "direct", what: "gateway, user API key, no rules vs direct" },
  { id: "rl1/direct", b: "gw-rl1", a: "direct", what: "gateway, JWT, 1 rule vs direct" },
  { id: "rl3/direct", b: "gw-rl3", a: "direct", what: "gateway, JWT, 3 rules vs direct" },
  { id: "key/jwt", b: "gw-key", a: "gw-jwt", what: "API key vs (cached) JWT" },
  { id: "rl1/rl0", b: "gw-rl1", a: "gw-jwt", what: "1 rate-limit rule vs none" },
  { id: "rl3/rl0", b: "gw-rl3", a: "gw-jwt", what: "3 rate-limit rules vs none" },
];

/** The design goal at moderate load (the first level), for the JWT variant without rules. */
const GOAL = { throughputRatio: 0.9, p50DeltaMs: 0.25 };

/** Every request gets its own JSON-RPC id: concurrent calls share one session. */
let nextId = 0;
const callBody = () =>
  `{"jsonrpc":"2.0","id":${++nextId},"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}`;
const EXPECTED = '"text":"3"';

interface Target {
  name: TargetName;
  description: string;
  url: string;
  headers: Record<string, string>;
  gateway: boolean;
  /** Rate-limit rules that apply to this target's requests. */
  rules: string[];
}

interface CpuSample {
  /** Busy CPU time of the whole machine (all cores, all processes). */
  machine: number | undefined;
  loadgen: number;
  gateway: number | undefined;
  upstream: number | undefined;
  /** The Redis server holding the rate-limit counters (shared with other jobs on the machine). */
  redis: number | undefined;
}

interface PhaseResult {
  target: TargetName;
  connections: number;
  round: number;
  durationS: number;
  ok: number;
  non2xx: number;
  /** Of non2xx: answers 429 (rate limited). Must be 0: the limits are far above the load. */
  rateLimited: number;
  errors: number;
  timeouts: number;
  mismatches: number;
  latencies: number[];
  /** CPU milliseconds spent by each process during the phase. */
  cpuMs: CpuSample;
}

/** The pid of the local `redis-server` listening on the port of `url`, if it runs here. */
function findRedisPid(url: string): number | undefined {
  let port: string;
  let host: string;
  try {
    const u = new URL(url);
    port = u.port || "6379";
    host = u.hostname;
  } catch {
    return undefined;
  }
  if (!["127.0.0.1", "localhost", "::1", "[::1]"].includes(host)) return undefined;
  try {
    const candidates: number[] = [];
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        if (readFileSync(`/proc/${entry}/comm`, "utf8").trim() !== "redis-server") continue;
        const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").replace(/\0/g, " ");
        candidates.push(Number(entry));
        if (cmdline.includes(`:${port}`) || cmdline.includes(`--port ${port}`)) return Number(entry);
      } catch {
        // the process went away
      }
    }
    return candidates.length === 1 ? candidates[0] : undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Rate-limit counters in Redis (ioredis from the testing package, a dependency of the bench).

interface RedisLike {
  connect(): Promise<void>;
  scan(cursor: string, ...args: Array<string | number>): Promise<[string, string[]]>;
  mget(...keys: string[]): Promise<Array<string | null>>;
  disconnect(): void;
}
type RedisCtor = new (url: string, opts: Record<string, unknown>) => RedisLike;

/**
 * Points consumed per rule, read from the data plane's counters (`<prefix>:rl:<rule id>:…`,
 * insurance counters excluded: those live in the replica's memory). Only the current window of
 * each counter is there (rules count in fixed windows).
 */
async function ruleCounters(
  redisUrl: string,
  prefix: string,
  ruleIds: string[],
): Promise<Record<string, { keys: number; points: number }>> {
  const require = createRequire(join(repoRoot, "packages/testing/package.json"));
  const mod = (await import(pathToFileURL(require.resolve("ioredis")).href)) as {
    Redis?: RedisCtor;
    default?: RedisCtor & { Redis?: RedisCtor };
  };
  const Redis = mod.Redis ?? mod.default?.Redis ?? mod.default;
  if (!Redis) throw new Error("ioredis not found");
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  const out: Record<string, { keys: number; points: number }> = {};
  try {
    await redis.connect();
    for (const id of ruleIds) {
      const keys: string[] = [];
      let cursor = "0";
      do {
        const [next, found] = await redis.scan(cursor, "MATCH", `${prefix}:rl:${id}:*`, "COUNT", 500);
        cursor = next;
        keys.push(...found.filter((k) => !k.includes(":insurance") && !k.includes(":burst")));
      } while (cursor !== "0");
      const values = keys.length ? await redis.mget(...keys) : [];
      out[id] = { keys: keys.length, points: values.reduce((n, v) => n + (Number(v) || 0), 0) };
    }
  } finally {
    redis.disconnect();
  }
  return out;
}

/**
 * One checked call. Through the gateway, the answer must carry a RateLimit-Policy header exactly
 * when rules apply (the rules reach the replica with the next snapshot: poll until they do).
 */
async function checkCall(target: Target, waitMs: number): Promise<void> {
  const deadline = Date.now() + waitMs;
  while (true) {
    const r = await post(target.url, target.headers, {
      jsonrpc: "2.0",
      id: "probe",
      method: "tools/call",
      params: { name: "add", arguments: { a: 1, b: 2 } },
    });
    if (r.status !== 200 || !r.text.includes(EXPECTED)) {
      throw new Error(`${target.name}: tools/call probe answered HTTP ${r.status}: ${r.text.slice(0, 300)}`);
    }
    if (!target.gateway) return;
    const policyRule = r.rateLimitPolicy ? /^"([^"]+)"/.exec(r.rateLimitPolicy)?.[1] : undefined;
    if (target.rules.length === 0 && policyRule === undefined) return;
    if (target.rules.length > 0 && policyRule !== undefined && target.rules.includes(policyRule)) return;
    if (Date.now() > deadline) {
      throw new Error(
        `${target.name}: expected ${target.rules.length ? `a RateLimit-Policy of rules ${target.rules.join(", ")}` : "no RateLimit-Policy"}, got ${JSON.stringify(r.rateLimitPolicy)}`,
      );
    }
    await new Promise((res) => setTimeout(res, 200));
  }
}

// ---------------------------------------------------------------------------------------------
// Load.

interface Pids {
  gateway: number | undefined;
  upstream: number | undefined;
  redis: number | undefined;
}

function runLoad(
  target: Target,
  connections: number,
  durationS: number,
  pids: Pids,
  round: number,
): Promise<PhaseResult> {
  const latencies: number[] = [];
  let rateLimited = 0;
  const before: CpuSample = {
    machine: machineBusyMs(),
    loadgen: selfCpuMs(),
    gateway: processCpuMs(pids.gateway),
    upstream: processCpuMs(pids.upstream),
    redis: processCpuMs(pids.redis),
  };
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: target.url,
        method: "POST",
        headers: target.headers,
        // Not `idReplacement`: autocannon 8 computes a wrong Content-Length for it.
        requests: [{ setupRequest: (req) => ({ ...req, body: callBody() }) }],
        connections,
        pipelining: 1,
        duration: durationS,
        timeout: 10,
        verifyBody: (body) => String(body).includes(EXPECTED),
      },
      (err, result) => {
        if (err) {
          reject(err);
          return;
        }
        const delta = (a: number | undefined, b: number | undefined) =>
          a === undefined || b === undefined ? undefined : a - b;
        resolve({
          target: target.name,
          connections,
          round,
          durationS: result.duration,
          ok: latencies.length,
          non2xx: result.non2xx,
          rateLimited,
          errors: result.errors,
          timeouts: result.timeouts,
          mismatches: result.mismatches,
          latencies,
          cpuMs: {
            machine: delta(machineBusyMs(), before.machine),
            loadgen: selfCpuMs() - before.loadgen,
            gateway: delta(processCpuMs(pids.gateway), before.gateway),
            upstream: delta(processCpuMs(pids.upstream), before.upstream),
            redis: delta(processCpuMs(pids.redis), before.redis),
          },
        });
      },
    );
    // autocannon's own histogram has 1 ms resolution; keep every 2xx response time instead.
    instance.on("response", (_client, statusCode, _bytes, responseTime) => {
      if (statusCode >= 200 && statusCode < 300) latencies.push(responseTime);
      else if (statusCode === 429) rateLimited++;
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Statistics and output.

interface Aggregate {
  target: TargetName;
  connections: number;
  rounds: number;
  requests: number;
  reqPerSec: number;
  reqPerSecRounds: number[];
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
  non2xx: number;
  rateLimited: number;
  errors: number;
  timeouts: number;
  mismatches: number;
  /** CPU microseconds per successful request, per process. */
  cpuUsPerReq: { loadgen: number; gateway: number | null; upstream: number | null; redis: number | null };
  /** Mean CPU cores busy during the phase, per process (the machine has `cpus` of them). */
  cpuCores: {
    loadgen: number;
    gateway: number | null;
    upstream: number | null;
    redis: number | null;
    /** Everything else on the machine (kernel, databases, other users' jobs): the noise. */
    other: number | null;
    machine: number | null;
  };
}

function aggregate(phases: PhaseResult[]): Aggregate {
  const first = phases[0]!;
  const all = new Float64Array(phases.reduce((n, p) => n + p.latencies.length, 0));
  let o = 0;
  for (const p of phases) {
    all.set(p.latencies, o);
    o += p.latencies.length;
  }
  all.sort();
  const requests = phases.reduce((n, p) => n + p.ok, 0);
  const duration = phases.reduce((n, p) => n + p.durationS, 0);
  const sum = (f: (p: PhaseResult) => number) => phases.reduce((n, p) => n + f(p), 0);
  const cpuSum = (k: keyof CpuSample) =>
    phases.every((p) => p.cpuMs[k] !== undefined) ? sum((p) => p.cpuMs[k]!) : undefined;
  const perReq = (ms: number | undefined) =>
    ms === undefined || requests === 0 ? null : round1((ms * 1000) / requests);
  const cores = (ms: number | undefined) => (ms === undefined ? null : round2(ms / 1000 / duration));
  const loadgen = cpuSum("loadgen");
  const machine = cpuSum("machine");
  const gateway = cpuSum("gateway");
  const upstream = cpuSum("upstream");
  const redis = cpuSum("redis");
  return {
    target: first.target,
    connections: first.connections,
    rounds: phases.length,
    requests,
    reqPerSec: Math.round(requests / duration),
    reqPerSecRounds: phases.map((p) => Math.round(p.ok / p.durationS)),
    latencyMs: {
      p50: round3(percentile(all, 50)),
      p90: round3(percentile(all, 90)),
      p99: round3(percentile(all, 99)),
      max: round3(all[all.length - 1] ?? Number.NaN),
      mean: round3(all.reduce((a, b) => a + b, 0) / Math.max(1, all.length)),
    },
    non2xx: sum((p) => p.non2xx),
    rateLimited: sum((p) => p.rateLimited),
    errors: sum((p) => p.errors),
    timeouts: sum((p) => p.timeouts),
    mismatches: sum((p) => p.mismatches),
    cpuUsPerReq: {
      loadgen: perReq(loadgen) ?? 0,
      gateway: perReq(gateway),
      upstream: perReq(upstream),
      redis: perReq(redis),
    },
    cpuCores: {
      loadgen: cores(loadgen) ?? 0,
      gateway: cores(gateway),
      upstream: cores(upstream),
      redis: cores(redis),
      other:
        machine === undefined || gateway === undefined || upstream === undefined
          ? null
          : cores(machine - (loadgen ?? 0) - gateway - upstream - (redis ?? 0)),
      machine: cores(machine),
    },
  };
}

function errorCount(a: Aggregate): number {
  return a.non2xx + a.errors + a.mismatches;
}

/** Cores kept busy during a phase by processes other than the measured ones. */
function otherCores(r: PhaseResult): number | undefined {
  const { machine, loadgen, gateway, upstream, redis } = r.cpuMs;
  if (machine === undefined || gateway === undefined || upstream === undefined) return undefined;
  return (machine - loadgen - gateway - upstream - (redis ?? 0)) / 1000 / r.durationS;
}

function isNoisy(r: PhaseResult): boolean {
  return (otherCores(r) ?? 0) > NOISY_CORES;
}

const rate = (p: PhaseResult) => p.ok / p.durationS;

/** `b` relative to `a` at one load level: pooled figures, and per round (phases of one round ran close together). */
function compare(
  pair: (typeof PAIRS)[number],
  connections: number,
  phases: PhaseResult[],
  aggregates: Aggregate[],
) {
  const A = aggregates.find((x) => x.connections === connections && x.target === pair.a)!;
  const B = aggregates.find((x) => x.connections === connections && x.target === pair.b)!;
  const rounds = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const at = (t: TargetName) =>
      phases.find((p) => p.connections === connections && p.round === round && p.target === t)!;
    const pa = at(pair.a);
    const pb = at(pair.b);
    const gwUs = (p: PhaseResult) =>
      p.cpuMs.gateway === undefined || p.ok === 0 ? undefined : (p.cpuMs.gateway * 1000) / p.ok;
    const ua = gwUs(pa);
    const ub = gwUs(pb);
    rounds.push({
      round,
      throughputRatio: round3(rate(pb) / rate(pa)),
      p50DeltaMs: round3(percentileOf(pb.latencies, 50) - percentileOf(pa.latencies, 50)),
      gatewayCpuUsPerReqDelta:
        pair.a !== "direct" && ua !== undefined && ub !== undefined ? round1(ub - ua) : null,
      noisy: isNoisy(pa) || isNoisy(pb),
    });
  }
  const quiet = rounds.filter((r) => !r.noisy);
  const gwA = A.cpuUsPerReq.gateway;
  const gwB = B.cpuUsPerReq.gateway;
  const cpuDeltas = rounds.map((r) => r.gatewayCpuUsPerReqDelta).filter((d): d is number => d !== null);
  return {
    id: pair.id,
    what: pair.what,
    b: pair.b,
    a: pair.a,
    connections,
    throughputRatio: round3(B.reqPerSec / A.reqPerSec),
    medianRoundThroughputRatio: round3(median(rounds.map((r) => r.throughputRatio))),
    quietRounds: quiet.length,
    medianQuietRoundThroughputRatio: quiet.length
      ? round3(median(quiet.map((r) => r.throughputRatio)))
      : null,
    p50Ratio: round3(B.latencyMs.p50 / A.latencyMs.p50),
    p50DeltaMs: round3(B.latencyMs.p50 - A.latencyMs.p50),
    medianRoundP50DeltaMs: round3(median(rounds.map((r) => r.p50DeltaMs))),
    p90DeltaMs: round3(B.latencyMs.p90 - A.latencyMs.p90),
    p99DeltaMs: round3(B.latencyMs.p99 - A.latencyMs.p99),
    /** Extra data-plane CPU per request of `b` over `a` (gateway pairs only). */
    gatewayCpuUsPerReqDelta: pair.a !== "direct" && gwA !== null && gwB !== null ? round1(gwB - gwA) : null,
    medianRoundGatewayCpuUsPerReqDelta: cpuDeltas.length ? round1(median(cpuDeltas)) : null,
    rounds,
  };
}

// ---------------------------------------------------------------------------------------------
// Main.

let stack: Stack | undefined;
let upstreamProc: ManagedProcess | undefined;
let gatewayStopping: Promise<void> | undefined;
let cleaning: Promise<void> | undefined;

/** Stops the gateway suite's processes (once; also between the suites of `BENCH_SUITE=all`). */
function stopGatewaySuite(): Promise<void> {
  gatewayStopping ??= (async () => {
    const results = await Promise.allSettled([stack?.stop(), upstreamProc?.stop()]);
    for (const r of results) if (r.status === "rejected") console.error("cleanup:", r.reason);
  })();
  return gatewayStopping;
}

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    await Promise.allSettled([stopGatewaySuite(), stopStdioSuite(), stopForwardingSuite()]);
  })();
  return cleaning;
}

async function abort(reason: string, code: number): Promise<never> {
  console.error(reason);
  const hard = setTimeout(() => process.exit(code), 20_000);
  hard.unref();
  await cleanup();
  process.exit(code);
}

// A closed stdout or stderr (`pnpm bench | head`) must not kill the run before its clean-up.
for (const stream of [process.stdout, process.stderr]) stream.on("error", () => {});
process.once("SIGINT", () => void abort("interrupted; cleaning up", 130));
process.once("SIGTERM", () => void abort("terminated; cleaning up", 143));
const watchdog = setTimeout(
  () => void abort(`bench exceeded BENCH_TIMEOUT_S=${TIMEOUT_S}; cleaning up`, 1),
  TIMEOUT_S * 1000,
);
watchdog.unref();

const RATE_LIMITED_METRIC = "mcpgw_dp_rate_limited_total";
const STORE_FALLBACK_METRIC = "mcpgw_dp_rate_limit_store_errors_total";
/** Round trips to Redis for rate limits (leases and calls counted one by one). */
const STORE_CALLS_METRIC = "mcpgw_dp_rate_limit_store_calls_total";

async function gatewaySuite(): Promise<number> {
  const startedAt = new Date();
  console.log(
    `mcpgw bench: levels ${LEVELS.join(",")} connections, ${ROUNDS} round(s) of ${ORDER.join(", ")} each, ` +
      `${DURATION_S} s measured + ${WARMUP_S} s warm-up per phase${PROFILE ? ", data plane CPU-profiled" : ""}`,
  );
  const profileDir = join(resultsDir, "profiles", startedAt.toISOString().replace(/[:.]/g, "-"));

  const [up, s] = await Promise.all([
    startBenchUpstream((proc) => {
      upstreamProc = proc;
    }),
    startStack({ replicas: 1 }),
  ]);
  stack = s;
  const dp = s.dataPlanes[0]!;
  const redisUrl = s.env.REDIS_URL;
  const redisPrefix = s.env.MCPGW_QUEUE_PREFIX!;
  if (!redisUrl) throw new Error("the stack has no REDIS_URL: rate limits would be counted in memory");
  if (PROFILE) {
    // `--cpu-prof` is not allowed in NODE_OPTIONS: restart the replica with it on the command line.
    await mkdir(profileDir, { recursive: true });
    await dp.proc.stop();
    dp.proc = startProcess(
      process.execPath,
      ["--cpu-prof", `--cpu-prof-dir=${profileDir}`, "--import", "tsx", "services/data-plane/src/main.ts"],
      {
        ...s.env,
        DP_PORT: String(dp.port),
        DP_HOST: "127.0.0.1",
        MCPGW_DATA_DIR: dp.dataDir,
        MCPGW_REPLICA_ID: "dp0",
      },
    );
    await waitForReady(`${dp.url}/ready`, dp.proc);
  }

  // Control plane: one namespace, three servers on the same upstream, a user API key, and the
  // rate-limit rules (all with match.server_id, so each applies to its own server only).
  const api = await s.api();
  const created = async <T>(what: string, path: string, body: unknown): Promise<T> => {
    const r = await api.call<T>("POST", path, body);
    if (r.status !== 201) throw new Error(`${what}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  const ns = await created<{ id: string }>("create namespace", "/api/v1/namespaces", {
    name: "Bench",
    slug: "bench",
  });
  const server = (name: string) =>
    created<{ id: string }>(`register server ${name}`, "/api/v1/servers", {
      namespace_id: ns.id,
      name,
      transport: "streamable_http",
      url: up.url,
    });
  const rl0 = await server("bench-rl0");
  const rl1 = await server("bench-rl1");
  const rl3 = await server("bench-rl3");
  const key = await created<{ id: string; prefix: string; key: string }>("create API key", "/auth/api-keys", {
    name: "bench",
  });
  const HUGE = { limit: 1_000_000_000, window_s: 60 };
  const ruleSpecs = [
    { target: "gw-rl1", name: "rl1", scope: "server", match: { server_id: rl1.id } },
    { target: "gw-rl3", name: "rl3-server", scope: "server", match: { server_id: rl3.id } },
    { target: "gw-rl3", name: "rl3-user", scope: "user", match: { server_id: rl3.id } },
    { target: "gw-rl3", name: "rl3-method", scope: "method", match: { server_id: rl3.id } },
  ] as const;
  const rules: Array<{ id: string; name: string; scope: string; target: TargetName }> = [];
  for (const spec of ruleSpecs) {
    const { target, ...body } = spec;
    const r = await created<{ id: string }>(`create rate limit ${spec.name}`, "/api/v1/rate-limits", {
      ...body,
      ...HUGE,
    });
    rules.push({ id: r.id, name: spec.name, scope: spec.scope, target });
  }
  const rulesOf = (t: TargetName) => rules.filter((r) => r.target === t).map((r) => r.id);
  await new Promise((r) => setTimeout(r, RULES_SETTLE_MS));

  const mcpUrl = (serverId: string) => `${dp.url}/servers/${serverId}/mcp`;
  const jwt = { authorization: `Bearer ${api.token}` };
  const apiKey = { authorization: `Bearer ${key.key}` };
  const specs: Array<Omit<Target, "headers"> & { auth: Record<string, string> }> = [
    { name: "direct", description: "upstream directly", url: up.url, gateway: false, rules: [], auth: {} },
    {
      name: "gw-jwt",
      description: "gateway, user JWT, no rules",
      url: mcpUrl(rl0.id),
      gateway: true,
      rules: [],
      auth: jwt,
    },
    {
      name: "gw-key",
      description: "gateway, user API key, no rules",
      url: mcpUrl(rl0.id),
      gateway: true,
      rules: [],
      auth: apiKey,
    },
    {
      name: "gw-rl1",
      description: "gateway, user JWT, 1 rule (server)",
      url: mcpUrl(rl1.id),
      gateway: true,
      rules: rulesOf("gw-rl1"),
      auth: jwt,
    },
    {
      name: "gw-rl3",
      description: "gateway, user JWT, 3 rules (server, user, method)",
      url: mcpUrl(rl3.id),
      gateway: true,
      rules: rulesOf("gw-rl3"),
      auth: jwt,
    },
  ];
  const sessions = await Promise.all(specs.map((t) => openSession(t.url, t.auth, t.gateway ? 15_000 : 5000)));
  const targets = Object.fromEntries(
    specs.map(({ auth, ...t }, i) => [
      t.name,
      { ...t, headers: mcpHeaders({ ...auth, "mcp-session-id": sessions[i]! }) },
    ]),
  ) as Record<TargetName, Target>;
  for (const name of ORDER) await checkCall(targets[name], 15_000);

  const pids: Pids = { gateway: dp.proc.child.pid, upstream: up.pid, redis: findRedisPid(redisUrl) };
  if (pids.redis === undefined)
    console.log("  (redis-server not found on this machine: its CPU is counted as 'other')");
  const metricsBefore = {
    rejected: await metricSum(dp.url, RATE_LIMITED_METRIC),
    fallbacks: await metricSum(dp.url, STORE_FALLBACK_METRIC),
    storeCalls: await metricSum(dp.url, STORE_CALLS_METRIC),
  };
  const phases: PhaseResult[] = [];
  // Profiles are summarized from here on, without the data plane's start-up.
  const loadStartUs = Number(process.hrtime.bigint() / 1000n);
  // JIT warm-up of every path before anything is measured. Its failures count too.
  const warmups: PhaseResult[] = [];
  /** Noisy phases measured again (they had no failed request). */
  const discarded: PhaseResult[] = [];
  let retryBudgetMs = RETRY_BUDGET_S * 1000;
  for (const name of ORDER) warmups.push(await runLoad(targets[name], LEVELS[0]!, INITIAL_WARMUP_S, pids, 0));

  // Every rule must have counted the warm-up in Redis: the rules are on the hot path.
  const countersAfterWarmup = await ruleCounters(
    redisUrl,
    redisPrefix,
    rules.map((r) => r.id),
  );
  for (const rule of rules) {
    const warm = warmups.find((w) => w.target === rule.target)!.ok;
    const c = countersAfterWarmup[rule.id]!;
    if (c.points === 0)
      throw new Error(`rate-limit rule ${rule.name} counted nothing in Redis after ${warm} warm-up calls`);
    if (c.points < warm)
      console.log(
        `  !! rule ${rule.name} counted ${c.points} points in Redis for ${warm} warm-up calls (Redis fallback?)`,
      );
  }
  console.log(
    `  rules counted in Redis after warm-up: ${rules.map((r) => `${r.name} ${countersAfterWarmup[r.id]!.points}`).join(", ")}`,
  );

  for (const connections of LEVELS) {
    for (let round = 1; round <= ROUNDS; round++) {
      // ABBA order, generalized: forwards in odd rounds, backwards in even rounds.
      const order = round % 2 === 1 ? ORDER : [...ORDER].reverse();
      for (const name of order) {
        const t = targets[name];
        for (let attempt = 0; ; attempt++) {
          warmups.push(await runLoad(t, connections, WARMUP_S, pids, round));
          const r = await runLoad(t, connections, DURATION_S, pids, round);
          const bad = r.non2xx + r.errors + r.mismatches;
          const retry =
            isNoisy(r) && bad === 0 && attempt < MAX_RETRIES_PER_PHASE && retryBudgetMs > 0 && !PROFILE;
          console.log(
            `  c=${String(connections).padStart(2)} round ${round} ${t.name.padEnd(6)} ${String(Math.round(r.ok / r.durationS)).padStart(6)} req/s` +
              `  p50 ${percentileOf(r.latencies, 50).toFixed(3)} ms  other processes ${otherCores(r)?.toFixed(2) ?? "n/a"} cores` +
              `${isNoisy(r) ? " (noisy)" : ""}${retry ? ", discarded: re-measuring" : ""}` +
              `${bad ? `  !! ${r.non2xx} non-2xx (${r.rateLimited} × 429), ${r.errors} errors (${r.timeouts} timeouts), ${r.mismatches} bad bodies` : ""}`,
          );
          if (!retry) {
            phases.push(r);
            break;
          }
          // A discarded phase had no failed request (else it is kept, and fails the run).
          discarded.push(r);
          const started = Date.now();
          await waitForQuiet(5000, NOISY_CORES);
          retryBudgetMs -= Date.now() - started + (WARMUP_S + DURATION_S) * 1000;
        }
      }
    }
  }
  const metricsAfter = {
    rejected: await metricSum(dp.url, RATE_LIMITED_METRIC),
    fallbacks: await metricSum(dp.url, STORE_FALLBACK_METRIC),
    storeCalls: await metricSum(dp.url, STORE_CALLS_METRIC),
  };
  const countersAtEnd = await ruleCounters(
    redisUrl,
    redisPrefix,
    rules.map((r) => r.id),
  );

  const aggregates: Aggregate[] = [];
  for (const connections of LEVELS) {
    for (const name of ORDER) {
      aggregates.push(aggregate(phases.filter((p) => p.connections === connections && p.target === name)));
    }
  }
  const comparisons = LEVELS.flatMap((connections) =>
    PAIRS.map((pair) => compare(pair, connections, phases, aggregates)),
  );
  const totalErrors = aggregates.reduce((n, a) => n + errorCount(a), 0);
  const warmupErrors = warmups.reduce((n, w) => n + w.non2xx + w.errors + w.mismatches, 0);
  const total429 = [...phases, ...warmups, ...discarded].reduce((n, p) => n + p.rateLimited, 0);
  const rejectedByGateway = metricsAfter.rejected - metricsBefore.rejected;
  const storeFallbacks = metricsAfter.fallbacks - metricsBefore.fallbacks;
  const storeRoundTrips = metricsAfter.storeCalls - metricsBefore.storeCalls;
  // Every answered call of a rule target was checked against each of its rules.
  const ruleChecks = [...phases, ...warmups, ...discarded].reduce(
    (n, p) => n + p.ok * rulesOf(p.target).length,
    0,
  );
  const emptyPhases = phases.filter((p) => p.ok === 0).length;
  const valid = totalErrors === 0 && warmupErrors === 0 && emptyPhases === 0 && rejectedByGateway === 0;
  const moderate = comparisons.find((c) => c.id === "jwt/direct" && c.connections === LEVELS[0])!;
  const goal = {
    ...GOAL,
    variant: "gw-jwt",
    atConnections: moderate.connections,
    throughputMet: moderate.throughputRatio >= GOAL.throughputRatio,
    p50Met: moderate.p50DeltaMs <= GOAL.p50DeltaMs,
  };

  // Output.
  const fmt = (n: number | null) => (n === null ? "n/a" : String(n));
  console.log("");
  console.log(
    table([
      ["target", "conns", "req/s (rounds)", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"],
      ...aggregates.map((a) => [
        a.target,
        String(a.connections),
        `${a.reqPerSec} (${a.reqPerSecRounds.join(", ")})`,
        a.latencyMs.p50.toFixed(3),
        a.latencyMs.p90.toFixed(3),
        a.latencyMs.p99.toFixed(3),
        a.latencyMs.max.toFixed(1),
        String(errorCount(a)),
      ]),
    ]),
  );
  console.log(`\nCPU (${cpus().length} cores): cores busy during the phases, and CPU µs per request`);
  console.log(
    table([
      [
        "target",
        "conns",
        "loadgen",
        "gateway",
        "upstream",
        "redis",
        "other",
        "µs/req gw",
        "µs/req up",
        "µs/req redis",
        "µs/req loadgen",
      ],
      ...aggregates.map((a) => [
        a.target,
        String(a.connections),
        fmt(a.cpuCores.loadgen),
        fmt(a.cpuCores.gateway),
        fmt(a.cpuCores.upstream),
        fmt(a.cpuCores.redis),
        fmt(a.cpuCores.other),
        a.target === "direct" ? "-" : fmt(a.cpuUsPerReq.gateway),
        fmt(a.cpuUsPerReq.upstream),
        fmt(a.cpuUsPerReq.redis),
        fmt(a.cpuUsPerReq.loadgen),
      ]),
    ]),
  );
  const signed = (n: number | null, digits = 3) =>
    n === null ? "-" : `${n >= 0 ? "+" : ""}${n.toFixed(digits)}`;
  console.log("\nComparisons (b/a throughput; b − a latency and data-plane CPU per request):");
  console.log(
    table([
      [
        "pair",
        "conns",
        "req/s ratio",
        "per round",
        "median",
        "quiet median (n)",
        "p50 ratio",
        "p50 Δ ms",
        "p99 Δ ms",
        "gw µs/req Δ",
      ],
      ...comparisons.map((c) => [
        c.id,
        String(c.connections),
        c.throughputRatio.toFixed(3),
        c.rounds.map((r) => `${r.throughputRatio.toFixed(2)}${r.noisy ? "*" : ""}`).join(" "),
        c.medianRoundThroughputRatio.toFixed(3),
        c.medianQuietRoundThroughputRatio === null
          ? "- (0)"
          : `${c.medianQuietRoundThroughputRatio.toFixed(3)} (${c.quietRounds})`,
        c.p50Ratio.toFixed(3),
        signed(c.p50DeltaMs),
        signed(c.p99DeltaMs),
        signed(c.gatewayCpuUsPerReqDelta, 1),
      ]),
    ]),
  );
  const noisyPhases = phases.filter(isNoisy).length;
  if (noisyPhases > 0) {
    console.log(
      `* ${noisyPhases} of ${phases.length} phases ran while other processes kept more than ${NOISY_CORES} cores busy (noisy)` +
        (discarded.length ? `; ${discarded.length} noisy phase(s) were re-measured` : ""),
    );
  }
  console.log(
    `rate limits: ${rejectedByGateway} requests rejected by the gateway, ${total429} answers 429, ` +
      `${storeFallbacks} checks answered by the in-memory fallback; counted in Redis (current window) ` +
      rules.map((r) => `${r.name} ${countersAtEnd[r.id]!.points}`).join(", "),
  );
  console.log(
    `rate-limit round trips to Redis: ${storeRoundTrips} for ${ruleChecks} rule checks ` +
      `(${ruleChecks ? ((1000 * storeRoundTrips) / ruleChecks).toFixed(1) : "-"} per 1,000; leases of points taken ahead)`,
  );
  if (storeFallbacks > 0)
    console.log(
      `!! ${storeFallbacks} rate-limit checks fell back to memory (Redis slower than the 200 ms command timeout): the rule variants understate Redis' cost`,
    );
  console.log(
    `goal at c=${goal.atConnections}, gw-jwt (≥ ${GOAL.throughputRatio}× throughput, p50 ≤ +${GOAL.p50DeltaMs} ms): ` +
      `throughput ${goal.throughputMet ? "MET" : "NOT MET"}, p50 ${goal.p50Met ? "MET" : "NOT MET"}`,
  );
  if (emptyPhases > 0)
    console.log(`\n!! ${emptyPhases} PHASE(S) COMPLETED NO REQUEST AT ALL: figures are not valid`);
  if (totalErrors + warmupErrors > 0)
    console.log(
      `\n!! THIS RUN HAD ${totalErrors + warmupErrors} FAILED REQUESTS (${warmupErrors} in warm-ups; non-2xx incl. ${total429} × 429, connection errors or wrong bodies): figures are not valid`,
    );
  if (rejectedByGateway > 0)
    console.log(`\n!! THE GATEWAY RATE-LIMITED ${rejectedByGateway} REQUESTS: figures are not valid`);

  const report = {
    ok: valid,
    failedRequests: totalErrors,
    failedWarmupRequests: warmupErrors,
    emptyPhases,
    startedAt: startedAt.toISOString(),
    command: "pnpm bench",
    settings: {
      durationS: DURATION_S,
      warmupS: WARMUP_S,
      initialWarmupS: INITIAL_WARMUP_S,
      rounds: ROUNDS,
      connections: LEVELS,
      order: ORDER,
      orderNote: "odd rounds in this order, even rounds reversed",
      profiled: PROFILE,
      noisyCores: NOISY_CORES,
      retryBudgetS: RETRY_BUDGET_S,
      maxRetriesPerPhase: MAX_RETRIES_PER_PHASE,
    },
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? "unknown",
      node: process.version,
      loadavgAtEnd: loadavg().map(round2),
    },
    revision: gitRevision(),
    load: {
      request: "tools/call add {a:1,b:2}",
      protocolVersion: PROTOCOL_VERSION,
      sessions: "one initialized session per target",
    },
    targets: ORDER.map((n) => {
      const { headers: _, url: __, ...t } = targets[n];
      return t;
    }),
    apiKey: { id: key.id, prefix: key.prefix },
    rateLimits: {
      rules: rules.map((r) => ({ ...r, ...HUGE })),
      settleMs: RULES_SETTLE_MS,
      rejectedByGateway,
      answers429: total429,
      storeFallbacks,
      /** Redis round trips for rate limits during the warm-ups and phases, and the rule checks. */
      storeRoundTrips,
      ruleChecks,
      /** Successful calls of the first warm-up per rule's target (the Redis counter must be ≥). */
      warmupCalls: Object.fromEntries(
        rules.map((r) => [r.id, warmups.find((w) => w.target === r.target && w.round === 0)!.ok]),
      ),
      countedInRedisAfterWarmup: countersAfterWarmup,
      countedInRedisAtEnd: countersAtEnd,
    },
    results: aggregates,
    comparisons,
    goal,
    noisyPhases,
    discardedNoisyPhases: discarded.map((p) => ({
      target: p.target,
      connections: p.connections,
      round: p.round,
      reqPerSec: Math.round(rate(p)),
      p50Ms: round3(percentileOf(p.latencies, 50)),
      otherCores: round2(otherCores(p) ?? Number.NaN),
    })),
    phases: phases.map((p) => {
      const { latencies: _, ...rest } = p;
      return {
        ...rest,
        reqPerSec: Math.round(rate(p)),
        p50Ms: round3(percentileOf(p.latencies, 50)),
        otherCores: round2(otherCores(p) ?? Number.NaN),
        noisy: isNoisy(p),
      };
    }),
  };
  await mkdir(resultsDir, { recursive: true });
  const out = PROFILE ? join(profileDir, "results.json") : join(resultsDir, "latest.json");
  await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`\nresults written to ${out}`);

  if (PROFILE) {
    await stopGatewaySuite(); // the data plane writes its profile when it exits
    const files = (await readdir(profileDir).catch(() => [])).filter((f) => f.endsWith(".cpuprofile"));
    for (const f of files) {
      const summary = await summarizeProfileFile(join(profileDir, f), 25, loadStartUs);
      if (summary.busyMs < 100) continue; // the module loader's thread
      const text = formatSummary(summary);
      await writeFile(join(profileDir, `${f}.summary.txt`), `${text}\n`);
      console.log(`\ndata-plane CPU profile ${join(profileDir, f)} (from the first warm-up on):\n\n${text}`);
    }
    if (files.length === 0) console.log(`no .cpuprofile written to ${profileDir}`);
  }
  return valid ? 0 : 1;
}

async function main(): Promise<number> {
  let code = 0;
  if (RUN_GATEWAY) {
    code = Math.max(code, await gatewaySuite());
    // Not measured alongside: the stdio suite starts a stack of its own on a quiet machine.
    if (RUN_STDIO) await stopGatewaySuite();
  }
  if (RUN_STDIO) code = Math.max(code, await runStdioSuite());
  if (RUN_FORWARDING) code = Math.max(code, await runForwardingSuite());
  return code;
}

let code = 1;
try {
  code = await main();
} catch (err) {
  console.error("bench failed:", err);
  const dpOut = stack?.dataPlanes[0]?.proc.output();
  if (dpOut) console.error(`--- data plane output (tail) ---\n${dpOut.slice(-3000)}`);
} finally {
  await cleanup();
}
process.exit(code);
