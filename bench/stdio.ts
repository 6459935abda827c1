/**
 * The stdio suite (`BENCH_SUITE=stdio pnpm bench`, or `all` for both suites), in two parts:
 *
 * 1. **Idle-session memory**: 1,000 MCP sessions (`initialize` + `notifications/initialized`,
 *    never deleted) opened through one data-plane replica to the SDK-built Streamable HTTP
 *    upstream (`upstream.ts`, a process of its own); the data plane's and the upstream's RSS
 *    (`VmRSS`) before and 2 s after, per session. Runs first, on the freshly started replica.
 * 2. **stdio bridges**: the same stdio MCP server (`stdio-server.mjs`, one tool `add`) behind
 *    three stdio-to-Streamable-HTTP bridges, the same load (`tools/call add {a:1,b:2}` over
 *    autocannon, one MCP session per connection) side by side, in alternating order:
 *
 *      gateway       the data plane (`startStack({ replicas: 1 })`), server registered with
 *                    `transport: "stdio"`: one child process per client session
 *      supergateway  `supergateway --stdio … --outputTransport streamableHttp --stateful`:
 *                    one child process per session
 *      mcp-proxy     `mcp-proxy -- node stdio-server.mjs`: one child process for all sessions
 *
 * Environment: BENCH_DURATION_S, BENCH_WARMUP_S, BENCH_ROUNDS, BENCH_NOISY_CORES and
 * BENCH_RETRY_BUDGET_S as for the gateway suite; BENCH_STDIO_CONNECTIONS (load levels, "10,1":
 * concurrent connections, each on a session of its own; at 1, every bridge has one busy child);
 * BENCH_IDLE_SESSIONS (sessions of part 1, 1000; 0 skips part 1).
 * Results: stdout and results/stdio-latest.json.
 */
import { readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { connect } from "node:net";
import { cpus, loadavg } from "node:os";
import { basename, dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import autocannon from "autocannon";
import { freePort, type ManagedProcess, startProcess } from "../packages/testing/src/processes.ts";
import { type Stack, startStack } from "../packages/testing/src/stack.ts";
import { registerStdioServer } from "../packages/testing/src/stdio.ts";
import {
  benchDir,
  descendantPids,
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
  rssKb,
  selfCpuMs,
  startBenchUpstream,
  table,
  waitForQuiet,
} from "./common.ts";

const DURATION_S = envNumber("BENCH_DURATION_S", 5);
const WARMUP_S = envNumber("BENCH_WARMUP_S", 0.5);
const ROUNDS = Math.round(envNumber("BENCH_ROUNDS", 4));
const NOISY_CORES = envNumber("BENCH_NOISY_CORES", 0.25);
const RETRY_BUDGET_S = envNumber("BENCH_RETRY_BUDGET_S", 30, true);
const MAX_RETRIES_PER_PHASE = 2;
/**
 * Unmeasured warm-up of every target at the start. Longer than the gateway suite's: with one child
 * per session each child sees only 1/N of it, and its JIT warms up that much later (a 2 s warm-up
 * left the gateway's and supergateway's first round ~30 % slow; mcp-proxy's one child was warm).
 */
const INITIAL_WARMUP_S = Math.max(6, WARMUP_S);
/** Concurrent connections of the load, each on an MCP session of its own (so one stdio child each). */
const LEVELS = (process.env.BENCH_STDIO_CONNECTIONS || "10,1").split(",").map((v) => {
  const n = Number(v.trim());
  if (!Number.isInteger(n) || n < 1)
    throw new Error(`BENCH_STDIO_CONNECTIONS: bad value ${JSON.stringify(v)}`);
  return n;
});
/** Sessions opened per target: one per connection of the highest level (lower levels use the first ones). */
const SESSIONS = Math.max(...LEVELS);
/** Idle sessions of part 1 (0: skip it). */
const IDLE_SESSIONS = Math.round(envNumber("BENCH_IDLE_SESSIONS", 1000, true));
/** Sessions opened (and kept) before the baseline, so one-time costs are not counted per session. */
const IDLE_WARMUP_SESSIONS = 100;
/** Sessions opened at once in part 1. */
const IDLE_CONCURRENCY = 10;
/** Wait before each memory reading (no GC can be forced from outside: the reading is an upper bound). */
const SETTLE_MS = 2000;
/** The org's `max_sessions` for the run (part 1 alone opens 1,100 sessions). */
const MAX_SESSIONS = 1_000_000;
const SNAPSHOT_SETTLE_MS = 1500;

type TargetName = "gateway" | "supergateway" | "mcp-proxy";
/** Odd rounds in this order, even rounds reversed: over two rounds every target has the same mean position. */
const ORDER: TargetName[] = ["gateway", "supergateway", "mcp-proxy"];
const PAIRS: Array<{ id: string; b: TargetName; a: TargetName }> = [
  { id: "gateway/supergateway", b: "gateway", a: "supergateway" },
  { id: "gateway/mcp-proxy", b: "gateway", a: "mcp-proxy" },
];
const SERVER_SCRIPT = join(benchDir, "stdio-server.mjs");
const EXPECTED = '"text":"3"';
let nextId = 0;
const callBody = () =>
  `{"jsonrpc":"2.0","id":${++nextId},"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}`;

/** Hard limit for this suite, added to the run's watchdog. */
export function stdioSuiteTimeoutS(): number {
  const phases = LEVELS.length * ROUNDS * ORDER.length;
  return Math.ceil(
    150 +
      IDLE_SESSIONS / 20 +
      SESSIONS * ORDER.length +
      RETRY_BUDGET_S * 1.5 +
      ORDER.length * (INITIAL_WARMUP_S + 2) +
      phases * (DURATION_S + WARMUP_S + 2),
  );
}

// ---------------------------------------------------------------------------------------------
// Processes, and their clean-up (also on error, Ctrl-C and the watchdog: see run.ts).

let stack: Stack | undefined;
let upstreamProc: ManagedProcess | undefined;
const bridges: ManagedProcess[] = [];
/** Every stdio-server process seen under a bridge: killed at the end if one outlived its parent. */
const serverPidsSeen = new Set<number>();
let stopping: Promise<void> | undefined;

/** A live `node …/stdio-server.mjs` (not supergateway's `sh -c` wrapper, whose command line names it too). */
function isStdioServer(pid: number): boolean {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return basename(argv[0] ?? "") === basename(process.execPath) && argv[1] === SERVER_SCRIPT;
  } catch {
    return false;
  }
}

function noteServerPids(rootPid: number | undefined): number[] {
  const pids = descendantPids(rootPid);
  for (const p of pids) if (isStdioServer(p)) serverPidsSeen.add(p);
  return pids;
}

export function stopStdioSuite(): Promise<void> {
  stopping ??= (async () => {
    for (const b of bridges) noteServerPids(b.child.pid);
    noteServerPids(stack?.dataPlanes[0]?.proc.child.pid);
    const results = await Promise.allSettled([
      ...bridges.map((b) => b.stop(10_000)),
      stack?.stop(),
      upstreamProc?.stop(),
    ]);
    for (const r of results) if (r.status === "rejected") console.error("stdio suite cleanup:", r.reason);
    // The servers exit when their stdin closes; give them a moment, then end any that did not.
    await new Promise((r) => setTimeout(r, 300));
    for (const pid of serverPidsSeen) {
      if (!isStdioServer(pid)) continue;
      try {
        process.kill(pid, "SIGKILL");
        console.error(`stdio suite cleanup: killed stdio server ${pid}, left behind by its bridge`);
      } catch {
        // already gone
      }
    }
  })();
  return stopping;
}

function packageInfo(name: string): { version: string; bin: string } {
  const require = createRequire(join(benchDir, "package.json"));
  const pkgPath = require.resolve(`${name}/package.json`);
  const pkg = JSON.parse(readFileSync(pkgPath, "utf8")) as {
    version: string;
    bin: string | Record<string, string>;
  };
  const bin = typeof pkg.bin === "string" ? pkg.bin : pkg.bin[name];
  if (!bin) throw new Error(`${name}: no bin in its package.json`);
  return { version: pkg.version, bin: join(dirname(pkgPath), bin) };
}

async function waitListening(port: number, proc: ManagedProcess, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (proc.child.exitCode !== null)
      throw new Error(`${what} exited (${proc.child.exitCode}):\n${proc.output().slice(-3000)}`);
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        resolve(true);
      });
      socket.once("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not listen on ${port}:\n${proc.output().slice(-3000)}`);
}

interface Bridge {
  url: string;
  pid: number | undefined;
  version: string;
  command: string;
  proc: ManagedProcess;
}

async function startBridge(name: "supergateway" | "mcp-proxy"): Promise<Bridge> {
  const { version, bin } = packageInfo(name);
  const port = await freePort();
  const q = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;
  // supergateway: stateful Streamable HTTP (one child per session); `--logLevel none`, as its
  // default (`info`) logs every message. mcp-proxy: its defaults (event store on), stream + SSE.
  const args =
    name === "supergateway"
      ? [
          "--stdio",
          `${q(process.execPath)} ${q(SERVER_SCRIPT)}`,
          "--outputTransport",
          "streamableHttp",
          "--stateful",
          "--port",
          String(port),
          "--logLevel",
          "none",
        ]
      : ["--host", "127.0.0.1", "--port", String(port), "--", process.execPath, SERVER_SCRIPT];
  const proc = startProcess(process.execPath, [bin, ...args], {}, repoRoot);
  bridges.push(proc);
  await waitListening(port, proc, name);
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    pid: proc.child.pid,
    version,
    command: `${name} ${args.map((a) => (a.includes(" ") ? JSON.stringify(a) : a)).join(" ")}`,
    proc,
  };
}

