import { freePort, type ManagedProcess, startProcess } from "./processes.ts";

/**
 * A private Redis for tests that stop and restart it, so the shared one on 6379 is never
 * disturbed. Needs `redis-server` on PATH (or REDIS_SERVER_BIN). Nothing is persisted.
 */
export async function startPrivateRedis(): Promise<{
  url: string;
  start(): Promise<void>;
  stop(): Promise<void>;
}> {
  const port = await freePort();
  const bin = process.env.REDIS_SERVER_BIN ?? "redis-server";
  let proc: ManagedProcess | undefined;
  const start = async () => {
    proc = startProcess(
      bin,
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      {
        PATH: `${process.env.PATH}:/usr/sbin:/usr/local/bin`,
      },
    );
    const deadline = Date.now() + 10_000;
    while (!proc.output().includes("Ready to accept connections")) {
      if (Date.now() > deadline || proc.child.exitCode !== null)
        throw new Error(`redis-server did not start:\n${proc.output()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  await start();
  return { url: `redis://127.0.0.1:${port}`, start, stop: async () => proc?.stop() };
}
