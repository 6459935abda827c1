/**
 * Gateway overhead benchmark: the same MCP load (`tools/call add {a:1,b:2}` on one initialized
 * session) against an SDK-built Streamable HTTP upstream directly, and through one data-plane
 * replica of the distributed gateway (real control plane, Postgres and NATS on loopback).
 *
 *   pnpm bench
 *
 * Environment: BENCH_DURATION_S (measured seconds per phase, 5), BENCH_WARMUP_S (warm-up
 * before each phase, 0.5), BENCH_ROUNDS (direct/gateway pairs per load level, 4),
 * BENCH_NOISY_CORES (a phase during which other processes kept more cores busy is flagged, 0.25),
 * BENCH_CONNECTIONS (load levels, "10,1"), BENCH_TIMEOUT_S (hard limit for the whole run),
 * BENCH_PROFILE=1 (CPU-profile the data plane; profiles, their summaries and the figures of that run
 * go to results/profiles/<time>/, not to results/latest.json).
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, readdir, writeFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import autocannon from "autocannon";
import {
  type ManagedProcess,
  startProcess,
  startTsService,
  waitForReady,
} from "../packages/testing/src/processes.ts";
import { type Stack, startStack } from "../packages/testing/src/stack.ts";
import { formatSummary, summarizeProfileFile } from "./profile-summary.ts";

const benchDir = fileURLToPath(new URL(".", import.meta.url));
const resultsDir = join(benchDir, "results");

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0)
    throw new Error(`${name} must be a positive number, got ${JSON.stringify(raw)}`);
  return n;
}

const DURATION_S = envNumber("BENCH_DURATION_S", 5);
const WARMUP_S = envNumber("BENCH_WARMUP_S", 0.5);
const ROUNDS = Math.round(envNumber("BENCH_ROUNDS", 4));
const NOISY_CORES = envNumber("BENCH_NOISY_CORES", 0.25);
const LEVELS = (process.env.BENCH_CONNECTIONS ?? "10,1").split(",").map((s) => {
  const n = Number(s.trim());
  if (!Number.isInteger(n) || n < 1) throw new Error(`BENCH_CONNECTIONS: bad value ${JSON.stringify(s)}`);
  return n;
});
const PROFILE = process.env.BENCH_PROFILE === "1";
const PHASES = LEVELS.length * ROUNDS * 2;
const TIMEOUT_S = envNumber("BENCH_TIMEOUT_S", 90 + PHASES * (DURATION_S + WARMUP_S + 2));

/** The design goal at moderate load (the first level). */
const GOAL = { throughputRatio: 0.9, p50DeltaMs: 0.25 };

const PROTOCOL_VERSION = "2025-11-25";
/** Every request gets its own JSON-RPC id: concurrent calls share one session. */
let nextId = 0;
const callBody = () =>
  `{"jsonrpc":"2.0","id":${++nextId},"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}`;
const EXPECTED = '"text":"3"';

interface Target {
  name: "direct" | "gateway";
  url: string;
  headers: Record<string, string>;
}

interface CpuSample {
  /** Busy CPU time of the whole machine (all cores, all processes). */
  machine: number | undefined;
  loadgen: number;
  gateway: number | undefined;
  upstream: number | undefined;
}

interface PhaseResult {
  target: Target["name"];
  connections: number;
  round: number;
  durationS: number;
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  mismatches: number;
  latencies: number[];
  /** CPU milliseconds spent by each process during the phase. */
  cpuMs: CpuSample;
}

// ---------------------------------------------------------------------------------------------
// Process CPU accounting (Linux /proc; undefined elsewhere).

const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

function processCpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
  } catch {
    return undefined;
  }
}

function machineBusyMs(): number | undefined {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
    const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
    return (
      (((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) * 1000) /
      CLK_TCK
    );
  } catch {
    return undefined;
  }
}

function selfCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

// ---------------------------------------------------------------------------------------------
// MCP session setup with plain fetch.