// ---------------------------------------------------------------------------------------------
// Load.

interface Target {
  name: TargetName;
  description: string;
  command: string;
  version: string;
  url: string;
  /** Extra headers of every request (the gateway's bearer token). */
  auth: Record<string, string>;
  /** One MCP session per load connection. */
  sessions: string[];
  /** The bridge process (the data plane for `gateway`). */
  pid: number | undefined;
  /** Live stdio servers under the bridge when the load starts. */
  serverPids: number[];
  /** Mean RSS of those servers after the probes (context: what a stdio session costs in processes). */
  serverRssKbMean: number | null;
}

interface CpuSample {
  machine: number | undefined;
  loadgen: number;
  bridge: number | undefined;
  /** All processes under the bridge (the stdio servers, and supergateway's `sh -c` wrappers). */
  servers: number;
}

interface PhaseResult {
  target: TargetName;
  connections: number;
  round: number;
  durationS: number;
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  mismatches: number;
  latencies: number[];
  cpuMs: CpuSample;
}

function cpuSample(t: Target, children: number[]): CpuSample {
  return {
    machine: machineBusyMs(),
    loadgen: selfCpuMs(),
    bridge: processCpuMs(t.pid),
    servers: children.reduce((n, p) => n + (processCpuMs(p) ?? 0), 0),
  };
}

function runLoad(t: Target, connections: number, durationS: number, round: number): Promise<PhaseResult> {
  const children = noteServerPids(t.pid);
  const latencies: number[] = [];
  const before = cpuSample(t, children);
  let client = 0;
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: t.url,
        method: "POST",
        connections,
        pipelining: 1,
        duration: durationS,
        timeout: 10,
        // Connection i speaks on session i (a request array of its own per connection).
        setupClient: (c) => {
          const sessionId = t.sessions[client++ % t.sessions.length]!;
          c.setRequests([
            {
              method: "POST",
              headers: mcpHeaders({ ...t.auth, "mcp-session-id": sessionId }),
              setupRequest: (req) => ({ ...req, body: callBody() }),
            },
          ]);
        },
        verifyBody: (body) => String(body).includes(EXPECTED),
      },
      (err, result) => {
        if (err) {
          reject(err);
          return;
        }
        const after = cpuSample(t, children);
        const delta = (a: number | undefined, b: number | undefined) =>
          a === undefined || b === undefined ? undefined : a - b;
        resolve({
          target: t.name,
          connections,
          round,
          durationS: result.duration,
          ok: latencies.length,
          non2xx: result.non2xx,
          errors: result.errors,
          timeouts: result.timeouts,
          mismatches: result.mismatches,
          latencies,
          cpuMs: {
            machine: delta(after.machine, before.machine),
            loadgen: after.loadgen - before.loadgen,
            bridge: delta(after.bridge, before.bridge),
            servers: after.servers - before.servers,
          },
        });
      },
    );
    instance.on("response", (_client, statusCode, _bytes, responseTime) => {
      if (statusCode >= 200 && statusCode < 300) latencies.push(responseTime);
    });
  });
}

function otherCores(r: PhaseResult): number | undefined {
  const { machine, loadgen, bridge, servers } = r.cpuMs;
  if (machine === undefined || bridge === undefined) return undefined;
  return (machine - loadgen - bridge - servers) / 1000 / r.durationS;
}
const isNoisy = (r: PhaseResult) => (otherCores(r) ?? 0) > NOISY_CORES;
const rate = (p: PhaseResult) => p.ok / p.durationS;
const failures = (p: Pick<PhaseResult, "non2xx" | "errors" | "mismatches">) =>
  p.non2xx + p.errors + p.mismatches;

interface Aggregate {
  target: TargetName;
  connections: number;
  rounds: number;
  requests: number;
  reqPerSec: number;
  reqPerSecRounds: number[];
  latencyMs: { p50: number; p90: number; p99: number; max: number; mean: number };
  non2xx: number;
  errors: number;
  timeouts: number;
  mismatches: number;
  cpuUsPerReq: { loadgen: number; bridge: number | null; servers: number; total: number | null };
  cpuCores: { loadgen: number; bridge: number | null; servers: number; other: number | null };
}

