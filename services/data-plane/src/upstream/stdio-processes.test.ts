import { execSync } from "node:child_process";
import { chmodSync, existsSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { ServerEntry } from "@mcpgw/snapshot";
import { createLogger, createMetricsRegistry } from "@mcpgw/telemetry";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { testEnv } from "../../../../packages/testing/src/env.ts";
import { probeStdioServer } from "../../../../packages/testing/src/stdio.ts";
import { type StdioOwner, StdioProcessManager, StdioUnavailable, stdioIsolation } from "./stdio-processes.ts";

const logger = createLogger("stdio-test", "silent");
let dir: string;
let echoServer: string;
let crasher: string;

function server(
  id: string,
  script: string,
  launch: Partial<NonNullable<ServerEntry["stdio"]>> = {},
): ServerEntry {
  return {
    id,
    namespace_id: "ns",
    name: id,
    transport: "stdio",
    enabled: true,
    endpoints: [],
    stdio: {
      catalog_entry_id: "entry",
      command: process.execPath,
      args: [script],
      env: { GREETING: "hi" },
      parameters: [],
      values: {},
      secrets_sealed: null,
      ...launch,
    },
    timeout_ms: 5000,
    connect_timeout_ms: 1000,
    retries: 0,
    credentials_sealed: null,
  };
}

const owner = (orgId = "org-a", principalId = "alice", platformOrg = false): StdioOwner => ({
  orgId,
  principalId,
  platformOrg,
});

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
    const proc = await m.acquire(server("s1", echoServer), "session-1", owner());
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
    const first = await m.acquire(server("s2", echoServer), "a", owner());
    await expect.poll(() => m.list().filter((p) => p.state === "warm").length).toBe(1);
    const warmPid = m.list().find((p) => p.state === "warm")!.pid;
    const second = await m.acquire(server("s2", echoServer), "b", owner());
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
    await expect(m.acquire(server("s3", echoServer), "x", owner())).rejects.toThrow(/not allowed/);
    const byName = make({ allowedCommands: new Set(["node"]) });
    // A path ending in an allowed name is not that command.
    await expect(
      byName.acquire(server("s3b", echoServer, { command: "/tmp/evil/node" }), "x", owner()),
    ).rejects.toThrow(/not allowed/);
    const exact = make();
    await expect(
      exact.acquire(
        server("s3c", echoServer, { env: { NODE_OPTIONS: "--import=data:text/javascript,process.exit(9)" } }),
        "x",
        owner(),
      ),
    ).rejects.toThrow(/NODE_OPTIONS/);
    await expect(
      exact.acquire(server("s3d", echoServer, { env: { LD_PRELOAD: "/tmp/x.so" } }), "x", owner()),
    ).rejects.toThrow(/LD_PRELOAD/);
    expect(m.count).toBe(0);
  });

  it("resolves bare allowlist entries on its PATH: the absolute path of an allowed name runs, and a refusal names the entry", async () => {
    const dir = dirname(process.execPath);
    const byName = make({ allowedCommands: new Set(["node"]), path: `/nonexistent:${dir}` });
    // `/usr/bin/node` (the path `node` resolves to here) is the allowed command.
    const proc = await byName.acquire(server("r1", echoServer, { command: process.execPath }), "x", owner());
    expect(proc.alive).toBe(true);
    // Another file of that name is not: the client hears the name, the report where it resolves.
    await expect(
      byName.acquire(server("r2", echoServer, { command: "/opt/other/node" }), "x", owner()),
    ).rejects.toThrow("command 'node' is not allowed on this data plane");
    const reports: Array<[string, { ok: boolean; error: string | null }]> = [];
    const detailed = make({
      allowedCommands: new Set(["node"]),
      path: `/nonexistent:${dir}`,
      onReport: (id, r) => reports.push([id, r]),
    });
    detailed.review([
      { server: server("r2", echoServer, { command: "/opt/other/node" }), org: { org: { platform: false } } },
    ]);
    expect(reports[0]?.[1].error).toContain(`allowlist entry 'node' resolves to '${join(dir, "node")}' here`);
    // An entry this replica's PATH does not have allows nothing, and says so (to operators).
    const missing = make({
      allowedCommands: new Set(["node"]),
      path: "/nonexistent",
      onReport: (id, r) => reports.push([id, r]),
    });
    await expect(
      missing.acquire(server("r3", echoServer, { command: "node" }), "x", owner()),
    ).rejects.toThrow("command 'node' is not allowed on this data plane");
    missing.review([
      { server: server("r3", echoServer, { command: "node" }), org: { org: { platform: false } } },
    ]);
    expect(reports.at(-1)?.[1].error).toContain(
      "allowlist entry 'node' is not found on this data plane's PATH",
    );
  });

  it("reports each stdio server of a snapshot as refused (and why) or runnable, and crashes at start", async () => {
    const reports: Array<[string, { ok: boolean; error: string | null }]> = [];
    const m = make({
      allowedCommands: new Set([process.execPath]),
      onReport: (id, r) => reports.push([id, r]),
      poolSize: 0,
    });
    const platform = { org: { platform: false } };
    const servers = [
      { server: server("ok1", echoServer), org: platform },
      { server: server("no1", echoServer, { command: "/usr/bin/python3" }), org: platform },
    ];
    m.review(servers);
    expect(reports).toEqual([
      ["ok1", { ok: true, error: null }],
      [
        "no1",
        {
          ok: false,
          error: expect.stringMatching(/'\/usr\/bin\/python3' is not on this data plane's allowlist/),
        },
      ],
    ]);
    // Unchanged: nothing new is reported.
    m.review(servers);
    expect(reports).toHaveLength(2);
    // A command that exits at once is reported failing at start.
    const crash = server("crash1", "", { args: ["-e", "process.exit(3)"] });
    await m.acquire(crash, "c", owner()).catch(() => {});
    await expect
      .poll(() => reports.find(([id, r]) => id === "crash1" && !r.ok)?.[1].error, { timeout: 5000 })
      .toMatch(/exited \(code 3\) within 5 s of starting/);
  });

  it("caps the number of processes", async () => {
    const m = make({ maxProcesses: 2, poolSize: 0 });
    await m.acquire(server("s4", echoServer), "a", owner());
    await m.acquire(server("s4", echoServer), "b", owner());
    await expect(m.acquire(server("s4", echoServer), "c", owner())).rejects.toThrow(StdioUnavailable);
  });

  it("restarts a crashing command with growing backoff and reports it", { timeout: 30_000 }, async () => {
    const m = make({ poolSize: 1 });
    await m.acquire(server("crashy", crasher), "a", owner()).catch(() => undefined);
    await expect.poll(() => m.health("crashy")?.restarts ?? 0, { timeout: 20_000 }).toBeGreaterThanOrEqual(3);
    const h = m.health("crashy")!;
    expect(h.crashes).toBeGreaterThanOrEqual(3);
    expect(h.last_exit?.code).toBe(3);
    // While backing off, a new session is refused with a retry hint rather than spawning.
    const err = await m.acquire(server("crashy", crasher), "b", owner()).catch((e: unknown) => e);
    if (err instanceof StdioUnavailable) expect(err.retryAfterS).toBeGreaterThanOrEqual(1);
    await m.stopServer("crashy");
    await expect.poll(() => m.count).toBe(0);
  });

  it("reaps idle sessions and leaves no process behind on shutdown", async () => {
    const m = make({ idleTimeoutMs: 300, poolSize: 1 });
    const proc = await m.acquire(server("s5", echoServer), "idle", owner());
    await expect.poll(() => alive(proc.pid), { timeout: 5000 }).toBe(false);
    const pids = m.list().map((p) => p.pid);
    await m.shutdown();
    for (const pid of pids) expect(alive(pid)).toBe(false);
    expect(m.count).toBe(0);
    await expect.poll(orphans, { timeout: 3000 }).toEqual([]);
  });

  it("shares capacity per principal and per org, reclaiming the least recently used idle session", async () => {
    const m = make({ maxProcesses: 4, maxPerOrg: 3, maxPerPrincipal: 2, poolSize: 0 });
    const first = await m.acquire(server("share", echoServer), "a1", owner("org-a", "alice"));
    const second = await m.acquire(server("share", echoServer), "a2", owner("org-a", "alice"));
    // Both sessions just did something: alice's share is genuinely busy.
    const busy = await m.acquire(server("share", echoServer), "a3", owner("org-a", "alice")).catch((e) => e);
    expect(busy).toBeInstanceOf(StdioUnavailable);
    expect((busy as StdioUnavailable).message).toMatch(/your share/);
    expect((busy as StdioUnavailable).retryAfterS).toBe(5);
    // Another principal of the org, and another org, are not affected by alice's share.
    await m.acquire(server("share", echoServer), "b1", owner("org-a", "bob"));
    await m.acquire(server("share", echoServer), "c1", owner("org-b", "carol"));
    // The org's share (3) is full now; bob's next session takes the org's least recently used idle one.
    first.lastActivity -= 60_000;
    second.lastActivity -= 30_000;
    const third = await m.acquire(server("share", echoServer), "b2", owner("org-a", "bob"));
    expect(third.alive).toBe(true);
    await expect.poll(() => first.alive).toBe(false);
    expect(second.alive).toBe(true);
    // A request in flight makes a session busy however old its last activity.
    second.inFlight.add("7");
    const refused = await m.acquire(server("share", echoServer), "b3", owner("org-a", "bob")).catch((e) => e);
    expect(refused).toBeInstanceOf(StdioUnavailable);
  });

  it("reclaims an idle session of another org only when the whole replica is full", async () => {
    const m = make({ maxProcesses: 2, maxPerOrg: 2, maxPerPrincipal: 2, poolSize: 0 });
    const idle = await m.acquire(server("full", echoServer), "a", owner("org-a", "alice"));
    await m.acquire(server("full", echoServer), "b", owner("org-a", "alice"));
    await expect(m.acquire(server("full", echoServer), "c", owner("org-b", "carol"))).rejects.toThrow(
      /every one of this data plane's 2 stdio processes is busy/,
    );
    idle.lastActivity -= 60_000;
    await m.acquire(server("full", echoServer), "c", owner("org-b", "carol"));
    await expect.poll(() => idle.alive).toBe(false);
  });

  it("ends sessions that did nothing after initialize sooner than idle ones", {
    timeout: 15_000,
  }, async () => {
    const m = make({ idleTimeoutMs: 60_000, unusedTimeoutMs: 300, poolSize: 0 });
    const unused = await m.acquire(server("unused", echoServer), "u", owner());
    const used = await m.acquire(server("unused", echoServer), "w", owner());
    await unused.send({ jsonrpc: "2.0", id: 1, method: "initialize", params: {} });
    await used.send({ jsonrpc: "2.0", id: 1, method: "initialize", params: {} });
    await used.send({ jsonrpc: "2.0", id: 2, method: "tools/list", params: {} });
    await expect.poll(() => unused.alive, { timeout: 8000 }).toBe(false);
    expect(used.alive).toBe(true);
  });

  it("reaps warm processes of a server nobody uses", { timeout: 15_000 }, async () => {
    const m = make({ idleTimeoutMs: 1000, poolSize: 1 });
    const proc = await m.acquire(server("warm", echoServer), "s", owner());
    await expect.poll(() => m.list().filter((p) => p.state === "warm").length).toBe(1);
    await m.release(proc);
    await expect.poll(() => m.count, { timeout: 8000 }).toBe(0);
  });

  it("frees the slot of a command that cannot start and says why, every time", async () => {
    const m = make({ allowedCommands: new Set(["/nonexistent/node"]), maxProcesses: 2, poolSize: 0 });
    for (let i = 0; i < 4; i++) {
      await expect(
        m.acquire(server("enoent", echoServer, { command: "/nonexistent/node" }), `s${i}`, owner()),
      ).rejects.toThrow(/could not be started \(ENOENT\)/);
      expect(m.count).toBe(0);
    }
  });

  it("refuses values that no longer fit the catalog entry's declarations", async () => {
    const m = make();
    const launch = {
      args: [echoServer, "{{root}}"],
      parameters: [{ name: "root", type: "string" as const, required: true, secret: false }],
      values: {},
    };
    await expect(m.acquire(server("values", echoServer, launch), "x", owner())).rejects.toThrow(
      /parameter 'root' is required/,
    );
    expect(m.count).toBe(0);
  });

  const root = process.getuid?.() === 0;

  it.runIf(root)(
    "runs children as the unprivileged stdio user, in a private directory, unable to read this process",
    async () => {
      const probeDir = await mkdtemp(join(tmpdir(), "mcpgw-probe-"));
      chmodSync(probeDir, 0o755);
      const probe = join(probeDir, "probe.cjs");
      const secretFile = join(dir, "secret.txt");
      writeFileSync(secretFile, "top secret");
      writeFileSync(
        probe,
        `const fs = require("node:fs");
         const tryRead = (f) => { try { fs.readFileSync(f); return "read"; } catch (e) { return e.code; } };
         process.stdin.once("data", () => {
           process.stdout.write(JSON.stringify({ jsonrpc: "2.0", id: 1, result: {
             uid: process.getuid(), cwd: process.cwd(), home: process.env.HOME,
             environ: tryRead("/proc/" + process.ppid + "/environ"),
             secret: tryRead(${JSON.stringify(secretFile)}),
             keys: Object.keys(process.env).sort(),
           } }) + "\\n");
         });`,
      );
      chmodSync(probe, 0o644);
      const isolation = stdioIsolation({ user: "mcpgw-stdio", acceptShared: false, sandbox: "none", logger });
      expect(isolation.user?.name).toBe("mcpgw-stdio");
      const m = make({ isolation });
      const proc = await m.acquire(server("probe", probe, { env: {} }), "p", owner());
      const reply = new Promise<{ result: Record<string, unknown> }>((resolve) => {
        proc.onmessage = (msg) => resolve(msg as never);
      });
      await proc.send({ jsonrpc: "2.0", id: 1, method: "ping" });
      const { result } = await reply;
      expect(result.uid).toBe(isolation.user!.uid);
      expect(result.environ).toBe("EACCES");
      expect(result.secret).toBe("EACCES");
      expect(result.home).toBe(result.cwd);
      expect(String(result.cwd).startsWith(isolation.workDir)).toBe(true);
      expect(result.keys).not.toContain("MCPGW_MASTER_KEY");
      await m.shutdown();
      await rm(probeDir, { recursive: true, force: true });
    },
  );

  it.runIf(root)("never runs children as root when the stdio user is missing", async () => {
    const isolation = stdioIsolation({ user: "no-such-user-x", acceptShared: true, sandbox: "none", logger });
    expect(isolation.runFor).toBe("none");
    const m = make({ isolation });
    await expect(m.acquire(server("nouser", echoServer), "x", owner())).rejects.toThrow(
      /runs as root and the stdio user 'no-such-user-x' does not exist/,
    );
  });

  it.runIf(!root)(
    "without privileges to drop, runs only the platform org's servers unless told otherwise",
    async () => {
      const isolation = stdioIsolation({ user: "mcpgw-stdio", acceptShared: false, sandbox: "none", logger });
      expect(isolation.runFor).toBe("platform_org");
      const m = make({ isolation });
      await expect(m.acquire(server("np", echoServer), "x", owner("org-a", "alice", false))).rejects.toThrow(
        /not available to this organization/,
      );
      await m.acquire(server("np", echoServer), "y", owner("platform", "root-admin", true));
    },
  );

  const bwrap = root && existsSync("/usr/bin/bwrap");

  it.runIf(bwrap)(
    "runs children inside bubblewrap when asked: own pid namespace, read-only root, as the stdio user",
    async () => {
      const isolation = stdioIsolation({
        user: "mcpgw-stdio",
        acceptShared: false,
        sandbox: "bwrap",
        logger,
      });
      const m = make({ isolation });
      const proc = await m.acquire(server("sandboxed", probeStdioServer, { env: {} }), "b", owner());
      const replies: Array<{ id?: number; result?: { content: [{ text: string }] } }> = [];
      proc.onmessage = (msg) => replies.push(msg as never);
      await proc.send({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: { protocolVersion: "2025-11-25" },
      });
      await proc.send({
        jsonrpc: "2.0",
        id: 2,
        method: "tools/call",
        params: { name: "probe", arguments: { paths: ["/etc/hostname", dir] } },
      });
      await expect.poll(() => replies.some((r) => r.id === 2), { timeout: 10_000 }).toBe(true);
      const report = JSON.parse(replies.find((r) => r.id === 2)!.result!.content[0].text) as {
        uid: number;
        paths: Record<string, string>;
        pid: number;
      };
      expect(report.uid).toBe(isolation.user!.uid);
      // This test's private directory stays out of reach; the root is there, read-only.
      expect(report.paths[dir]).toBe("EACCES");
      expect(report.paths["/etc/hostname"]).toBe("read");
      expect(report.pid).toBeLessThan(10);
      await m.shutdown();
    },
  );

  it.runIf(bwrap)(
    "keeps sandboxed children off the host's loopback services (NATS, Redis) unless the sandbox shares the network",
    { timeout: 30_000 },
    async () => {
      const probeDir = await mkdtemp(join(tmpdir(), "mcpgw-netprobe-"));
      chmodSync(probeDir, 0o755);
      const probe = join(probeDir, "connect.cjs");
      // Answers one request with, per "host:port" in its arguments, "connected" or the error code.
      writeFileSync(
        probe,
        `const net = require("node:net");
         const targets = process.argv.slice(2);
         const tryConnect = (t) => new Promise((resolve) => {
           const [host, port] = t.split(":");
           const socket = net.connect({ host, port: Number(port) });
           const done = (r) => { socket.destroy(); resolve([t, r]); };
           socket.setTimeout(3000, () => done("ETIMEDOUT"));
           socket.once("connect", () => done("connected"));
           socket.once("error", (e) => done(e.code));
         });
         process.stdin.once("data", async () => {
           const result = Object.fromEntries(await Promise.all(targets.map(tryConnect)));
           process.stdout.write(JSON.stringify({ jsonrpc: "2.0", id: 1, result }) + "\\n");
         });`,
      );
      chmodSync(probe, 0o644);
      const targets = [testEnv.natsUrl, testEnv.redisUrl].map((u) => {
        const url = new URL(u);
        return `${url.hostname}:${url.port}`;
      });
      const reach = async (sandboxNetwork: "none" | "host") => {
        const isolation = stdioIsolation({
          user: "mcpgw-stdio",
          acceptShared: false,
          sandbox: "bwrap",
          sandboxNetwork,
          logger,
        });
        const m = make({ isolation });
        const proc = await m.acquire(
          server(`net-${sandboxNetwork}`, probe, { args: [probe, ...targets], env: {} }),
          sandboxNetwork,
          owner(),
        );
        const reply = new Promise<{ result: Record<string, string> }>((resolve) => {
          proc.onmessage = (msg) => resolve(msg as never);
        });
        await proc.send({ jsonrpc: "2.0", id: 1, method: "ping" });
        const { result } = await reply;
        await m.shutdown();
        return result;
      };
      // The default: a network namespace of its own, whose loopback has nothing listening.
      expect(
        stdioIsolation({ user: "mcpgw-stdio", acceptShared: false, sandbox: "bwrap", logger }).sandboxNetwork,
      ).toBe("none");
      const isolated = await reach("none");
      for (const t of targets) expect(isolated[t], t).toBe("ECONNREFUSED");
      // The control: the same probe with the host's network reaches both (so the refusal above is the sandbox's).
      const shared = await reach("host");
      for (const t of targets) expect(shared[t], t).toBe("connected");
      await rm(probeDir, { recursive: true, force: true });
    },
  );
});
