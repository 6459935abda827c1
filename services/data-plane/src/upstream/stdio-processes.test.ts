import { execSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ServerEntry } from "@mcpgw/snapshot";
import { createLogger, createMetricsRegistry } from "@mcpgw/telemetry";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { StdioProcessManager, StdioUnavailable } from "./stdio-processes.ts";

const logger = createLogger("stdio-test", "silent");
let dir: string;
let echoServer: string;
let crasher: string;

function server(id: string, script: string, extra: Partial<ServerEntry> = {}): ServerEntry {
  return {
    id,
    namespace_id: "ns",
    name: id,
    transport: "stdio",
    enabled: true,
    endpoints: [],
    command: process.execPath,
    args: [script],
    env: { GREETING: "hi" },
    cwd: null,
    timeout_ms: 5000,
    connect_timeout_ms: 1000,
    retries: 0,
    credentials_sealed: null,
    ...extra,
  };
}

const alive = (pid: number | undefined) => {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe("StdioProcessManager", () => {
  const managers: StdioProcessManager[] = [];
  const make = (o: Partial<ConstructorParameters<typeof StdioProcessManager>[0]> = {}) => {
    const m = new StdioProcessManager({
      allowedCommands: new Set([process.execPath]),
      maxProcesses: 4,
      poolSize: 1,
      idleTimeoutMs: 60_000,
      logger,
      metrics: createMetricsRegistry("stdio-test"),
      ...o,
    });
    managers.push(m);
    return m;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "mcpgw-stdio-"));
    echoServer = join(dir, "echo.cjs");
    // Answers every request with its own params and the environment it was given; spawns a
    // grandchild so process-group kill is exercised.
    writeFileSync(
      echoServer,
      `const { spawn } = require("node:child_process");
       spawn(process.execPath, ["-e", "/*mcpgw-grandchild*/ setInterval(() => {}, 1000)"], { stdio: "ignore" });
       process.stderr.write("echo server up\\n");
       let buf = "";
       process.stdin.on("data", (d) => {
         buf += d;
         let i;
         while ((i = buf.indexOf("\\n")) >= 0) {
           const line = buf.slice(0, i); buf = buf.slice(i + 1);
           const m = JSON.parse(line);
           if (m.id !== undefined) process.stdout.write(JSON.stringify({ jsonrpc: "2.0", id: m.id, result: { params: m.params, greeting: process.env.GREETING, secret: process.env.MCPGW_MASTER_KEY ?? null } }) + "\\n");
         }
       });`,
    );
    crasher = join(dir, "crash.cjs");
    writeFileSync(crasher, "process.exit(3)");
  });

  afterEach(async () => {
    for (const m of managers.splice(0)) await m.shutdown();
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Processes (children or grandchildren of the test servers) still running. */
  const orphans = () => {
    try {
      return execSync("pgrep -f mcpgw-grand[c]hild", { encoding: "utf8" }).trim().split("\n").filter(Boolean);
    } catch {
      return [];
    }
  };

  it("runs a session's process with only the server's environment and relays messages both ways", async () => {
    process.env.MCPGW_MASTER_KEY = "must-not-leak";
    const m = make();
    const proc = await m.acquire(server("s1", echoServer), "session-1");
    const reply = new Promise((resolve) => {
      proc.onmessage = resolve;
    });
    await proc.send({ jsonrpc: "2.0", id: 7, method: "ping", params: { x: 1 } });
    expect(await reply).toEqual({
      jsonrpc: "2.0",
      id: 7,
      result: { params: { x: 1 }, greeting: "hi", secret: null },
    });
    delete process.env.MCPGW_MASTER_KEY;
    expect(m.list().find((p) => p.session_id === "session-1")?.state).toBe("in_session");
  });

  it("keeps a warm process ready and kills a session's process group when the session ends", async () => {
    const m = make();
    const first = await m.acquire(server("s2", echoServer), "a");
    await expect.poll(() => m.list().filter((p) => p.state === "warm").length).toBe(1);
    const warmPid = m.list().find((p) => p.state === "warm")!.pid;
    const second = await m.acquire(server("s2", echoServer), "b");
    expect(second.pid).toBe(warmPid);
    const pid = first.pid;
    await m.release(first);
    expect(alive(pid)).toBe(false);
    await expect.poll(() => m.list().some((p) => p.pid === pid)).toBe(false);
    await m.shutdown();
    // Grandchildren went with their process groups: nothing is left running.
    await expect.poll(orphans, { timeout: 3000 }).toEqual([]);
  });

  it("refuses commands that are not on the allowlist, by name or exact path, and environments that change what runs", async () => {
    const m = make({ allowedCommands: new Set(["python3"]) });
    await expect(m.acquire(server("s3", echoServer), "x")).rejects.toThrow(/not allowed/);
    const byName = make({ allowedCommands: new Set(["node"]) });
    // A path ending in an allowed name is not that command.
    await expect(
      byName.acquire(server("s3b", echoServer, { command: "/tmp/evil/node" }), "x"),
    ).rejects.toThrow(/not allowed/);
    const exact = make();
    await expect(
      exact.acquire(
        server("s3c", echoServer, { env: { NODE_OPTIONS: "--import=data:text/javascript,process.exit(9)" } }),
        "x",
      ),
    ).rejects.toThrow(/NODE_OPTIONS/);
    await expect(
      exact.acquire(server("s3d", echoServer, { env: { LD_PRELOAD: "/tmp/x.so" } }), "x"),
    ).rejects.toThrow(/LD_PRELOAD/);
    expect(m.count).toBe(0);
  });

  it("caps the number of processes", async () => {
    const m = make({ maxProcesses: 2, poolSize: 0 });
    await m.acquire(server("s4", echoServer), "a");
    await m.acquire(server("s4", echoServer), "b");
    await expect(m.acquire(server("s4", echoServer), "c")).rejects.toThrow(StdioUnavailable);
  });

  it("restarts a crashing command with growing backoff and reports it", { timeout: 30_000 }, async () => {
    const m = make({ poolSize: 1 });
    await m.acquire(server("crashy", crasher), "a").catch(() => undefined);
    await expect.poll(() => m.health("crashy")?.restarts ?? 0, { timeout: 20_000 }).toBeGreaterThanOrEqual(3);
    const h = m.health("crashy")!;
    expect(h.crashes).toBeGreaterThanOrEqual(3);
    expect(h.last_exit?.code).toBe(3);
    // While backing off, a new session is refused with a retry hint rather than spawning.
    const err = await m.acquire(server("crashy", crasher), "b").catch((e: unknown) => e);
    if (err instanceof StdioUnavailable) expect(err.retryAfterS).toBeGreaterThanOrEqual(1);
    await m.stopServer("crashy");
    await expect.poll(() => m.count).toBe(0);
  });

  it("reaps idle sessions and leaves no process behind on shutdown", async () => {
    const m = make({ idleTimeoutMs: 300, poolSize: 1 });
    const proc = await m.acquire(server("s5", echoServer), "idle");
    await expect.poll(() => alive(proc.pid), { timeout: 5000 }).toBe(false);
    const pids = m.list().map((p) => p.pid);
    await m.shutdown();
    for (const pid of pids) expect(alive(pid)).toBe(false);
    expect(m.count).toBe(0);
    await expect.poll(orphans, { timeout: 3000 }).toEqual([]);
  });
});