function aggregate(phases: PhaseResult[]): Aggregate {
  const all = Float64Array.from(phases.flatMap((p) => p.latencies)).sort();
  const requests = phases.reduce((n, p) => n + p.ok, 0);
  const duration = phases.reduce((n, p) => n + p.durationS, 0);
  const sum = (f: (p: PhaseResult) => number) => phases.reduce((n, p) => n + f(p), 0);
  const bridge = phases.every((p) => p.cpuMs.bridge !== undefined) ? sum((p) => p.cpuMs.bridge!) : undefined;
  const machine = phases.every((p) => p.cpuMs.machine !== undefined)
    ? sum((p) => p.cpuMs.machine!)
    : undefined;
  const loadgen = sum((p) => p.cpuMs.loadgen);
  const servers = sum((p) => p.cpuMs.servers);
  const perReq = (ms: number) => (requests === 0 ? 0 : round1((ms * 1000) / requests));
  const cores = (ms: number) => round2(ms / 1000 / duration);
  return {
    target: phases[0]!.target,
    connections: phases[0]!.connections,
    rounds: phases.length,
    requests,
    reqPerSec: Math.round(requests / duration),
    reqPerSecRounds: phases.map((p) => Math.round(rate(p))),
    latencyMs: {
      p50: round3(percentile(all, 50)),
      p90: round3(percentile(all, 90)),
      p99: round3(percentile(all, 99)),
      max: round3(all[all.length - 1] ?? Number.NaN),
      mean: round3(all.reduce((a, b) => a + b, 0) / Math.max(1, all.length)),
    },
    non2xx: sum((p) => p.non2xx),
    errors: sum((p) => p.errors),
    timeouts: sum((p) => p.timeouts),
    mismatches: sum((p) => p.mismatches),
    cpuUsPerReq: {
      loadgen: perReq(loadgen),
      bridge: bridge === undefined ? null : perReq(bridge),
      servers: perReq(servers),
      total: bridge === undefined ? null : perReq(bridge + servers),
    },
    cpuCores: {
      loadgen: cores(loadgen),
      bridge: bridge === undefined ? null : cores(bridge),
      servers: cores(servers),
      other:
        machine === undefined || bridge === undefined ? null : cores(machine - loadgen - bridge - servers),
    },
  };
}

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
    rounds.push({
      round,
      throughputRatio: round3(rate(pb) / rate(pa)),
      p50DeltaMs: round3(percentileOf(pb.latencies, 50) - percentileOf(pa.latencies, 50)),
      noisy: isNoisy(pa) || isNoisy(pb),
    });
  }
  const quiet = rounds.filter((r) => !r.noisy);
  return {
    id: pair.id,
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
    p99Ratio: round3(B.latencyMs.p99 / A.latencyMs.p99),
    p99DeltaMs: round3(B.latencyMs.p99 - A.latencyMs.p99),
    /** CPU per request of bridge + stdio servers, b − a. */
    cpuUsPerReqDelta:
      A.cpuUsPerReq.total === null || B.cpuUsPerReq.total === null
        ? null
        : round1(B.cpuUsPerReq.total - A.cpuUsPerReq.total),
    rounds,
  };
}

// ---------------------------------------------------------------------------------------------
// Part 1: memory per idle session.

interface RedisLike {
  connect(): Promise<void>;
  scan(cursor: string, ...args: Array<string | number>): Promise<[string, string[]]>;
  call(command: string, ...args: Array<string | number>): Promise<unknown>;
  disconnect(): void;
}
type RedisCtor = new (url: string, opts: Record<string, unknown>) => RedisLike;

/**
 * Keys matching `pattern` in Redis and the bytes they take (`MEMORY USAGE`): the gateway's
 * per-organization session count (`<prefix>:sessions:<org>`, a sorted set of session ids), the
 * only per-session state it keeps. ioredis comes from the testing package, as in run.ts.
 */
async function redisKeysMemory(
  redisUrl: string,
  pattern: string,
): Promise<{ keys: number; bytes: number } | null> {
  const require = createRequire(join(repoRoot, "packages/testing/package.json"));
  const mod = (await import(pathToFileURL(require.resolve("ioredis")).href)) as {
    Redis?: RedisCtor;
    default?: RedisCtor & { Redis?: RedisCtor };
  };
  const Redis = mod.Redis ?? mod.default?.Redis ?? mod.default;
  if (!Redis) return null;
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let cursor = "0";
    let keys = 0;
    let bytes = 0;
    do {
      const [next, found] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 500);
      cursor = next;
      for (const key of found) {
        keys++;
        bytes += Number(await redis.call("MEMORY", "USAGE", key, "SAMPLES", "0")) || 0;
      }
    } while (cursor !== "0");
    return { keys, bytes };
  } catch {
    return null;
  } finally {
    redis.disconnect();
  }
}

interface MemoryReading {
  dataPlaneRssKb: number | null;
  upstreamRssKb: number | null;
  /** prom-client's `nodejs_heap_size_used_bytes` / `_total_bytes` of the data plane, KiB. */
  dataPlaneHeapUsedKb: number | null;
  dataPlaneHeapTotalKb: number | null;
  /** The gateway's session-count keys in Redis (see redisKeysMemory), bytes. */
  redisSessionKeysBytes: number | null;
}

