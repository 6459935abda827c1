import { once } from "node:events";
import * as fs from "node:fs";
import { readdir, readFile, rm } from "node:fs/promises";
import { createServer, request } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { type ManagedProcess, startProcess } from "./processes.ts";

const require = createRequire(import.meta.url);

/** The CLI of `@modelcontextprotocol/conformance` (a single ESM bundle). */
const cliPath = require.resolve("@modelcontextprotocol/conformance/dist/index.js");

/**
 * The CLI imports `globSync` from `fs` (Node 22+) for its `tier-check` command only; on Node 20
 * that named import fails when the module links, before any command runs. Rather than patching a
 * minified bundle per version, a resolve hook hands the CLI (and only the CLI) an `fs` that adds
 * a `globSync` which throws if called. Node 22+ needs no hook, so none is installed there.
 */
function nodeCompatArgs(): string[] {
  if (typeof (fs as { globSync?: unknown }).globSync === "function") return [];
  const js = (source: string) => `data:text/javascript,${encodeURIComponent(source)}`;
  const fsWithGlob = js(
    `export * from "node:fs"; export { default } from "node:fs";
     export function globSync() { throw new Error("fs.globSync needs Node 22 or later"); }`,
  );
  const hooks = js(
    `export async function resolve(specifier, context, next) {
       if ((specifier === "fs" || specifier === "node:fs") && context.parentURL === ${JSON.stringify(pathToFileURL(fs.realpathSync(cliPath)).href)})
         return { url: ${JSON.stringify(fsWithGlob)}, shortCircuit: true };
       return next(specifier, context);
     }`,
  );
  return ["--import", js(`import { register } from "node:module"; register(${JSON.stringify(hooks)});`)];
}

/** One check of a conformance scenario, as the CLI writes it to `<out>/<scenario>/checks.json`. */
export interface ConformanceCheck {
  id: string;
  name: string;
  description?: string;
  status: "SUCCESS" | "FAILURE" | "WARNING" | "SKIPPED" | "INFO";
  errorMessage?: string;
  details?: unknown;
}

export interface ConformanceRun {
  url: string;
  /** Checks by scenario name, in the order the CLI ran them. */
  scenarios: Map<string, ConformanceCheck[]>;
  /** What the CLI printed (its own summary is at the end). */
  output: string;
}

export interface ConformanceOptions {
  /** Extra CLI arguments, e.g. `["--requirements", "2026-07-28"]` or `["--scenario", "ping"]`. */
  args?: string[];
  /** The whole run is killed after this long. */
  timeoutMs?: number;
}

/**
 * Runs `conformance server --url <url>` as a child process and reads the checks it saved.
 * `proc` is returned at once so a suite can kill it in `afterAll` whatever happens to the run.
 */
export function startConformance(
  url: string,
  options: ConformanceOptions = {},
): { proc: ManagedProcess; result: Promise<ConformanceRun> } {
  const timeoutMs = options.timeoutMs ?? 90_000;
  const out = fs.mkdtempSync(join(tmpdir(), "mcpgw-conformance-"));
  const proc = startProcess(
    process.execPath,
    [...nodeCompatArgs(), cliPath, "server", "--url", url, "-o", out, ...(options.args ?? [])],
    {},
  );
  const result = (async () => {
    try {
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        once(proc.child, "exit"),
        new Promise<"timeout">((r) => {
          timer = setTimeout(() => r("timeout"), timeoutMs);
        }),
      ]).finally(() => clearTimeout(timer));
      if (outcome === "timeout") {
        await proc.kill();
        throw new Error(`conformance run against ${url} timed out after ${timeoutMs} ms:\n${proc.output()}`);
      }
      // The CLI exits 1 whenever a check fails; only a run that saved nothing is an error.
      const scenarios = await readResults(out);
      if (scenarios.size === 0)
        throw new Error(`conformance run against ${url} saved no results:\n${proc.output()}`);
      return { url, scenarios, output: proc.output() };
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  })();
  return { proc, result };
}

/**
 * `<out>/server-<scenario>-<start time, ISO with : and . as ->/checks.json`, one folder per
 * scenario; read in the order they ran.
 */
