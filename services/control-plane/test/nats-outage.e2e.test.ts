import { NatsBus } from "@mcpgw/bus";
import { Keyring } from "@mcpgw/secrets";
import { generateSnapshotKeys } from "@mcpgw/snapshot";
import { afterAll, describe, expect, it } from "vitest";
import {
  createTestDatabase,
  eventually,
  freePort,
  login,
  type ManagedProcess,
  runId,
  startPrivateNats,
  startTsService,
} from "../../../packages/testing/src/index.ts";

// The control plane must come up while NATS is down: serve the API (reporting not ready), and
// publish what changed meanwhile once NATS is back.
describe("control plane starting while NATS is down", () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterAll(async () => {
    for (const c of cleanup.reverse()) await c().catch(() => {});
  });

  it("listens, reports not ready, accepts changes, and publishes them when NATS comes back", {
    timeout: 120_000,
  }, async () => {
    const nats = await startPrivateNats();
    cleanup.push(nats.destroy);
    await nats.stop();
    const db = await createTestDatabase();
    cleanup.push(db.drop);
    const id = runId();
    const { privateJwk } = await generateSnapshotKeys();
    const port = await freePort();
    const cp: ManagedProcess = startTsService("services/control-plane/src/main.ts", {
      DATABASE_URL: db.url,
      NATS_URL: nats.url,
      MCPGW_BUS_PREFIX: `t${id}`,
      MCPGW_MASTER_KEY: Keyring.generateKey(),
      MCPGW_SNAPSHOT_SIGNING_KEY: JSON.stringify(privateJwk),
      MCPGW_ADMIN_EMAIL: `admin-${id}@example.test`,
      MCPGW_ADMIN_PASSWORD: "long enough password",
      MCPGW_PUBLISH_SWEEP_MS: "500",
      CP_PORT: String(port),
      CP_HOST: "127.0.0.1",
    });
    cleanup.push(() => cp.stop());
    const url = `http://127.0.0.1:${port}`;
    await eventually(async () => (await fetch(`${url}/health`)).ok, 60_000).catch((err) => {
      throw new Error(
        `the control plane did not listen while NATS was down: ${err}\n${cp.output().slice(-3000)}`,
      );
    });
    expect((await fetch(`${url}/ready`)).status).toBe(503);
    const api = await login(url, `admin-${id}@example.test`, "long enough password");
    const ns = await api.call<{ id: string; org_id: string }>("POST", "/api/v1/namespaces", {
      name: "While down",
      slug: "while-down",
    });
    expect(ns.status).toBe(201);

    await nats.start();
    await eventually(async () => (await fetch(`${url}/ready`)).status === 200, 30_000).catch((err) => {
      throw new Error(`the control plane did not become ready after NATS came back: ${err}`);
    });
    const bus = await NatsBus.connect(nats.url);
    cleanup.push(() => bus.close());
    const bucket = await bus.bucket(`t${id}_config`);
    const orgs = await api.call<{ items: Array<{ id: string }> }>("GET", "/api/v1/organizations");
    const orgId = orgs.body.items[0]!.id;
    await eventually(async () => (await bucket.get(`org.${orgId}`)) !== null, 15_000).catch((err) => {
      throw new Error(`the change made while NATS was down was not published after it came back: ${err}`);
    });
  });
});
