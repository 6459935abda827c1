import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";

export const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));

/**
 * A free TCP port on loopback, chosen below the kernel's ephemeral range (32768 and up on
 * Linux): the kernel hands ports of that range to every outgoing connection and port-0
 * listener, so a port of it left free while a service restarts on it could be taken meanwhile.
 */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (await canListen(port)) return port;
  }
  throw new Error("no free loopback port between 20000 and 32000 after 50 tries");
}

async function canListen(port: number): Promise<boolean> {
  const server = createServer();
  try {
    server.listen(port, "127.0.0.1");
    await once(server, "listening");
  } catch {
    return false;
  }
  server.close();
  await once(server, "close");
  return true;
}

export interface ManagedProcess {
  child: ChildProcess;
  /** Everything the process printed, for assertions and for debugging a failed test. */
  output(): string;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  kill(): Promise<void>;
}

/** Spawns a process with its output captured; it is killed if the test process exits. */
export function startProcess(
  command: string,
  args: string[],
  env: Record<string, string | undefined>,
  cwd = repoRoot,
): ManagedProcess {
  const child = spawn(command, args, {
    cwd,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const append = (d: Buffer) => {
    out += d.toString();
    if (out.length > 2_000_000) out = out.slice(-1_000_000);
  };
  child.stdout?.on("data", append);
  child.stderr?.on("data", append);
  const exited = once(child, "exit").catch(() => undefined);
  const killOnExit = () => child.kill("SIGKILL");
  process.once("exit", killOnExit);
  const stop = async (graceMs = 5000) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    await exited;
    clearTimeout(timer);
    process.off("exit", killOnExit);
  };
  return {
    child,
    output: () => out,
    stop,
    kill: () => stop(0),
  };
}

/** Spawns one of our TypeScript entry points under tsx. */
export function startTsService(entry: string, env: Record<string, string | undefined>): ManagedProcess {
  return startProcess(process.execPath, ["--import", "tsx", entry], env);
}

/**
 * How long a wait may take is scaled by `TEST_WAIT_SCALE` (default 1): a loaded or slow runner
 * sets it above 1 instead of every test guessing its own margin.
 */
export const waitScale = Math.max(1, Number(process.env.TEST_WAIT_SCALE) || 1);

/**
 * Polls `url` until it answers 200, or fails with the process output. The default budget covers
 * a cold start (tsx compiling the service) on a busy 2-core machine.
 */
export async function waitForReady(url: string, proc?: ManagedProcess, budgetMs = 60_000): Promise<void> {
  const timeoutMs = budgetMs * waitScale;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc && proc.child.exitCode !== null)
      throw new Error(`process exited (${proc.child.exitCode}) before ready:\n${proc.output()}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} not ready within ${timeoutMs} ms${proc ? `:\n${proc.output().slice(-5000)}` : ""}`);
}

/**
 * Waits until `fn` returns a truthy value, polling every 50 ms; `what` names the condition in the
 * failure, with the budget and the last error.
 */
export async function eventually<T>(
  fn: () => Promise<T> | T,
  budgetMs = 10_000,
  what = "condition",
): Promise<T> {
  const timeoutMs = budgetMs * waitScale;
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} not met within ${timeoutMs} ms${last ? ` (last error: ${String(last)})` : ""}`);
}