async function readResults(out: string): Promise<Map<string, ConformanceCheck[]>> {
  const folders = (await readdir(out))
    .map((folder) => /^server-(.+)-(\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z)$/.exec(folder))
    .filter((m) => m !== null)
    .sort((a, b) => a[2]!.localeCompare(b[2]!));
  const scenarios = new Map<string, ConformanceCheck[]>();
  for (const [folder, name] of folders) {
    const text = await readFile(join(out, folder, "checks.json"), "utf8").catch(() => undefined);
    if (text !== undefined) scenarios.set(name!, JSON.parse(text) as ConformanceCheck[]);
  }
  return scenarios;
}

/**
 * The checks of a run that succeeded, as `scenario › check id › check name` (a check repeated
 * within a scenario is numbered by occurrence), mapped to the check.
 */
export function passedChecks(run: ConformanceRun): Map<string, ConformanceCheck> {
  return checksByKey(run, (c) => c.status === "SUCCESS");
}

/** Every check of a run, keyed as in `passedChecks`. */
export function allChecks(run: ConformanceRun): Map<string, ConformanceCheck> {
  return checksByKey(run, () => true);
}

/** A check that succeeded in one run and not in another. */
export interface LostCheck {
  key: string;
  scenario: string;
  name: string;
  /** The check as the other run saw it; undefined when it did not run there. */
  after: ConformanceCheck | undefined;
}

/** The checks that succeeded in `before` but not in `after` (same keys as `passedChecks`). */
export function lostChecks(before: ConformanceRun, after: ConformanceRun): LostCheck[] {
  const seen = allChecks(after);
  const lost: LostCheck[] = [];
  for (const [key, check] of passedChecks(before)) {
    const then = seen.get(key);
    if (then?.status === "SUCCESS") continue;
    lost.push({ key, scenario: key.split(" › ")[0]!, name: check.name, after: then });
  }
  return lost;
}

function checksByKey(
  run: ConformanceRun,
  keep: (check: ConformanceCheck) => boolean,
): Map<string, ConformanceCheck> {
  const keyed = new Map<string, ConformanceCheck>();
  for (const [scenario, checks] of run.scenarios) {
    const seen = new Map<string, number>();
    for (const check of checks) {
      const base = `${scenario} › ${check.id} › ${check.name}`;
      const n = (seen.get(base) ?? 0) + 1;
      seen.set(base, n);
      if (keep(check)) keyed.set(n === 1 ? base : `${base} #${n}`, check);
    }
  }
  return keyed;
}

/** One line per scenario (`✓ ping: 2 passed, 0 failed`) and a total, like the CLI's own summary. */
export function summarizeConformance(run: ConformanceRun): string {
  const lines = [`conformance against ${run.url}`];
  let passed = 0;
  let failed = 0;
  for (const [scenario, checks] of run.scenarios) {
    const p = checks.filter((c) => c.status === "SUCCESS").length;
    const f = checks.filter((c) => c.status === "FAILURE").length;
    passed += p;
    failed += f;
    lines.push(`  ${f === 0 ? "✓" : "✗"} ${scenario}: ${p} passed, ${f} failed`);
  }
  lines.push(`  total: ${passed} passed, ${failed} failed`);
  return lines.join("\n");
}

/**
 * A loopback HTTP proxy to `target` (an origin) that adds `headers` to every request, for clients
 * that cannot send credentials themselves. Requests and responses are streamed through as they
 * arrive (SSE included); everything else is passed as is.
 */
export async function startHeaderProxy(
  target: string,
  headers: Record<string, string>,
): Promise<{ url: string; close(): Promise<void> }> {
  const upstream = new URL(target);
  const server = createServer((req, res) => {
    const forwarded = request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, ...headers },
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.rawHeaders);
        res.flushHeaders();
        answer.pipe(res);
      },
    );
    forwarded.on("error", (err) => {
      if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
      res.end(`proxy: ${err.message}`);
    });
    // A client that goes away takes its upstream request (e.g. a GET SSE stream) with it.
    res.on("close", () => {
      if (!res.writableFinished) forwarded.destroy();
    });
    req.pipe(forwarded);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, "close");
    },
  };
}
