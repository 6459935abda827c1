import { Keyring } from "@mcpgw/secrets";
import { generateSnapshotKeys } from "@mcpgw/snapshot";
import { afterAll, describe, expect, it } from "vitest";
import {
  createTestDatabase,
  eventually,
  freePort,
  type ManagedProcess,
  runId,
  startPrivateNats,
  startTsService,
  waitForReady,
} from "../../../packages/testing/src/index.ts";

// `/ready` is what load balancers and Kubernetes act on: it must follow the bus and the database
// as they are now, not as they were when the control plane first reached them.
describe("control plane readiness", () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterAll(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it("turns not ready while NATS is down, ready again when it is back, and not ready without its database", {
    timeout: 120_000,
  }, async () => {
    const nats = await startPrivateNats();
    cleanup.push(nats.destroy);
    const db = await createTestDatabase();
    cleanup.push(db.drop);
    const { privateJwk } = await generateSnapshotKeys();
    const port = await freePort();
    const cp: ManagedProcess = startTsService("services/control-plane/src/main.ts", {
      DATABASE_URL: db.url,
      NATS_URL: nats.url,
      MCPGW_BUS_PREFIX: `t${runId()}`,
      MCPGW_MASTER_KEY: Keyring.generateKey(),
      MCPGW_SNAPSHOT_SIGNING_KEY: JSON.stringify(privateJwk),
      MCPGW_ADMIN_EMAIL: `admin-${runId()}@example.test`,
      MCPGW_ADMIN_PASSWORD: "long enough password",
      CP_PORT: String(port),
      CP_HOST: "127.0.0.1",
      LOG_LEVEL: "info",
    });
    cleanup.push(() => cp.stop());
    const url = `http://127.0.0.1:${port}`;
    const ready = async () => (await fetch(`${url}/ready`, { signal: AbortSignal.timeout(3000) })).status;
    const within = async (status: number, ms: number, what: string) =>
      eventually(async () => (await ready()) === status, ms).catch((err) => {
        throw new Error(`${what}: ${err}\n${cp.output().slice(-3000)}`);
      });

    await waitForReady(`${url}/ready`, cp, 60_000);

    // Startup may have said "not ready" already (probes before the bus connected, on a slow
    // machine): only what is said from the outage on counts.
    const outputBefore = cp.output().length;
    await nats.stop();
    const stoppedAt = Date.now();
    await within(503, 5_000, "/ready stayed 200 with NATS down");
    expect(Date.now() - stoppedAt).toBeLessThan(5_000);
    // Still serving meanwhile: only readiness changes.
    expect((await fetch(`${url}/health`)).status).toBe(200);
    const logged = (msg: string) =>
      cp
        .output()
        .slice(outputBefore)
        .split("\n")
        .filter((line) => line.includes(msg));
    // Said once, naming what is down, not on every probe.
    await expect.poll(() => logged("control plane not ready")).toHaveLength(1);
    expect(logged("control plane not ready")[0]).toContain('"name":"bus"');

    await nats.start();
    await within(200, 30_000, "/ready did not return to 200 after NATS came back");
    await expect.poll(() => logged("control plane ready again")).toHaveLength(1);

    await db.drop();
    await within(503, 10_000, "/ready stayed 200 without the database");
    expect((await fetch(`${url}/ready`)).status).toBe(503);
  });
});