function mcpHeaders(extra: Record<string, string>): Record<string, string> {
  return {
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    "mcp-protocol-version": PROTOCOL_VERSION,
    ...extra,
  };
}

async function post(url: string, headers: Record<string, string>, body: unknown) {
  const res = await fetch(url, {
    method: "POST",
    headers,
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  return { status: res.status, sessionId: res.headers.get("mcp-session-id"), text: await res.text() };
}

/** Initializes a session (retrying while the gateway has not yet received the server). */
async function openSession(url: string, extra: Record<string, string>, waitMs: number): Promise<string> {
  const deadline = Date.now() + waitMs;
  let last = "";
  while (true) {
    const init = await post(url, mcpHeaders(extra), {
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: {
        protocolVersion: PROTOCOL_VERSION,
        capabilities: {},
        clientInfo: { name: "mcpgw-bench", version: "1" },
      },
    }).catch((err: unknown) => ({ status: 0, sessionId: null, text: String(err) }));
    if (init.status === 200 && init.sessionId) {
      const ack = await post(url, mcpHeaders({ ...extra, "mcp-session-id": init.sessionId }), {
        jsonrpc: "2.0",
        method: "notifications/initialized",
      });
      if (ack.status !== 202)
        throw new Error(`notifications/initialized at ${url}: HTTP ${ack.status} ${ack.text.slice(0, 300)}`);
      return init.sessionId;
    }
    last = `HTTP ${init.status} ${init.text.slice(0, 300)}`;
    if (Date.now() > deadline) throw new Error(`initialize at ${url} failed: ${last}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function checkCall(target: Target): Promise<void> {
  const r = await post(target.url, target.headers, {
    jsonrpc: "2.0",
    id: "probe",
    method: "tools/call",
    params: { name: "add", arguments: { a: 1, b: 2 } },
  });
  if (r.status !== 200 || !r.text.includes(EXPECTED)) {
    throw new Error(`${target.name}: tools/call probe answered HTTP ${r.status}: ${r.text.slice(0, 300)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Load.

interface Pids {
  gateway: number | undefined;
  upstream: number | undefined;
}

function runLoad(
  target: Target,
  connections: number,
  durationS: number,
  pids: Pids,
  round: number,
): Promise<PhaseResult> {
  const latencies: number[] = [];
  const before: CpuSample = {
    machine: machineBusyMs(),
    loadgen: selfCpuMs(),
    gateway: processCpuMs(pids.gateway),
    upstream: processCpuMs(pids.upstream),
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
          errors: result.errors,
          timeouts: result.timeouts,
          mismatches: result.mismatches,
          latencies,
          cpuMs: {
            machine: delta(machineBusyMs(), before.machine),
            loadgen: selfCpuMs() - before.loadgen,
            gateway: delta(processCpuMs(pids.gateway), before.gateway),
            upstream: delta(processCpuMs(pids.upstream), before.upstream),
          },
        });
      },
    );
    // autocannon's own histogram has 1 ms resolution; keep every 2xx response time instead.
    instance.on("response", (_client, statusCode, _bytes, responseTime) => {
      if (statusCode >= 200 && statusCode < 300) latencies.push(responseTime);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Statistics and output.

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

interface Aggregate {
  target: Target["name"];
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
  /** CPU microseconds per successful request, per process. */
  cpuUsPerReq: { loadgen: number; gateway: number | null; upstream: number | null };
  /** Mean CPU cores busy during the phase, per process (the machine has `cpus` of them). */
  cpuCores: {
    loadgen: number;
    gateway: number | null;
    upstream: number | null;
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
    errors: sum((p) => p.errors),
    timeouts: sum((p) => p.timeouts),
    mismatches: sum((p) => p.mismatches),
    cpuUsPerReq: { loadgen: perReq(loadgen) ?? 0, gateway: perReq(gateway), upstream: perReq(upstream) },
    cpuCores: {
      loadgen: cores(loadgen) ?? 0,
      gateway: cores(gateway),
      upstream: cores(upstream),
      other:
        machine === undefined || gateway === undefined || upstream === undefined
          ? null
          : cores(machine - (loadgen ?? 0) - gateway - upstream),
      machine: cores(machine),
    },
  };
}

const round1 = (n: number) => Math.round(n * 10) / 10;
const round2 = (n: number) => Math.round(n * 100) / 100;
const round3 = (n: number) => Math.round(n * 1000) / 1000;

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows
    .map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  "))
    .join("\n");
}

function errorCount(a: Aggregate): number {
  return a.non2xx + a.errors + a.mismatches;
}

function percentileOf(values: number[], p: number): number {
  return percentile(Float64Array.from(values).sort(), p);
}

/** Cores kept busy during a phase by processes other than the three measured ones. */
function otherCores(r: PhaseResult): number | undefined {
  const { machine, loadgen, gateway, upstream } = r.cpuMs;
  if (machine === undefined || gateway === undefined || upstream === undefined) return undefined;
  return (machine - loadgen - gateway - upstream) / 1000 / r.durationS;
}

function isNoisy(r: PhaseResult): boolean {
  return (otherCores(r) ?? 0) > NOISY_CORES;
}

function median(values: number[]): number {
  const v = [...values].sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

const rate = (p: PhaseResult) => p.ok / p.durationS;

// ---------------------------------------------------------------------------------------------
// Main.

let stack: Stack | undefined;
let upstreamProc: ManagedProcess | undefined;
let cleaning: Promise<void> | undefined;

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    const results = await Promise.allSettled([stack?.stop(), upstreamProc?.stop()]);
    for (const r of results) if (r.status === "rejected") console.error("cleanup:", r.reason);
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

process.once("SIGINT", () => void abort("interrupted; cleaning up", 130));
process.once("SIGTERM", () => void abort("terminated; cleaning up", 143));
const watchdog = setTimeout(
  () => void abort(`bench exceeded BENCH_TIMEOUT_S=${TIMEOUT_S}; cleaning up`, 1),
  TIMEOUT_S * 1000,
);
watchdog.unref();

async function startUpstream(): Promise<{ url: string; pid: number | undefined }> {
  const proc = startTsService("bench/upstream.ts", { BENCH_UPSTREAM_PORT: "0" });
  upstreamProc = proc;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (proc.child.exitCode !== null)
      throw new Error(`upstream exited (${proc.child.exitCode}):\n${proc.output()}`);
    const line = proc
      .output()
      .split("\n")
      .find((l) => l.startsWith('{"url"'));
    if (line) return { url: (JSON.parse(line) as { url: string }).url, pid: proc.child.pid };
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`upstream did not start:\n${proc.output()}`);
}

function gitRevision(): string {
  try {
    const rev = execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--untracked-files=no"], {
      encoding: "utf8",
    }).trim();
    return dirty ? `${rev} (with uncommitted changes)` : rev;
  } catch {
    return "unknown";
  }
}

async function main(): Promise<number> {
  const startedAt = new Date();
  console.log(
    `mcpgw bench: levels ${LEVELS.join(",")} connections, ${ROUNDS} round(s) of direct+gateway each, ` +
      `${DURATION_S} s measured + ${WARMUP_S} s warm-up per phase${PROFILE ? ", data plane CPU-profiled" : ""}`,
  );
  const profileDir = join(resultsDir, "profiles", startedAt.toISOString().replace(/[:.]/g, "-"));

  const [up, s] = await Promise.all([startUpstream(), startStack({ replicas: 1 })]);
  stack = s;
  const dp = s.dataPlanes[0]!;
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
  const api = await s.api();
  const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", { name: "Bench", slug: "bench" });
  if (ns.status !== 201) throw new Error(`create namespace: HTTP ${ns.status} ${JSON.stringify(ns.body)}`);
  const srv = await api.call<{ id: string }>("POST", "/api/v1/servers", {
    namespace_id: ns.body.id,
    name: "bench-upstream",
    transport: "streamable_http",
    url: up.url,
  });
  if (srv.status !== 201) throw new Error(`register server: HTTP ${srv.status} ${JSON.stringify(srv.body)}`);

  const gatewayUrl = `${dp.url}/servers/${srv.body.id}/mcp`;
  const auth = { authorization: `Bearer ${api.token}` };
  const [directSession, gatewaySession] = await Promise.all([
    openSession(up.url, {}, 5000),
    openSession(gatewayUrl, auth, 10_000),
  ]);
  const targets: Record<Target["name"], Target> = {
    direct: { name: "direct", url: up.url, headers: mcpHeaders({ "mcp-session-id": directSession }) },
    gateway: {
      name: "gateway",
      url: gatewayUrl,
      headers: mcpHeaders({ ...auth, "mcp-session-id": gatewaySession }),
    },
  };
  await checkCall(targets.direct);
  await checkCall(targets.gateway);

  const pids: Pids = { gateway: dp.proc.child.pid, upstream: up.pid };
  const phases: PhaseResult[] = [];
  // Profiles are summarized from here on, without the data plane's start-up.
  const loadStartUs = Number(process.hrtime.bigint() / 1000n);
  // JIT warm-up of both paths before anything is measured.
  for (const t of [targets.direct, targets.gateway])
    await runLoad(t, LEVELS[0]!, Math.max(2, WARMUP_S), pids, 0);

  for (const connections of LEVELS) {
    for (let round = 1; round <= ROUNDS; round++) {
      // ABBA order: direct first in odd rounds, gateway first in even rounds.
      const order = round % 2 === 1 ? [targets.direct, targets.gateway] : [targets.gateway, targets.direct];
      for (const t of order) {
        await runLoad(t, connections, WARMUP_S, pids, round);
        const r = await runLoad(t, connections, DURATION_S, pids, round);
        phases.push(r);
        const bad = r.non2xx + r.errors + r.mismatches;
        console.log(
          `  c=${String(connections).padStart(2)} round ${round} ${t.name.padEnd(7)} ${String(Math.round(r.ok / r.durationS)).padStart(6)} req/s` +
            `  p50 ${percentileOf(r.latencies, 50).toFixed(3)} ms  other processes ${otherCores(r)?.toFixed(2) ?? "n/a"} cores` +
            `${isNoisy(r) ? " (noisy)" : ""}` +
            `${bad ? `  !! ${r.non2xx} non-2xx, ${r.errors} errors (${r.timeouts} timeouts), ${r.mismatches} bad bodies` : ""}`,
        );
      }
    }
  }

  const aggregates: Aggregate[] = [];
  for (const connections of LEVELS) {
    for (const name of ["direct", "gateway"] as const) {
      aggregates.push(aggregate(phases.filter((p) => p.connections === connections && p.target === name)));
    }
  }
  const comparisons = LEVELS.map((connections) => {
    const d = aggregates.find((a) => a.connections === connections && a.target === "direct")!;
    const g = aggregates.find((a) => a.connections === connections && a.target === "gateway")!;
    // Per round: the two phases of a round ran back to back, so they saw similar background load.
    const rounds = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const pd = phases.find(
        (p) => p.connections === connections && p.round === round && p.target === "direct",
      )!;
      const pg = phases.find(
        (p) => p.connections === connections && p.round === round && p.target === "gateway",
      )!;
      rounds.push({
        round,
        throughputRatio: round3(rate(pg) / rate(pd)),
        p50DeltaMs: round3(percentileOf(pg.latencies, 50) - percentileOf(pd.latencies, 50)),
        noisy: isNoisy(pd) || isNoisy(pg),
      });
    }
    const quiet = rounds.filter((r) => !r.noisy);
    return {
      connections,
      throughputRatio: round3(g.reqPerSec / d.reqPerSec),
      medianRoundThroughputRatio: round3(median(rounds.map((r) => r.throughputRatio))),
      medianRoundP50DeltaMs: round3(median(rounds.map((r) => r.p50DeltaMs))),
      quietRounds: quiet.length,
      medianQuietRoundThroughputRatio: quiet.length
        ? round3(median(quiet.map((r) => r.throughputRatio)))
        : null,
      rounds,
      p50DeltaMs: round3(g.latencyMs.p50 - d.latencyMs.p50),
      p90DeltaMs: round3(g.latencyMs.p90 - d.latencyMs.p90),
      p99DeltaMs: round3(g.latencyMs.p99 - d.latencyMs.p99),
    };
  });
  const totalErrors = aggregates.reduce((n, a) => n + errorCount(a), 0);
  const emptyPhases = phases.filter((p) => p.ok === 0).length;
  const valid = totalErrors === 0 && emptyPhases === 0;
  const moderate = comparisons[0]!;
  const goal = {
    ...GOAL,
    atConnections: moderate.connections,
    throughputMet: moderate.throughputRatio >= GOAL.throughputRatio,
    p50Met: moderate.p50DeltaMs <= GOAL.p50DeltaMs,
  };

  // Output.
  const fmt = (n: number | null) => (n === null ? "n/a" : String(n));
  console.log("");
  console.log(
    table([
      ["target", "conns", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"],
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
        "other",
        "µs/req gw",
        "µs/req up",
        "µs/req loadgen",
      ],
      ...aggregates.map((a) => [
        a.target,
        String(a.connections),
        fmt(a.cpuCores.loadgen),
        fmt(a.cpuCores.gateway),
        fmt(a.cpuCores.upstream),
        fmt(a.cpuCores.other),
        a.target === "gateway" ? fmt(a.cpuUsPerReq.gateway) : "-",
        fmt(a.cpuUsPerReq.upstream),
        fmt(a.cpuUsPerReq.loadgen),
      ]),
    ]),
  );
  console.log("");
  const signed = (n: number) => `${n >= 0 ? "+" : ""}${n.toFixed(3)}`;
  for (const c of comparisons) {
    console.log(
      `c=${c.connections}: throughput gateway/direct = ${c.throughputRatio.toFixed(3)} ` +
        `(per round ${c.rounds.map((r) => `${r.throughputRatio.toFixed(2)}${r.noisy ? "*" : ""}`).join(", ")}; ` +
        `median ${c.medianRoundThroughputRatio.toFixed(3)}), p50 delta = ${signed(c.p50DeltaMs)} ms ` +
        `(median of rounds ${signed(c.medianRoundP50DeltaMs)} ms), p99 delta = ${signed(c.p99DeltaMs)} ms`,
    );
  }
  const noisyPhases = phases.filter(isNoisy).length;
  if (noisyPhases > 0) {
    console.log(
      `* ${noisyPhases} of ${phases.length} phases ran while other processes kept more than ${NOISY_CORES} cores busy (noisy)`,
    );
  }
  console.log(
    `goal at c=${goal.atConnections} (≥ ${GOAL.throughputRatio}× throughput, p50 ≤ +${GOAL.p50DeltaMs} ms): ` +
      `throughput ${goal.throughputMet ? "MET" : "NOT MET"}, p50 ${goal.p50Met ? "MET" : "NOT MET"}`,
  );
  if (emptyPhases > 0)
    console.log(`\n!! ${emptyPhases} PHASE(S) COMPLETED NO REQUEST AT ALL: figures are not valid`);
  if (totalErrors > 0)
    console.log(
      `\n!! THIS RUN HAD ${totalErrors} FAILED REQUESTS (non-2xx, connection errors or wrong bodies): figures are not valid`,
    );

  const report = {
    ok: valid,
    failedRequests: totalErrors,
    emptyPhases,
    startedAt: startedAt.toISOString(),
    command: "pnpm bench",
    settings: {
      durationS: DURATION_S,
      warmupS: WARMUP_S,
      rounds: ROUNDS,
      connections: LEVELS,
      profiled: PROFILE,
      noisyCores: NOISY_CORES,
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
    results: aggregates,
    comparisons,
    goal,
    noisyPhases,
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
    await cleanup(); // the data plane writes its profile when it exits
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
