/**
 * Summarizes a V8 `.cpuprofile` (from `node --cpu-prof`): busy time (idle excluded) by
 * package/source dir, by function (self time) and by frame (inclusive time).
 * Usage: node --import tsx bench/profile-summary.ts <file.cpuprofile> [top] [fromMonotonicUs]
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

interface Row {
  name: string;
  ms: number;
  pct: number;
}

export interface ProfileSummary {
  /** Sampled time in the window, idle included. */
  sampledMs: number;
  /** Busy time: everything but `(idle)`. Percentages below are of this. */
  busyMs: number;
  groups: Row[];
  self: Row[];
  inclusive: Row[];
}

/** Where a frame's code lives: a package name, our own source dir, node internals or V8. */
function groupOf(url: string, name: string): string {
  if (!url) return name.startsWith("(") ? name : "(native: syscalls, V8 builtins)";
  if (url.startsWith("node:")) return "node internals";
  const pnpm = /node_modules\/\.pnpm\/[^/]+\/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pnpm) return pnpm[1]!;
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  const ours = /\/((?:services|packages)\/[^/]+)\//.exec(url);
  if (ours) return ours[1]!;
  return url;
}

function frameName(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const name = functionName || "(anonymous)";
  if (!url) return name;
  const i = url.lastIndexOf("node_modules/");
  const j = url.search(/\/(services|packages)\//);
  const short = i >= 0 ? url.slice(i + "node_modules/".length) : j >= 0 ? url.slice(j + 1) : url;
  return `${name}  ${short}:${lineNumber + 1}`;
}

/**
 * `fromUs`: only samples taken at or after this CLOCK_MONOTONIC time in µs (the clock of
 * `process.hrtime` on Linux), e.g. to leave out the process's start-up.
 */
export function summarizeProfile(profile: CpuProfile, top = 20, fromUs = 0): ProfileSummary {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];

  const selfUs = new Map<number, number>();
  let sampled = 0;
  let t = profile.startTime;
  for (let i = 0; i < samples.length; i++) {
    t += deltas[i] ?? 0;
    if (t < fromUs) continue;
    // A sample stands for the time until the next one.
    const dt = deltas[i + 1] ?? 0;
    const id = samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
    sampled += dt;
  }

  const groups = new Map<string, number>();
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let busy = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (!node || node.callFrame.functionName === "(idle)") continue;
    busy += us;
    const g = groupOf(node.callFrame.url, node.callFrame.functionName);
    groups.set(g, (groups.get(g) ?? 0) + us);
    const name = frameName(node);
    self.set(name, (self.get(name) ?? 0) + us);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const frame = byId.get(cur);
      if (!frame || frame.callFrame.functionName === "(root)") continue;
      const fname = frameName(frame);
      if (seen.has(fname)) continue;
      seen.add(fname);
      inclusive.set(fname, (inclusive.get(fname) ?? 0) + us);
    }
  }
  const rows = (m: Map<string, number>): Row[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({
        name,
        ms: Math.round(us / 1000),
        pct: Math.round((1000 * us) / Math.max(1, busy)) / 10,
      }));
  return {
    sampledMs: Math.round(sampled / 1000),
    busyMs: Math.round(busy / 1000),
    groups: rows(groups),
    self: rows(self),
    inclusive: rows(inclusive),
  };
}

export function formatSummary(s: ProfileSummary): string {
  const fmt = (r: Row) => `  ${r.pct.toFixed(1).padStart(5)}%  ${String(r.ms).padStart(6)} ms  ${r.name}`;
  return [
    `sampled ${s.sampledMs} ms, busy (not idle) ${s.busyMs} ms; percentages are of busy time`,
    "",
    "self time by package / source dir:",
    ...s.groups.map(fmt),
    "",
    "self time by function:",
    ...s.self.map(fmt),
    "",
    "inclusive time by frame:",
    ...s.inclusive.map(fmt),
  ].join("\n");
}

export async function summarizeProfileFile(path: string, top = 20, fromUs = 0): Promise<ProfileSummary> {
  return summarizeProfile(JSON.parse(await readFile(path, "utf8")) as CpuProfile, top, fromUs);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const file = process.argv[2];
  if (!file) {
    console.error(
      "usage: node --import tsx bench/profile-summary.ts <file.cpuprofile> [top] [fromMonotonicUs]",
    );
    process.exit(2);
  }
  const top = Number(process.argv[3] ?? 25);
  const from = Number(process.argv[4] ?? 0);
  console.log(formatSummary(await summarizeProfileFile(file, top, from)));
}
