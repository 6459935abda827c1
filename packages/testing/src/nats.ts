import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, type ManagedProcess, startProcess } from "./processes.ts";

/**
 * A private NATS server (JetStream on) for tests that stop and restart NATS, so the shared
 * one on 4222 is never disturbed. Needs the `nats-server` binary on PATH or in /usr/sbin.
 */
export async function startPrivateNats(): Promise<{
  url: string;
  stop(): Promise<void>;
  start(): Promise<void>;
  destroy(): Promise<void>;
}> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), "mcpgw-nats-"));
  const bin = process.env.NATS_SERVER_BIN ?? "nats-server";
  let proc: ManagedProcess | undefined;
  const start = async () => {
    proc = startProcess(bin, ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", dir], {
      PATH: `${process.env.PATH}:/usr/sbin:/usr/local/sbin`,
    });
    const deadline = Date.now() + 10_000;
    while (!proc.output().includes("Server is ready")) {
      if (Date.now() > deadline || proc.child.exitCode !== null)
        throw new Error(`nats-server did not start:\n${proc.output()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  await start();
  return {
    url: `nats://127.0.0.1:${port}`,
    start,
    stop: async () => proc?.stop(),
    destroy: async () => {
      await proc?.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
