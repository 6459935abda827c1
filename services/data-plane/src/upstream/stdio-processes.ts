import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, chmodSync, constants, mkdtempSync, readFileSync, realpathSync, statSync } from "node:fs";
import { chown, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { isNotification, isRequest, isResponse } from "@mcpgw/protocol";
import {
  checkStdioValues,
  resolveStdioLaunch,
  type ServerEntry,
  StdioLaunchError,
  type StdioValue,
  UNSAFE_STDIO_ENV,
} from "@mcpgw/snapshot";
import { Counter, Gauge, type Logger, type Registry, tenantLabel } from "@mcpgw/telemetry";
import { ReadBuffer, serializeMessage } from "@modelcontextprotocol/sdk/shared/stdio.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";

export interface StdioOptions {
  /** Executables (names or absolute paths) a catalog entry may run here; empty: none. */
  allowedCommands: ReadonlySet<string>;
  /** Most child processes this replica runs at once. */
  maxProcesses: number;
  /** Most processes one org may hold here (its share of `maxProcesses`). */
  maxPerOrg?: number | undefined;
  /** Most processes one principal may hold here. */
  maxPerPrincipal?: number | undefined;
  /** Pre-started processes kept per server that has been used. */
  poolSize: number;
  /** A session with no traffic for this long is ended and its process killed; warm processes of a server unused this long too. */
  idleTimeoutMs: number;
  /** A session that did nothing after `initialize` is ended after this long. */
  unusedTimeoutMs?: number | undefined;
  /** Who children run as and where; see `stdioIsolation`. Default: as this process, for every org. */
  isolation?: StdioIsolation | undefined;
  /** Label series with server ids (off by default: they name every tenant's servers). */
  tenantLabels?: boolean | undefined;
  /** Opens a server's sealed secret parameters. */
  openSecrets?: ((server: ServerEntry) => Record<string, StdioValue>) | undefined;
  /**
   * Told when this replica's word on a server changes: refused (allowlist, isolation), crashing
   * at start, or running. The worker turns the words of every replica into the server's status.
   */
  onReport?: ((serverId: string, report: { ok: boolean; error: string | null }) => void) | undefined;
  /** The PATH bare allowlist entries are resolved on (default: this process's). */
  path?: string | undefined;
  logger: Logger;
  metrics: Registry;
}

/** Who asks for a process: capacity is shared per org and per principal. */
export interface StdioOwner {
  orgId: string;
  principalId: string;
  /** The platform administrators' own org. */
  platformOrg: boolean;
}

/**
 * How children are kept from the data plane's identity: a dedicated unprivileged user (when
 * the data plane runs as root), a private working directory each, optionally bubblewrap.
 */
export interface StdioIsolation {
  /** Children run as this user; null: as the data plane's own user (it cannot drop privileges). */
  user: { uid: number; gid: number; name: string } | null;
  /** Whose stdio servers run here: none (root without a stdio user), only the platform org's, or all. */
  runFor: "none" | "platform_org" | "all";
  /** Why `runFor` is narrowed, for the refusal message. */
  reason?: string;
  /** Private working directories are made under this directory. */
  workDir: string;
  sandbox: "none" | "bwrap";
  /** In bubblewrap: the host's network (`host`), or a network namespace of its own with only its loopback (`none`). */
  sandboxNetwork?: "none" | "host" | undefined;
}

/** The command is not allowed, the replica is full, or the server keeps crashing. */
export class StdioUnavailable extends Error {
  override name = "StdioUnavailable";
  constructor(
    message: string,
    readonly retryAfterS?: number,
  ) {
    super(message);
  }
}

export interface StdioProcessInfo {
  pid: number | undefined;
  server_id: string;
  server_name: string;
  state: "warm" | "in_session";
  session_id: string | null;
  started_at: string;
  last_activity_at: string;
}

interface ServerState {
  server: ServerEntry;
  warm: StdioProcess[];
  /** Consecutive early exits: drives the restart backoff. */
  crashes: number;
  notBefore: number;
  lastExit: { code: number | null; signal: string | null; at: string } | null;
  restarts: number;
  /** Last time a session took a process of this server: warm ones are reaped after idleTimeoutMs. */
  lastUsed: number;
}

/** Variables children get from this process: what programs need to run, nothing that identifies it. */
const BASE_ENV = ["PATH", "LANG", "LC_ALL", "TZ", "SYSTEMROOT"];

/** How often a replica says again what it reported of each stdio server (see the worker's STALE_MS). */
export const REPORT_EVERY_MS = 10 * 60_000;

/** A process that exits within this long of starting counts as a crash for backoff. */
const EARLY_EXIT_MS = 5_000;
/** A session idle this long (no request in flight) may be reclaimed for another when capacity is full. */
const RECLAIM_IDLE_MS = 2_000;

/**
 * One child process speaking MCP over stdio, exposed as an SDK `Transport` so the session
 * bridge treats it like any other upstream.
 */
export class StdioProcess implements Transport {
  onmessage?: (message: JSONRPCMessage) => void;
  onclose?: () => void;
  onerror?: (error: Error) => void;
  sessionId?: string;
  readonly startedAt = Date.now();
  lastActivity = Date.now();
  session: string | null = null;
  owner: StdioOwner | null = null;
  /** Requests sent to the process and not answered yet: a process with any is busy. */
  readonly inFlight = new Set<string>();
  /** Whether the session sent anything beyond `initialize` and its notification. */
  used = false;
  private readonly buffer = new ReadBuffer();
  private closed = false;
  exitCode: number | null = null;
  /** Set when the gateway itself ends the process (not a crash). */
  closing = false;

  constructor(
    readonly child: ChildProcess,
    readonly server: ServerEntry,
    private readonly logger: Logger,
  ) {
    child.stdout?.on("data", (chunk: Buffer) => {
      this.lastActivity = Date.now();
      this.buffer.append(chunk);
      for (;;) {
        let message: JSONRPCMessage | null;
        try {
          message = this.buffer.readMessage();
        } catch (err) {
          // A line that is not JSON-RPC (a stray log line on stdout): drop it, keep the session.
          this.logger.warn(
            { server: server.id, pid: child.pid, err: (err as Error).message },
            "stdio server wrote a non-JSON-RPC line",
          );
          continue;
        }
        if (!message) break;
        if (isResponse(message)) this.inFlight.delete(String(message.id));
        this.onmessage?.(message);
      }
    });
    // stderr is the server's log: into ours, line by line, bounded.
    let pending = "";
    child.stderr?.on("data", (chunk: Buffer) => {
      pending += chunk.toString("utf8");
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      if (pending.length > 8192) pending = pending.slice(-8192);
      for (const line of lines)
        if (line.trim())
          logger.info(
            { server: server.id, pid: child.pid, stderr: line.slice(0, 2000) },
            "stdio server stderr",
          );
    });
    child.stdin?.on("error", () => {});
    const ended = () => {
      if (this.closed) return;
      this.closed = true;
      this.onclose?.();
    };
    child.once("exit", (code) => {
      this.exitCode = code;
      ended();
    });
    // A process that could not start (ENOENT, EACCES) emits `error` and no `exit`.
    child.once("error", ended);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get alive(): boolean {
    return !this.closed;
  }

  async start(): Promise<void> {}

  async send(message: JSONRPCMessage): Promise<void> {
    if (this.closed || !this.child.stdin?.writable) throw new Error("stdio process has exited");
    this.lastActivity = Date.now();
    if (isRequest(message) || isNotification(message)) {
      if (message.method !== "initialize" && message.method !== "notifications/initialized") this.used = true;
      if (isRequest(message)) this.inFlight.add(String(message.id));
    }
    const ok = this.child.stdin.write(serializeMessage(message));
    // Backpressure: wait for the pipe to drain before accepting more.
    if (!ok) await new Promise<void>((resolve) => this.child.stdin?.once("drain", resolve));
  }

  /** Ends the process group: SIGTERM, then SIGKILL if it lingers. */
  async close(): Promise<void> {
    if (this.closed) return;
    const pid = this.child.pid;
    const signal = (sig: NodeJS.Signals) => {
      try {
        if (pid) process.kill(-pid, sig);
      } catch {
        this.child.kill(sig);
      }
    };
    this.child.stdin?.end();
    signal("SIGTERM");
    const killer = setTimeout(() => signal("SIGKILL"), 2000);
    await new Promise<void>((resolve) => {
      if (this.closed) resolve();
      else {
        this.child.once("exit", () => resolve());
        this.child.once("error", () => resolve());
      }
    });
    clearTimeout(killer);
  }
}

/** Reads the uid and gid of a user from /etc/passwd (at boot; no getpwnam in Node). */
function lookupUser(spec: string): { uid: number; gid: number; name: string } | null {
  const numeric = /^(\d+)(?::(\d+))?$/.exec(spec);
  if (numeric) {
    const uid = Number(numeric[1]);
    return { uid, gid: Number(numeric[2] ?? numeric[1]), name: spec };
  }
  let passwd = "";
  try {
    passwd = readFileSync("/etc/passwd", "utf8");
  } catch {
    return null;
  }
  for (const line of passwd.split("\n")) {
    const [name, , uid, gid] = line.split(":");
    if (name === spec && uid && gid) return { uid: Number(uid), gid: Number(gid), name };
  }
  return null;
}

/**
 * Decides, once at boot, how this data plane isolates stdio children from itself. Run as root,
 * it drops children to `user` (which must exist and not be root); it never runs them as root.
 * Not root, it cannot drop privileges: children could read this process's environment and
 * files, so it runs only the platform org's stdio servers unless the operator accepts the
 * risk (`acceptShared`). Says which at start.
 */
export function stdioIsolation(o: {
  user: string;
  acceptShared: boolean;
  sandbox: "none" | "bwrap";
  /** Default `none`: a sandboxed child reaches no network, the host's loopback (NATS, Redis, Postgres) included. */
  sandboxNetwork?: "none" | "host" | undefined;
  logger: Logger;
}): StdioIsolation {
  const workDir = mkdtempSync(join(tmpdir(), "mcpgw-stdio-"));
  const sandboxNetwork = o.sandboxNetwork ?? "none";
  const sandbox = { sandbox: o.sandbox, sandboxNetwork };
  const root = process.getuid?.() === 0;
  if (root) {
    const user = lookupUser(o.user);
    if (!user || user.uid === 0) {
      const reason = `this data plane runs as root and the stdio user '${o.user}' ${user ? "is root" : "does not exist"} (create it, or set MCPGW_STDIO_USER)`;
      o.logger.error(`stdio servers are refused: ${reason}`);
      return { user: null, runFor: "none", reason, workDir, ...sandbox };
    }
    // Children must reach their own directory below this one, and nothing else in it.
    chmodSync(workDir, 0o711);
    o.logger.info(
      {
        user: user.name,
        uid: user.uid,
        sandbox: o.sandbox,
        ...(o.sandbox === "bwrap" ? { sandboxNetwork } : {}),
      },
      "stdio servers run as an unprivileged user",
    );
    return { user, runFor: "all", workDir, ...sandbox };
  }
  if (o.sandbox === "bwrap") {
    o.logger.warn(
      { sandboxNetwork },
      "stdio servers run in bubblewrap as this data plane's user (not root: no separate uid)",
    );
    return { user: null, runFor: "all", workDir, ...sandbox };
  }
  const reason =
    "this data plane is not root and has no sandbox, so stdio children would run as its own user";
  if (o.acceptShared) {
    o.logger.warn(
      `${reason}: they could read its environment and files (MCPGW_STDIO_ALLOW_SHARED_IDENTITY accepts this; run as root with MCPGW_STDIO_USER, or MCPGW_STDIO_SANDBOX=bwrap, in production)`,
    );
    return { user: null, runFor: "all", workDir, ...sandbox };
  }
  o.logger.warn(
    `${reason}: only the platform administrators' org may run stdio servers here (set MCPGW_STDIO_ALLOW_SHARED_IDENTITY=true to accept the risk)`,
  );
  return { user: null, runFor: "platform_org", reason, workDir, ...sandbox };
}

/**
 * The bubblewrap command line around a child: its own pid/ipc/uts/mount namespaces, the host's
 * filesystem read-only (the command's own files may live anywhere, /tmp included; what it may
 * read is still bounded by its user's permissions), its private directory the only writable one.
 * Network `none` keeps the network namespace `--unshare-all` gives it: only its own loopback, so
 * it cannot reach services the data plane's host listens to on 127.0.0.1 (NATS, Redis, Postgres)
 * nor anything else; `host` shares the host's network for servers that call remote APIs.
 */
function bwrapArgs(dir: string, network: "none" | "host", command: string, args: string[]): string[] {
  return [
    "--die-with-parent",
    "--unshare-all",
    ...(network === "host" ? ["--share-net"] : []),
    "--ro-bind",
    "/",
    "/",
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--bind",
    dir,
    dir,
    "--chdir",
    dir,
    "--",
    command,
    ...args,
  ];
}

/**
 * Runs stdio MCP servers from the platform's catalog as child processes of this replica: one
 * process per client session, a small pool of pre-started processes per server, a cap on the
 * total shared fairly per org and per principal (idle sessions reclaimed least recently used
 * first when it is reached), idle and unused sessions reaped, warm processes of unused servers
 * reaped, restart with exponential backoff for commands that crash, stderr into the logs, and
 * every process killed (with its process group) on session end and on shutdown. Children run
 * under the isolation decided at boot, in a private working directory, with a fresh
 * environment; commands come only from the signed snapshot and must be on this replica's
 * allowlist.
 */
export class StdioProcessManager {
  private readonly servers = new Map<string, ServerState>();
  private readonly live = new Set<StdioProcess>();
  private readonly reaper: NodeJS.Timeout;
  private readonly heartbeatTimer: NodeJS.Timeout;
  private stopping = false;
  private readonly spawned: Counter<"server">;
  private readonly restarts: Counter<"server">;
  private readonly reclaimed: Counter<"reason">;
  private readonly isolation: StdioIsolation;

  /** Bare allowlist entries and the absolute path each resolves to on this replica's PATH. */
  private readonly resolvedEntries: Map<string, string | undefined>;

  constructor(private readonly o: StdioOptions) {
    this.resolvedEntries = resolveAllowlist(o.allowedCommands, o.path ?? process.env.PATH ?? "");
    for (const [entry, path] of this.resolvedEntries)
      if (!path)
        o.logger.warn(
          { entry },
          "stdio allowlist entry not found on this data plane's PATH: it allows nothing",
        );
    this.isolation = o.isolation ?? {
      user: null,
      runFor: "all",
      workDir: mkdtempSync(join(tmpdir(), "mcpgw-stdio-")),
      sandbox: "none",
    };
    this.spawned = new Counter({
      name: "mcpgw_dp_stdio_spawned_total",
      help: "stdio server processes started",
      labelNames: ["server"] as const,
      registers: [o.metrics],
    });
    this.restarts = new Counter({
      name: "mcpgw_dp_stdio_crashes_total",
      help: "stdio server processes that exited on their own",
      labelNames: ["server"] as const,
      registers: [o.metrics],
    });
    this.reclaimed = new Counter({
      name: "mcpgw_dp_stdio_reclaimed_total",
      help: "stdio processes ended by the gateway to free capacity (idle, unused, warm, lru)",
      labelNames: ["reason"] as const,
      registers: [o.metrics],
    });
    const live = this.live;
    new Gauge({
      name: "mcpgw_dp_stdio_processes",
      help: "stdio server processes running",
      registers: [o.metrics],
      collect() {
        this.set(live.size);
      },
    });
    const tick = Math.min(30_000, Math.max(1000, Math.min(o.idleTimeoutMs, this.unusedTimeoutMs) / 4));
    this.reaper = setInterval(() => this.reapIdle(), tick);
    this.reaper.unref();
    this.heartbeatTimer = setInterval(() => this.heartbeat(), REPORT_EVERY_MS);
    this.heartbeatTimer.unref();
  }

  private get unusedTimeoutMs(): number {
    return this.o.unusedTimeoutMs ?? Math.min(60_000, this.o.idleTimeoutMs);
  }

  /**
   * Whether `command` may run here: a bare name must be on the allowlist and found on this
   * replica's PATH (which a server cannot change); an absolute path must be on it as that path,
   * or be the path (or the real path) a bare entry resolves to here.
   */
  isAllowed(command: string): boolean {
    return this.allowlistRefusal(command) === undefined;
  }

  /** Why the allowlist refuses `command` on this replica, naming the entry that failed. */
  private allowlistRefusal(command: string): string | undefined {
    const setting = "MCPGW_STDIO_ALLOWED_COMMANDS";
    if (!command.includes("/")) {
      if (!this.o.allowedCommands.has(command))
        return `command '${command}' is not on this data plane's allowlist (${setting})`;
      if (!this.resolvedEntries.get(command))
        return `allowlist entry '${command}' is not found on this data plane's PATH (${setting})`;
      return undefined;
    }
    if (!command.startsWith("/")) return `command '${command}' must be a bare name or an absolute path`;
    if (this.o.allowedCommands.has(command)) return undefined;
    const name = basename(command);
    const resolved = this.resolvedEntries.get(name);
    const real = resolved === undefined ? undefined : realPath(command);
    if (resolved && (command === resolved || (real !== undefined && real === realPath(resolved))))
      return undefined;
    if (this.o.allowedCommands.has(name))
      return resolved
        ? `command '${command}' is not allowed on this data plane: allowlist entry '${name}' resolves to '${resolved}' here (${setting})`
        : `command '${command}' is not allowed on this data plane: allowlist entry '${name}' is not found on its PATH (${setting})`;
    return `command '${command}' is not on this data plane's allowlist (${setting})`;
  }

  private readonly lastReport = new Map<string, string>();
  /** The servers of the last snapshot reviewed, reported again every REPORT_EVERY_MS. */
  private reviewed: Iterable<{ server: ServerEntry; org: { org: { platform: boolean } } }> = [];

  /** Says it all again: the worker forgets reports older than a few heartbeats. */
  private heartbeat() {
    this.lastReport.clear();
    this.review(this.reviewed);
  }

  private crashReason(state: ServerState): string {
    const exit = state.lastExit;
    const how = exit?.signal ?? `code ${exit?.code ?? "?"}`;
    return `the process exited (${how}) within ${EARLY_EXIT_MS / 1000} s of starting, ${state.crashes} time(s) in a row`;
  }

  /** Tells `onReport` this replica's word on a server, when it changed. */
  private report(serverId: string, ok: boolean, error: string | null) {
    const key = ok ? "ok" : `no:${error}`;
    if (this.lastReport.get(serverId) === key) return;
    this.lastReport.set(serverId, key);
    this.o.onReport?.(serverId, { ok, error });
  }

  /**
   * Reviews the stdio servers of a snapshot that just landed: each is reported refused (and
   * why) or runnable here. Servers gone from the snapshot are forgotten.
   */
  review(servers: Iterable<{ server: ServerEntry; org: { org: { platform: boolean } } }>): void {
    this.reviewed = servers;
    const seen = new Set<string>();
    for (const { server, org } of servers) {
      if (server.transport !== "stdio" || !server.enabled) continue;
      seen.add(server.id);
      const refused = this.refusal(server, { orgId: "", principalId: "", platformOrg: org.org.platform });
      const state = this.servers.get(server.id);
      if (refused) this.report(server.id, false, refused);
      else if (!state?.crashes) this.report(server.id, true, null);
      else this.report(server.id, false, this.crashReason(state));
    }
    for (const id of this.lastReport.keys()) if (!seen.has(id)) this.lastReport.delete(id);
  }

  /** Why this replica will not run the server for `owner`, or undefined. */
  private refusal(server: ServerEntry, owner: StdioOwner): string | undefined {
    const launch = server.stdio;
    if (!launch) return "server has no catalog entry (re-create it from /api/v1/stdio-catalog)";
    const unsafe = [
      ...Object.keys(launch.env),
      ...launch.parameters.flatMap((p) => (p.env ? [p.env] : [])),
    ].find((name) => UNSAFE_STDIO_ENV.test(name));
    if (unsafe) return `environment variable ${unsafe} may not be set for a stdio server`;
    const notAllowed = this.allowlistRefusal(launch.command);
    if (notAllowed) return notAllowed;
    const { runFor, reason } = this.isolation;
    if (runFor === "none") return `stdio servers are not available on this data plane: ${reason}`;
    if (runFor === "platform_org" && !owner.platformOrg)
      return `stdio servers are not available to this organization on this data plane: ${reason}`;
    return undefined;
  }

  /** A process for a new client session: a warm one if any, else a fresh one. */
  async acquire(server: ServerEntry, sessionId: string, owner: StdioOwner): Promise<StdioProcess> {
    const refused = this.refusal(server, owner);
    if (refused) {
      // The client hears the command's name only; where it resolved is for operators (the log,
      // and the server's status through the reports).
      const allowlist = this.allowlistRefusal(server.stdio?.command ?? "");
      if (allowlist && refused === allowlist) {
        this.o.logger.warn({ server: server.id, reason: refused }, "stdio command refused");
        throw new StdioUnavailable(
          `command '${basename(server.stdio!.command)}' is not allowed on this data plane (MCPGW_STDIO_ALLOWED_COMMANDS)`,
        );
      }
      throw new StdioUnavailable(refused);
    }
    const state = this.state(server);
    state.lastUsed = Date.now();
    await this.checkShares(owner);
    let proc = state.warm.shift();
    while (proc && !proc.alive) proc = state.warm.shift();
    if (!proc) {
      const wait = state.notBefore - Date.now();
      if (wait > 0)
        throw new StdioUnavailable(
          `server '${server.name}' is restarting after crashes`,
          Math.ceil(wait / 1000),
        );
      await this.roomForOne();
      proc = await this.spawn(state);
    }
    proc.session = sessionId;
    proc.owner = owner;
    proc.lastActivity = Date.now();
    void this.refill(state);
    return proc;
  }

  private sessions(filter: (owner: StdioOwner) => boolean): StdioProcess[] {
    return [...this.live].filter((p) => p.owner !== null && filter(p.owner));
  }

  /**
   * Keeps `owner` within its shares: when the principal's (or the org's) share is full, the
   * least recently used idle session of that principal (or org) is ended; 503 only when every
   * one of them is busy.
   */
  private async checkShares(owner: StdioOwner): Promise<void> {
    const shares: Array<[string, StdioProcess[], number]> = [
      [
        "your share of this data plane's stdio processes",
        this.sessions((o) => o.orgId === owner.orgId && o.principalId === owner.principalId),
        this.o.maxPerPrincipal ?? this.o.maxProcesses,
      ],
      [
        "your organization's share of this data plane's stdio processes",
        this.sessions((o) => o.orgId === owner.orgId),
        this.o.maxPerOrg ?? this.o.maxProcesses,
      ],
    ];
    for (const [what, procs, max] of shares) {
      if (procs.length < max) continue;
      if (!(await this.reclaimOne(procs)))
        throw new StdioUnavailable(`every process of ${what} (${max}) is busy`, 5);
    }
  }

  /**
   * Frees a slot when the replica is full: a warm process first, else the least recently used
   * idle session of anyone. 503 only when every process is busy.
   */
  private async roomForOne(): Promise<void> {
    if (this.live.size < this.o.maxProcesses) return;
    const warm = [...this.live].find((p) => p.session === null);
    if (warm) {
      this.reclaimed.inc({ reason: "warm" });
      await this.release(warm);
      return;
    }
    if (!(await this.reclaimOne([...this.live])))
      throw new StdioUnavailable(
        `every one of this data plane's ${this.o.maxProcesses} stdio processes is busy`,
        5,
      );
  }

  /** Ends the least recently used idle session among `procs`; false when all are busy. */
  private async reclaimOne(procs: StdioProcess[]): Promise<boolean> {
    const cutoff = Date.now() - RECLAIM_IDLE_MS;
    const idle = procs
      .filter((p) => p.session !== null && p.inFlight.size === 0 && p.lastActivity < cutoff)
      .sort((a, b) => a.lastActivity - b.lastActivity)[0];
    if (!idle) return false;
    this.o.logger.info(
      { server: idle.server.id, pid: idle.pid, session: idle.session },
      "reclaiming the least recently used idle stdio session for another client",
    );
    this.reclaimed.inc({ reason: "lru" });
    await this.release(idle);
    return true;
  }

  private state(server: ServerEntry): ServerState {
    let state = this.servers.get(server.id);
    if (!state) {
      state = {
        server,
        warm: [],
        crashes: 0,
        notBefore: 0,
        lastExit: null,
        restarts: 0,
        lastUsed: Date.now(),
      };
      this.servers.set(server.id, state);
    } else if (JSON.stringify(state.server) !== JSON.stringify(server)) {
      // The launch changed: warm processes run the old one.
      for (const p of state.warm.splice(0)) void p.close();
      state.server = server;
    }
    return state;
  }

  /** The private working directory of one child, owned by the user it runs as. */
  private async privateDir(): Promise<string> {
    const dir = await mkdtemp(join(this.isolation.workDir, "p-"));
    const user = this.isolation.user;
    if (user) await chown(dir, user.uid, user.gid);
    return dir;
  }

  /** Starts a process; resolves once it runs, rejects (slot freed) if it could not start. */
  private async spawn(state: ServerState): Promise<StdioProcess> {
    if (this.live.size >= this.o.maxProcesses) {
      throw new StdioUnavailable(
        `every one of this data plane's ${this.o.maxProcesses} stdio processes is busy`,
        5,
      );
    }
    const { server } = state;
    const launch = server.stdio!;
    let resolved: ReturnType<typeof resolveStdioLaunch>;
    try {
      const secrets = launch.secrets_sealed ? (this.o.openSecrets?.(server) ?? {}) : {};
      if (launch.secrets_sealed && !this.o.openSecrets)
        throw new StdioLaunchError("secrets cannot be opened here");
      // The entry may have changed since the org set its values: check them again.
      checkStdioValues(launch.parameters, { ...launch.values, ...secrets });
      resolved = resolveStdioLaunch(launch, secrets);
    } catch (err) {
      const why = err instanceof StdioLaunchError ? err.message : "its secret parameters cannot be opened";
      throw new StdioUnavailable(`server '${server.name}' cannot start: ${why}`);
    }
    const dir = await this.privateDir();
    // Shut down meanwhile (a refill racing shutdown): start nothing that nobody would end.
    if (this.stopping) {
      void rm(dir, { recursive: true, force: true }).catch(() => {});
      throw new StdioUnavailable("this data plane is shutting down", 1);
    }
    // A fresh environment: what programs need, a private home, and the entry's own variables.
    const env: Record<string, string> = {};
    for (const name of BASE_ENV) if (process.env[name]) env[name] = process.env[name]!;
    Object.assign(env, { HOME: dir, TMPDIR: dir }, resolved.env);
    const [command, args] =
      this.isolation.sandbox === "bwrap"
        ? ["bwrap", bwrapArgs(dir, this.isolation.sandboxNetwork ?? "none", resolved.command, resolved.args)]
        : [resolved.command, resolved.args];
    const user = this.isolation.user;
    const child = spawn(command, args, {
      cwd: dir,
      env,
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
      windowsHide: true,
      ...(user ? { uid: user.uid, gid: user.gid } : {}),
    });
    const proc = new StdioProcess(child, server, this.o.logger);
    this.live.add(proc);
    // A process that writes to stdout runs: this replica can serve the server.
    child.stdout?.once("data", () => this.report(server.id, true, null));
    this.spawned.inc({ server: tenantLabel(server.id, this.o.tenantLabels ?? false) });
    const failed = await new Promise<Error | null>((resolve) => {
      child.once("spawn", () => resolve(null));
      child.once("error", (err) => resolve(err));
    });
    const cleanup = () => void rm(dir, { recursive: true, force: true }).catch(() => {});
    if (failed) {
      // Nothing runs: the slot is free at once and the client hears why.
      this.live.delete(proc);
      cleanup();
      this.o.logger.error({ server: server.id, err: failed.message }, "stdio server failed to start");
      const code = (failed as NodeJS.ErrnoException).code ?? "error";
      this.report(server.id, false, `the command could not be started (${code})`);
      throw new StdioUnavailable(`server '${server.name}' could not be started (${code})`);
    }
    child.once("exit", (code, signal) => {
      this.live.delete(proc);
      cleanup();
      const index = state.warm.indexOf(proc);
      if (index >= 0) state.warm.splice(index, 1);
      state.lastExit = { code, signal, at: new Date().toISOString() };
      if (this.stopping || proc.closing) return;
      // Exited on its own: count it, back off, and bring the pool back.
      this.restarts.inc({ server: tenantLabel(server.id, this.o.tenantLabels ?? false) });
      state.restarts++;
      state.crashes = Date.now() - proc.startedAt < EARLY_EXIT_MS ? state.crashes + 1 : 0;
      const delay = state.crashes ? Math.min(250 * 2 ** (state.crashes - 1), 30_000) : 0;
      state.notBefore = Date.now() + delay;
      if (state.crashes) this.report(server.id, false, this.crashReason(state));
      this.o.logger.warn(
        { server: server.id, pid: proc.pid, code, signal, crashes: state.crashes, restart_in_ms: delay },
        "stdio server exited",
      );
      // The timer is the backoff: when it fires, refill regardless of clock jitter around notBefore.
      setTimeout(() => void this.refill(state, true), delay).unref();
    });
    return proc;
  }

  private refilling = new Set<ServerState>();

  /** Tops up the server's warm processes, while the replica has spare capacity. */
  private async refill(state: ServerState, backoffElapsed = false) {
    if (this.stopping || this.refilling.has(state) || (!backoffElapsed && Date.now() < state.notBefore))
      return;
    // A server nobody used for a while keeps no warm processes.
    if (Date.now() - state.lastUsed > this.o.idleTimeoutMs) return;
    this.refilling.add(state);
    try {
      while (state.warm.length < this.o.poolSize && this.live.size < this.o.maxProcesses) {
        state.warm.push(await this.spawn(state));
      }
    } catch {
      // Could not start: the next session's acquire reports why.
    } finally {
      this.refilling.delete(state);
    }
  }

  /** Ends the process of a session (the session ended or was reaped). */
  async release(proc: StdioProcess): Promise<void> {
    proc.closing = true;
    await proc.close();
  }

  private reapIdle() {
    const now = Date.now();
    for (const proc of this.live) {
      if (proc.session === null) {
        // Warm processes of a server nobody used for idleTimeoutMs.
        const state = this.servers.get(proc.server.id);
        if (state && now - state.lastUsed > this.o.idleTimeoutMs) {
          this.reclaimed.inc({ reason: "warm" });
          void this.release(proc);
        }
        continue;
      }
      if (proc.inFlight.size > 0) continue;
      const idle = now - proc.lastActivity;
      const reason =
        idle > this.o.idleTimeoutMs
          ? "idle"
          : !proc.used && idle > this.unusedTimeoutMs
            ? "unused"
            : undefined;
      if (!reason) continue;
      this.o.logger.info(
        { server: proc.server.id, pid: proc.pid, session: proc.session, reason },
        "reaping stdio session",
      );
      this.reclaimed.inc({ reason });
      void this.release(proc);
    }
  }

  list(): StdioProcessInfo[] {
    return [...this.live].map((p) => ({
      pid: p.pid,
      server_id: p.server.id,
      server_name: p.server.name,
      state: p.session ? "in_session" : "warm",
      session_id: p.session,
      started_at: new Date(p.startedAt).toISOString(),
      last_activity_at: new Date(p.lastActivity).toISOString(),
    }));
  }

  /** Crash and restart counts per server, for operators. */
  health(
    serverId: string,
  ): { restarts: number; crashes: number; last_exit: ServerState["lastExit"] } | undefined {
    const s = this.servers.get(serverId);
    return s ? { restarts: s.restarts, crashes: s.crashes, last_exit: s.lastExit } : undefined;
  }

  /** Kills every process of a server (its sessions end); warm ones come back unless `stop`. */
  async stopServer(serverId: string, { refill = false } = {}): Promise<number> {
    const procs = [...this.live].filter((p) => p.server.id === serverId);
    const state = this.servers.get(serverId);
    if (state && !refill) state.warm.splice(0);
    await Promise.all(procs.map((p) => this.release(p)));
    if (state && refill) {
      state.crashes = 0;
      state.notBefore = 0;
      state.lastUsed = Date.now();
      await this.refill(state);
    }
    return procs.length;
  }

  /**
   * Operator debugging: runs the server's command once, sends `messages`, and returns what it
   * wrote back until every request was answered or `waitMs` passed; then ends the process.
   */
  async exchange(
    server: ServerEntry,
    messages: JSONRPCMessage[],
    waitMs: number,
    owner: StdioOwner,
  ): Promise<JSONRPCMessage[]> {
    const proc = await this.acquire(server, `debug-${Date.now()}`, owner);
    const received: JSONRPCMessage[] = [];
    const awaiting = new Set(messages.filter((m) => isRequest(m)).map((m) => String(m.id)));
    try {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, waitMs);
        proc.onmessage = (m) => {
          received.push(m);
          if (isResponse(m)) awaiting.delete(String(m.id));
          if (awaiting.size === 0) {
            clearTimeout(timer);
            resolve();
          }
        };
        proc.onclose = () => {
          clearTimeout(timer);
          resolve();
        };
        void (async () => {
          for (const m of messages) await proc.send(m).catch(() => {});
        })();
      });
    } finally {
      await this.release(proc);
    }
    return received;
  }

  get count(): number {
    return this.live.size;
  }

  /** Kills every process (shutdown). */
  async shutdown(): Promise<void> {
    this.stopping = true;
    clearInterval(this.reaper);
    clearInterval(this.heartbeatTimer);
    await Promise.all([...this.live].map((p) => p.close()));
    await rm(this.isolation.workDir, { recursive: true, force: true }).catch(() => {});
  }
}

/** The absolute path each bare allowlist entry resolves to on `path` (undefined: not found). */
function resolveAllowlist(entries: ReadonlySet<string>, path: string): Map<string, string | undefined> {
  const resolved = new Map<string, string | undefined>();
  for (const entry of entries) {
    if (entry.includes("/")) continue;
    const found = path
      .split(":")
      .filter((dir) => dir.startsWith("/"))
      .map((dir) => join(dir, entry))
      .find((candidate) => {
        try {
          accessSync(candidate, constants.X_OK);
          return statSync(candidate).isFile();
        } catch {
          return false;
        }
      });
    resolved.set(entry, found);
  }
  return resolved;
}

/** Real paths of the few commands catalog entries name, resolved once (no disk read per session). */
const realPaths = new Map<string, string | undefined>();

function realPath(path: string): string | undefined {
  if (realPaths.has(path)) return realPaths.get(path);
  let real: string | undefined;
  try {
    real = realpathSync(path);
  } catch {
    real = undefined;
  }
  if (realPaths.size > 1000) realPaths.clear();
  realPaths.set(path, real);
  return real;
}