interface MemoryProbe {
  dpUrl: string;
  dpPid: number | undefined;
  upPid: number | undefined;
  redisUrl: string | undefined;
  redisPattern: string;
}

async function readMemory({ dpUrl, dpPid, upPid, redisUrl, redisPattern }: MemoryProbe) {
  const heap = async (name: string) => {
    try {
      return Math.round((await metricSum(dpUrl, name)) / 1024) || null;
    } catch {
      return null;
    }
  };
  const reading: MemoryReading = {
    dataPlaneRssKb: rssKb(dpPid) ?? null,
    upstreamRssKb: rssKb(upPid) ?? null,
    dataPlaneHeapUsedKb: await heap("nodejs_heap_size_used_bytes"),
    dataPlaneHeapTotalKb: await heap("nodejs_heap_size_total_bytes"),
    redisSessionKeysBytes: redisUrl ? ((await redisKeysMemory(redisUrl, redisPattern))?.bytes ?? null) : null,
  };
  return reading;
}

async function openMany(url: string, auth: Record<string, string>, n: number): Promise<string[]> {
  const ids: string[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(IDLE_CONCURRENCY, n) }, async () => {
      while (next < n) {
        next++;
        ids.push(await openSession(url, auth, 15_000));
      }
    }),
  );
  return ids;
}

async function idleSessionMemory(url: string, auth: Record<string, string>, probe: MemoryProbe) {
  const warm = await openMany(url, auth, IDLE_WARMUP_SESSIONS);
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  const before = await readMemory(probe);
  const started = Date.now();
  const ids = await openMany(url, auth, IDLE_SESSIONS);
  const openMs = Date.now() - started;
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  const after = await readMemory(probe);
  // The sessions must still be open: a call on a few of them (after the reading) must succeed.
  const sample = [...new Set([warm[0]!, ids[0]!, ids[Math.floor(ids.length / 2)]!, ids[ids.length - 1]!])];
  let stillOpen = 0;
  for (const sid of sample) {
    const r = await post(url, mcpHeaders({ ...auth, "mcp-session-id": sid }), {
      jsonrpc: "2.0",
      id: "idle-check",
      method: "tools/call",
      params: { name: "add", arguments: { a: 1, b: 2 } },
    });
    if (r.status === 200 && r.text.includes(EXPECTED)) stillOpen++;
  }
  const per = (k: keyof MemoryReading) => {
    const a = after[k];
    const b = before[k];
    return a === null || b === null ? null : round2((a - b) / IDLE_SESSIONS);
  };
  return {
    sessions: IDLE_SESSIONS,
    warmupSessions: IDLE_WARMUP_SESSIONS,
    concurrency: IDLE_CONCURRENCY,
    distinctSessionIds: new Set(ids).size,
    openMs,
    settleMs: SETTLE_MS,
    before,
    after,
    perSessionKb: {
      dataPlaneRss: per("dataPlaneRssKb"),
      dataPlaneHeapUsed: per("dataPlaneHeapUsedKb"),
      upstreamRss: per("upstreamRssKb"),
    },
    perSessionBytes: {
      redisSessionKeys:
        after.redisSessionKeysBytes === null || before.redisSessionKeysBytes === null
          ? null
          : Math.round((after.redisSessionKeysBytes - before.redisSessionKeysBytes) / IDLE_SESSIONS),
    },
    redisPattern: probe.redisPattern,
    sampleCalls: { sent: sample.length, ok: stillOpen },
  };
}

// ---------------------------------------------------------------------------------------------
// Main.

export async function runStdioSuite(): Promise<number> {
  try {
    return await stdioSuite();
  } catch (err) {
    const dpOut = stack?.dataPlanes[0]?.proc.output();
    if (dpOut) console.error(`--- data plane output of the stdio suite (tail) ---\n${dpOut.slice(-3000)}`);
    throw err;
  }
}

