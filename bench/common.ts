/**
 * Helpers shared by the benchmark suites (`run.ts`: gateway overhead; `stdio.ts`: stdio upstream
 * against other stdio-to-HTTP bridges, and memory per idle session): environment, CPU and memory
 * accounting from /proc, MCP session set-up with plain fetch, statistics and tables.
 */
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type ManagedProcess, startTsService } from "../packages/testing/src/processes.ts";

export const benchDir = fileURLToPath(new URL(".", import.meta.url));
export const repoRoot = join(benchDir, "..");
export const resultsDir = join(benchDir, "results");

export function envNumber(name: string, fallback: number, allowZero = false): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0 || (n === 0 && !allowZero))
    throw new Error(`${name} must be a positive number, got ${JSON.stringify(raw)}`);
  return n;
}

export const PROTOCOL_VERSION = "2025-11-25";

// ---------------------------------------------------------------------------------------------
// Process CPU and memory accounting (Linux /proc; undefined elsewhere).

const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

export function processCpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
  } catch {
    return undefined;
  }
}

export function machineBusyMs(): number | undefined {
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

export function selfCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** Resident set size in KiB (`VmRSS` of /proc/<pid>/status), undefined if the process is gone. */
export function rssKb(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** All live descendants of `pid` (children, grandchildren, ...), from /proc/<pid>/stat. */
export function descendantPids(pid: number | undefined): number[] {
  if (pid === undefined) return [];
  const children = new Map<number, number[]>();
  try {
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
        const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
        const list = children.get(ppid) ?? [];
        list.push(Number(entry));
        children.set(ppid, list);
      } catch {
        // the process went away
      }
    }
  } catch {
    return [];
  }
  const out: number[] = [];
  const queue = [...(children.get(pid) ?? [])];
  while (queue.length > 0) {
    const p = queue.shift()!;
    out.push(p);
    queue.push(...(children.get(p) ?? []));
  }
  return out;
}

/** Sum of a Prometheus metric's samples in a service's /metrics (0 when absent). */
export async function metricSum(baseUrl: string, name: string): Promise<number> {
  const res = await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(5000) });
  if (!res.ok) throw new Error(`${baseUrl}/metrics: HTTP ${res.status}`);
  let sum = 0;
  for (const line of (await res.text()).split("\n")) {
    const m = /^(\w+)(?:\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m && m[1] === name) sum += Number(m[2]) || 0;
  }
  return sum;
}

// ---------------------------------------------------------------------------------------------
// MCP session setup with plain fetch.

export function mcpHeaders(extra: Record<string, string>): Record<string, string> {
  return {
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    "mcp-protocol-version": PROTOCOL_VERSION,
    ...extra,
  };
}

export async function post(url: string, headers: Record<string, string>, body: unknown) {
  const res = await fetch(url, {
    method: "POST",
    headers,
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5000),
  });
  return {
    status: res.status,
    sessionId: res.headers.get("mcp-session-id"),
    rateLimitPolicy: res.headers.get("ratelimit-policy"),
    text: await res.text(),
  };
}

/** Initializes a session (retrying while the gateway has not yet received the server or key). */
export async function openSession(
  url: string,
  extra: Record<string, string>,
  waitMs: number,
): Promise<string> {
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

// ---------------------------------------------------------------------------------------------
// The SDK-built Streamable HTTP upstream (`upstream.ts`) in a process of its own.

/**
 * Starts `bench/upstream.ts`. The process is handed to `onSpawn` at once (so the caller's
 * clean-up can stop it even if it never becomes ready); resolves with its URL once it listens.
 */
export async function startBenchUpstream(
  onSpawn: (proc: ManagedProcess) => void,
): Promise<{ url: string; pid: number | undefined; proc: ManagedProcess }> {
  const proc = startTsService("bench/upstream.ts", { BENCH_UPSTREAM_PORT: "0" });
  onSpawn(proc);
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (proc.child.exitCode !== null)
      throw new Error(`upstream exited (${proc.child.exitCode}):\n${proc.output()}`);
    const line = proc
      .output()
      .split("\n")
      .find((l) => l.startsWith('{"url"'));
    if (line) return { url: (JSON.parse(line) as { url: string }).url, pid: proc.child.pid, proc };
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`upstream did not start:\n${proc.output()}`);
}

// ---------------------------------------------------------------------------------------------
// Statistics and output.

export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

export function percentileOf(values: number[], p: number): number {
  return percentile(Float64Array.from(values).sort(), p);
}

export function median(values: number[]): number {
  const v = [...values].sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

export const round1 = (n: number) => Math.round(n * 10) / 10;
export const round2 = (n: number) => Math.round(n * 100) / 100;
export const round3 = (n: number) => Math.round(n * 1000) / 1000;

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows
    .map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  "))
    .join("\n");
}

/**
 * Waits (at most `maxMs`) until other processes keep fewer than `noisyCores` busy (call it when
 * the measured processes are idle: all the machine's busy time then counts).
 */
export async function waitForQuiet(maxMs: number, noisyCores: number): Promise<void> {
  const deadline = Date.now() + maxMs;
  while (Date.now() < deadline) {
    const before = machineBusyMs();
    await new Promise((r) => setTimeout(r, 500));
    const after = machineBusyMs();
    if (before === undefined || after === undefined) return;
    if ((after - before) / 500 < noisyCores) return;
  }
}

export function gitRevision(): string {
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
