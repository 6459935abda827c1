import { type ChildProcess, spawn } from "node:child_process";
import { basename } from "node:path";
import { type ServerEntry, UNSAFE_STDIO_ENV } from "@mcpgw/snapshot";
import { Counter, Gauge, type Logger, type Registry } from "@mcpgw/telemetry";
import { ReadBuffer, serializeMessage } from "@modelcontextprotocol/sdk/shared/stdio.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";

export interface StdioOptions {
  /** Executables (names or absolute paths) an admin-registered server may run; empty: none. */
  allowedCommands: ReadonlySet<string>;
  /** Most child processes this replica runs at once. */
  maxProcesses: number;
  /** Pre-started processes kept per server that has been used. */
  poolSize: number;
  /** A session with no traffic for this long is ended and its process killed. */
  idleTimeoutMs: number;
  logger: Logger;
  metrics: Registry;
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
}

const BASE_ENV = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SYSTEMROOT"];

/** A process that exits within this long of starting counts as a crash for backoff. */
const EARLY_EXIT_MS = 5_000;

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
    child.once("exit", (code) => {
      this.exitCode = code;
      this.closed = true;
      this.onclose?.();
    });
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
      else this.child.once("exit", () => resolve());
    });
    clearTimeout(killer);
  }
}

/**
 * Runs admin-registered stdio MCP servers as child processes of this replica: one process per
 * client session, a small pool of pre-started processes per server, a cap on the total, idle
 * reaping, restart with exponential backoff for commands that crash, stderr into the logs, and
 * every process killed (with its process group) on session end and on shutdown. Commands come
 * only from the signed snapshot and must be on this replica's allowlist.
 */
export class StdioProcessManager {
  private readonly servers = new Map<string, ServerState>();
  private readonly live = new Set<StdioProcess>();
  private readonly reaper: NodeJS.Timeout;
  private stopping = false;
  private readonly spawned: Counter<"server">;
  private readonly restarts: Counter<"server">;

  constructor(private readonly o: StdioOptions) {
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
    const live = this.live;
    new Gauge({
      name: "mcpgw_dp_stdio_processes",
      help: "stdio server processes running",
      registers: [o.metrics],
      collect() {
        this.set(live.size);
      },
    });
    this.reaper = setInterval(() => this.reapIdle(), Math.min(30_000, Math.max(1000, o.idleTimeoutMs / 4)));
    this.reaper.unref();
  }

  /**
   * Whether `command` may run here: a bare name must be on the allowlist (and is found through
   * this replica's PATH, which a server cannot change); a path must be on it as that exact path.
   */
  isAllowed(command: string): boolean {
    return this.o.allowedCommands.has(command) && (!command.includes("/") || command.startsWith("/"));
  }

  /** A process for a new client session: a warm one if any, else a fresh one. */
  async acquire(server: ServerEntry, sessionId: string): Promise<StdioProcess> {
    if (!server.command) throw new StdioUnavailable("server has no command");
    const unsafe = Object.keys(server.env).find((name) => UNSAFE_STDIO_ENV.test(name));
    if (unsafe)
      throw new StdioUnavailable(`environment variable ${unsafe} may not be set for a stdio server`);
    if (!this.isAllowed(server.command)) {
      throw new StdioUnavailable(
        `command '${basename(server.command)}' is not allowed on this data plane (MCPGW_STDIO_ALLOWED_COMMANDS)`,
      );
    }
    const state = this.state(server);
    let proc = state.warm.shift();
    while (proc && !proc.alive) proc = state.warm.shift();
    if (!proc) {
      const wait = state.notBefore - Date.now();
      if (wait > 0)
        throw new StdioUnavailable(
          `server '${server.name}' is restarting after crashes`,
          Math.ceil(wait / 1000),
        );
      proc = this.spawn(state);
    }
    proc.session = sessionId;
    proc.lastActivity = Date.now();
    this.refill(state);
    return proc;
  }