async function stdioSuite(): Promise<number> {
  const startedAt = new Date();
  console.log(
    `\nmcpgw bench, stdio suite: ${IDLE_SESSIONS ? `${IDLE_SESSIONS} idle sessions through the gateway, then ` : ""}` +
      `${ROUNDS} round(s) of ${ORDER.join(", ")} at ${LEVELS.join(", ")} connection(s) (one session each), ` +
      `${DURATION_S} s measured + ${WARMUP_S} s warm-up per phase`,
  );
  const stackP = startStack({
    replicas: 1,
    env: {
      MCPGW_STDIO_ALLOWED_COMMANDS: process.execPath,
      MCPGW_STDIO_MAX_PROCESSES: String(Math.max(32, SESSIONS + 8)),
      // One principal holds every session of the bench: its shares are the whole replica, and
      // idle sessions that only initialized are not reaped while memory is measured.
      MCPGW_STDIO_MAX_PER_ORG: String(Math.max(32, SESSIONS + 8)),
      MCPGW_STDIO_MAX_PER_PRINCIPAL: String(Math.max(32, SESSIONS + 8)),
      MCPGW_STDIO_UNUSED_TIMEOUT_MS: "3600000",
    },
  }).then((s) => {
    stack = s;
    return s;
  });
  const [s, up, sg, mp] = await Promise.all([
    stackP,
    startBenchUpstream((proc) => {
      upstreamProc = proc;
    }),
    startBridge("supergateway"),
    startBridge("mcp-proxy"),
  ]);
  const dp = s.dataPlanes[0]!;
  const dpPid = dp.proc.child.pid;

  const api = await s.api();
  const created = async <T>(what: string, path: string, body: unknown): Promise<T> => {
    const r = await api.call<T>("POST", path, body);
    if (r.status !== 201) throw new Error(`${what}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  const ns = await created<{ id: string; org_id: string }>("create namespace", "/api/v1/namespaces", {
    name: "Bench stdio",
    slug: "bench-stdio",
  });
  // The plan's concurrent-session limit (`max_sessions`, 1,000 by default) would refuse part 1.
  const quota = await api.call("PATCH", `/api/v1/organizations/${ns.org_id}`, { max_sessions: MAX_SESSIONS });
  if (quota.status !== 200)
    console.log(
      `  (could not raise the org's max_sessions: HTTP ${quota.status} ${JSON.stringify(quota.body)})`,
    );
  const stdioServer = await registerStdioServer(api, {
    namespace_id: ns.id,
    name: "bench-stdio",
    command: process.execPath,
    args: [SERVER_SCRIPT],
  });
  const httpServer = await created<{ id: string }>("register HTTP server", "/api/v1/servers", {
    namespace_id: ns.id,
    name: "bench-http",
    transport: "streamable_http",
    url: up.url,
  });
  const auth = { authorization: `Bearer ${api.token}` };
  const gwUrl = (id: string) => `${dp.url}/servers/${id}/mcp`;
  // The servers and the org's new limit reach the replica with the next snapshot.
  await new Promise((r) => setTimeout(r, SNAPSHOT_SETTLE_MS));

  // Part 1, on the fresh replica (before any load has grown its heap).
  let idle: Awaited<ReturnType<typeof idleSessionMemory>> | undefined;
  if (IDLE_SESSIONS > 0) {
    console.log(`  opening ${IDLE_WARMUP_SESSIONS} + ${IDLE_SESSIONS} idle sessions through the gateway…`);
    idle = await idleSessionMemory(gwUrl(httpServer.id), auth, {
      dpUrl: dp.url,
      dpPid,
      upPid: up.pid,
      redisUrl: s.env.REDIS_URL,
      redisPattern: `${s.env.MCPGW_QUEUE_PREFIX}:sessions:*`,
    });
    const kb = (n: number | null) => (n === null ? "n/a" : `${n} KB`);
    console.log(
      `  ${idle.sessions} idle sessions opened in ${idle.openMs} ms (${idle.distinctSessionIds} distinct ids; ` +
        `${idle.sampleCalls.ok}/${idle.sampleCalls.sent} still answering): per session ` +
        `data-plane RSS ${kb(idle.perSessionKb.dataPlaneRss)}, data-plane heap used ${kb(idle.perSessionKb.dataPlaneHeapUsed)}, ` +
        `upstream RSS ${kb(idle.perSessionKb.upstreamRss)}, ` +
        `Redis (session count) ${idle.perSessionBytes.redisSessionKeys ?? "n/a"} bytes`,
    );
  }

  // Part 2: sessions per target, one per connection, opened one after the other (each spawns a
  // child in the gateway and in supergateway).
  const specs: Array<Omit<Target, "sessions" | "serverPids" | "serverRssKbMean">> = [
    {
      name: "gateway",
      description: "data plane, stdio server (one child per session)",
      command: `data plane (${gitRevision()}), server {transport: "stdio", command: node, args: [stdio-server.mjs]}`,
      version: "workspace",
      url: gwUrl(stdioServer.id),
      auth,
      pid: dpPid,
    },
    {
      name: "supergateway",
      description: "supergateway, stateful Streamable HTTP (one child per session)",
      command: sg.command,
      version: sg.version,
      url: sg.url,
      auth: {},
      pid: sg.pid,
    },
    {
      name: "mcp-proxy",
      description: "mcp-proxy, Streamable HTTP (one child shared by all sessions)",
      command: mp.command,
      version: mp.version,
      url: mp.url,
      auth: {},
      pid: mp.pid,
    },
  ];
  const targets = {} as Record<TargetName, Target>;
  for (const spec of specs) {
    const sessions: string[] = [];
    for (let i = 0; i < SESSIONS; i++) sessions.push(await openSession(spec.url, spec.auth, 15_000));
    for (const sid of sessions) {
      const r = await post(spec.url, mcpHeaders({ ...spec.auth, "mcp-session-id": sid }), {
        jsonrpc: "2.0",
        id: "probe",
        method: "tools/call",
        params: { name: "add", arguments: { a: 1, b: 2 } },
      });
      if (r.status !== 200 || !r.text.includes(EXPECTED))
        throw new Error(`${spec.name}: tools/call probe answered HTTP ${r.status}: ${r.text.slice(0, 300)}`);
    }
    targets[spec.name] = { ...spec, sessions, serverPids: [], serverRssKbMean: null };
  }
  for (const name of ORDER) {
    const t = targets[name];
    t.serverPids = noteServerPids(t.pid).filter(isStdioServer);
    const rss = t.serverPids.map((p) => rssKb(p)).filter((n): n is number => n !== undefined);
    t.serverRssKbMean = rss.length ? Math.round(rss.reduce((a, b) => a + b, 0) / rss.length) : null;
  }
  console.log(
    `  stdio server processes: ${ORDER.map((n) => `${n} ${targets[n].serverPids.length} (${targets[n].serverRssKbMean ?? "?"} KB RSS each)`).join(", ")}; ` +
      `${SESSIONS} sessions each`,
  );

  const warmups: PhaseResult[] = [];
  const phases: PhaseResult[] = [];
  const discarded: PhaseResult[] = [];
  let retryBudgetMs = RETRY_BUDGET_S * 1000;
  for (const name of ORDER) warmups.push(await runLoad(targets[name], LEVELS[0]!, INITIAL_WARMUP_S, 0));
  for (const connections of LEVELS) {
    for (let round = 1; round <= ROUNDS; round++) {
      const order = round % 2 === 1 ? ORDER : [...ORDER].reverse();
      for (const name of order) {
        const t = targets[name];
        for (let attempt = 0; ; attempt++) {
          warmups.push(await runLoad(t, connections, WARMUP_S, round));
          const r = await runLoad(t, connections, DURATION_S, round);
          const bad = failures(r);
          const retry = isNoisy(r) && bad === 0 && attempt < MAX_RETRIES_PER_PHASE && retryBudgetMs > 0;
          console.log(
            `  c=${String(connections).padStart(2)} round ${round} ${t.name.padEnd(12)} ${String(Math.round(rate(r))).padStart(6)} req/s` +
              `  p50 ${percentileOf(r.latencies, 50).toFixed(3)} ms  other processes ${otherCores(r)?.toFixed(2) ?? "n/a"} cores` +
              `${isNoisy(r) ? " (noisy)" : ""}${retry ? ", discarded: re-measuring" : ""}` +
              `${bad ? `  !! ${r.non2xx} non-2xx, ${r.errors} errors (${r.timeouts} timeouts), ${r.mismatches} bad bodies` : ""}`,
          );
          if (!retry) {
            phases.push(r);
            break;
          }
          discarded.push(r);
          const started = Date.now();
          await waitForQuiet(5000, NOISY_CORES);
          retryBudgetMs -= Date.now() - started + (WARMUP_S + DURATION_S) * 1000;
        }
      }
    }
  }
  // The children must have survived the load (a crashed child would have failed requests, too).
  const serversAtEnd = Object.fromEntries(
    ORDER.map((n) => [n, targets[n].serverPids.filter((p) => isStdioServer(p)).length]),
  ) as Record<TargetName, number>;

  const aggregates = LEVELS.flatMap((c) =>
    ORDER.map((n) => aggregate(phases.filter((p) => p.connections === c && p.target === n))),
  );
  const comparisons = LEVELS.flatMap((c) => PAIRS.map((p) => compare(p, c, phases, aggregates)));
  const failed = aggregates.reduce((n, a) => n + failures(a), 0);
  const failedWarmup = warmups.reduce((n, w) => n + failures(w), 0);
  const emptyPhases = phases.filter((p) => p.ok === 0).length;
  const idleOk =
    !idle || (idle.sampleCalls.ok === idle.sampleCalls.sent && idle.distinctSessionIds === IDLE_SESSIONS);
  const valid = failed === 0 && failedWarmup === 0 && emptyPhases === 0 && idleOk;

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
        String(failures(a)),
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
        "bridge",
        "stdio servers",
        "other",
        "µs/req bridge",
        "µs/req servers",
        "µs/req loadgen",
      ],
      ...aggregates.map((a) => [
        a.target,
        String(a.connections),
        fmt(a.cpuCores.loadgen),
        fmt(a.cpuCores.bridge),
        fmt(a.cpuCores.servers),
        fmt(a.cpuCores.other),
        fmt(a.cpuUsPerReq.bridge),
        fmt(a.cpuUsPerReq.servers),
        fmt(a.cpuUsPerReq.loadgen),
      ]),
    ]),
  );
  const signed = (n: number | null, digits = 3) =>
    n === null ? "-" : `${n >= 0 ? "+" : ""}${n.toFixed(digits)}`;
  console.log("\nRatios (gateway relative to each; throughput b/a, latency b/a and b − a):");
  console.log(
    table([
      [
        "pair",
        "conns",
        "req/s ratio",
        "per round",
        "quiet median (n)",
        "p50 ratio",
        "p50 Δ ms",
        "p99 ratio",
        "p99 Δ ms",
        "CPU µs/req Δ",
      ],
      ...comparisons.map((c) => [
        c.id,
        String(c.connections),
        c.throughputRatio.toFixed(3),
        c.rounds.map((r) => `${r.throughputRatio.toFixed(2)}${r.noisy ? "*" : ""}`).join(" "),
        c.medianQuietRoundThroughputRatio === null
          ? "- (0)"
          : `${c.medianQuietRoundThroughputRatio.toFixed(3)} (${c.quietRounds})`,
        c.p50Ratio.toFixed(3),
        signed(c.p50DeltaMs),
        c.p99Ratio.toFixed(3),
        signed(c.p99DeltaMs),
        signed(c.cpuUsPerReqDelta, 1),
      ]),
    ]),
  );
  const noisyPhases = phases.filter(isNoisy).length;
  if (noisyPhases > 0)
    console.log(
      `* ${noisyPhases} of ${phases.length} phases ran while other processes kept more than ${NOISY_CORES} cores busy (noisy)` +
        (discarded.length ? `; ${discarded.length} noisy phase(s) were re-measured` : ""),
    );
  console.log(`stdio servers alive at the end: ${ORDER.map((n) => `${n} ${serversAtEnd[n]}`).join(", ")}`);
  if (idle) {
    console.log(
      `idle sessions: ${idle.sessions}; data-plane RSS ${idle.before.dataPlaneRssKb} → ${idle.after.dataPlaneRssKb} KB ` +
        `(${idle.perSessionKb.dataPlaneRss} KB per session, upper bound), heap used ${idle.before.dataPlaneHeapUsedKb} → ` +
        `${idle.after.dataPlaneHeapUsedKb} KB; upstream RSS ${idle.before.upstreamRssKb} → ${idle.after.upstreamRssKb} KB ` +
        `(${idle.perSessionKb.upstreamRss} KB per session); Redis session-count keys ${idle.before.redisSessionKeysBytes} → ` +
        `${idle.after.redisSessionKeysBytes} bytes (${idle.perSessionBytes.redisSessionKeys} bytes per session)`,
    );
  }
  if (emptyPhases > 0)
    console.log(`\n!! ${emptyPhases} PHASE(S) COMPLETED NO REQUEST AT ALL: figures are not valid`);
  if (failed + failedWarmup > 0)
    console.log(
      `\n!! THIS RUN HAD ${failed + failedWarmup} FAILED REQUESTS (${failedWarmup} in warm-ups): figures are not valid`,
    );
  if (!idleOk)
    console.log(
      "\n!! THE IDLE SESSIONS DID NOT ALL STAY OPEN (or ids repeated): memory figures are not valid",
    );

  const report = {
    ok: valid,
    failedRequests: failed,
    failedWarmupRequests: failedWarmup,
    emptyPhases,
    startedAt: startedAt.toISOString(),
    command: "BENCH_SUITE=stdio pnpm bench",
    settings: {
      durationS: DURATION_S,
      warmupS: WARMUP_S,
      initialWarmupS: INITIAL_WARMUP_S,
      rounds: ROUNDS,
      connections: LEVELS,
      sessionsPerTarget: SESSIONS,
      order: ORDER,
      orderNote: "odd rounds in this order, even rounds reversed",
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
      sessions: "one initialized session per connection",
      server: "bench/stdio-server.mjs (SDK Server over StdioServerTransport, tool add)",
    },
    targets: ORDER.map((n) => {
      const { auth: _, sessions: __, url: ___, pid: ____, serverPids, ...t } = targets[n];
      return { ...t, stdioServerProcesses: serverPids.length, stdioServerProcessesAtEnd: serversAtEnd[n] };
    }),
    results: aggregates,
    comparisons,
    idleSessionMemory: idle ?? null,
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
  const out = join(resultsDir, "stdio-latest.json");
  await writeFile(out, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`\nresults written to ${out}`);
  return valid ? 0 : 1;
}