  private state(server: ServerEntry): ServerState {
    let state = this.servers.get(server.id);
    if (!state) {
      state = { server, warm: [], crashes: 0, notBefore: 0, lastExit: null, restarts: 0 };
      this.servers.set(server.id, state);
    } else if (JSON.stringify(state.server) !== JSON.stringify(server)) {
      // The command changed: warm processes run the old one.
      for (const p of state.warm.splice(0)) void p.close();
      state.server = server;
    }
    return state;
  }

  private spawn(state: ServerState): StdioProcess {
    if (this.live.size >= this.o.maxProcesses) {
      throw new StdioUnavailable(
        `this data plane runs its maximum of ${this.o.maxProcesses} stdio processes`,
        5,
      );
    }
    const { server } = state;
    // The child gets a minimal environment plus the server's own, never this replica's secrets.
    const env: Record<string, string> = {};
    for (const name of BASE_ENV) if (process.env[name]) env[name] = process.env[name]!;
    Object.assign(env, server.env);
    const child = spawn(server.command!, server.args, {
      cwd: server.cwd ?? undefined,
      env,
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
      windowsHide: true,
    });
    const proc = new StdioProcess(child, server, this.o.logger);
    this.live.add(proc);
    this.spawned.inc({ server: server.id });
    child.once("error", (err) =>
      this.o.logger.error({ server: server.id, err: err.message }, "stdio server failed to start"),
    );
    child.once("exit", (code, signal) => {
      this.live.delete(proc);
      const index = state.warm.indexOf(proc);
      if (index >= 0) state.warm.splice(index, 1);
      state.lastExit = { code, signal, at: new Date().toISOString() };
      if (this.stopping || proc.closing) return;
      // Exited on its own: count it, back off, and bring the pool back.
      this.restarts.inc({ server: server.id });
      state.restarts++;
      state.crashes = Date.now() - proc.startedAt < EARLY_EXIT_MS ? state.crashes + 1 : 0;
      const delay = state.crashes ? Math.min(250 * 2 ** (state.crashes - 1), 30_000) : 0;
      state.notBefore = Date.now() + delay;
      this.o.logger.warn(
        { server: server.id, pid: proc.pid, code, signal, crashes: state.crashes, restart_in_ms: delay },
        "stdio server exited",
      );
      // The timer is the backoff: when it fires, refill regardless of clock jitter around notBefore.
      setTimeout(() => this.refill(state, true), delay).unref();
    });
    return proc;
  }

  private refill(state: ServerState, backoffElapsed = false) {
    if (this.stopping || (!backoffElapsed && Date.now() < state.notBefore)) return;
    while (state.warm.length < this.o.poolSize && this.live.size < this.o.maxProcesses) {
      try {
        state.warm.push(this.spawn(state));
      } catch {
        return;
      }
    }
  }

  /** Ends the process of a session (the session ended or was reaped). */
  async release(proc: StdioProcess): Promise<void> {
    proc.closing = true;
    await proc.close();
  }

  private reapIdle() {
    const cutoff = Date.now() - this.o.idleTimeoutMs;
    for (const proc of this.live) {
      if (proc.session && proc.lastActivity < cutoff) {
        this.o.logger.info(
          { server: proc.server.id, pid: proc.pid, session: proc.session },
          "reaping idle stdio session",
        );
        void this.release(proc);
      }
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
      this.refill(state);
    }
    return procs.length;
  }

  /**
   * Operator debugging: runs the server's command once, sends `messages`, and returns what it
   * wrote back until every request was answered or `waitMs` passed; then ends the process.
   */
  async exchange(server: ServerEntry, messages: JSONRPCMessage[], waitMs: number): Promise<JSONRPCMessage[]> {
    const proc = await this.acquire(server, `debug-${Date.now()}`);
    const received: JSONRPCMessage[] = [];
    const awaiting = new Set(
      messages.filter((m) => "id" in m && "method" in m).map((m) => String((m as { id: unknown }).id)),
    );
    try {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, waitMs);
        proc.onmessage = (m) => {
          received.push(m);
          if ("id" in m && !("method" in m)) awaiting.delete(String((m as { id: unknown }).id));
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
    await Promise.all([...this.live].map((p) => p.close()));
  }
}
