import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NatsBus } from "@mcpgw/bus";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  eventually,
  freePort,
  type ManagedProcess,
  repoRoot,
  type Stack,
  startProcess,
  startStack,
  startTestUpstream,
  startTsService,
  type TestUpstream,
} from "../../../packages/testing/src/index.ts";

// The NATS configuration the compose file and the Kubernetes dev overlay run (infra/nats/nats.conf),
// on a private nats-server: every service works with its own credentials and nothing more, and
// nobody without them gets in.
describe("NATS with the deployment's authorization (infra/nats/nats.conf)", () => {
  // As the docs generate them: a letter first (nats-server parses the variable as a value).
  const password = () => `n${randomBytes(18).toString("hex")}`;
  const passwords = { "control-plane": password(), "data-plane": password(), worker: password() };
  let nats: ManagedProcess;
  let natsPort: number;
  let storeDir: string;
  let stack: Stack;
  let worker: ManagedProcess;
  let upstream: TestUpstream;
  let api: Api;
  const as = (user: keyof typeof passwords, password = passwords[user]) =>
    `nats://${user}:${password}@127.0.0.1:${natsPort}`;

  beforeAll(async () => {
    storeDir = await mkdtemp(join(tmpdir(), "mcpgw-nats-auth-"));
    [natsPort, upstream] = await Promise.all([freePort(), startTestUpstream()]);
    const monitorPort = await freePort();
    nats = startProcess(
      process.env.NATS_SERVER_BIN ?? "nats-server",
      [
        ...["-c", join(repoRoot, "infra/nats/nats.conf")],
        ...["-a", "127.0.0.1", "-p", String(natsPort), "-m", String(monitorPort), "-sd", storeDir],
      ],
      {
        PATH: `${process.env.PATH}:/usr/sbin:/usr/local/sbin`,
        NATS_CONTROL_PLANE_PASSWORD: passwords["control-plane"],
        NATS_DATA_PLANE_PASSWORD: passwords["data-plane"],
        NATS_WORKER_PASSWORD: passwords.worker,
      },
    );
    await eventually(() => nats.output().includes("Server is ready"), 10_000).catch((err) => {
      throw new Error(`nats-server did not start with infra/nats/nats.conf: ${err}\n${nats.output()}`);
    });
    // The configuration names subjects under the default prefix.
    stack = await startStack({
      replicas: 2,
      natsUrl: as("control-plane"),
      env: { MCPGW_BUS_PREFIX: "mcpgw" },
      replicaEnv: [{ NATS_URL: as("data-plane") }, { NATS_URL: as("data-plane") }],
    }).catch((err) => {
      throw new Error(
        `the services did not come up with their NATS credentials (does packages/bus pass NATS_URL's user:password to nats.js?): ${err}\n${nats.output().slice(-3000)}`,
      );
    });
    worker = startTsService("services/worker/src/main.ts", { ...stack.env, NATS_URL: as("worker") });
    api = await stack.api();
  }, 120_000);

  afterAll(async () => {
    await worker?.stop();
    await stack?.stop();
    await upstream?.close();
    await nats?.stop();
    if (storeDir) await rm(storeDir, { recursive: true, force: true });
  });

  it("is the configuration the Kubernetes dev overlay runs too", async () => {
    // kustomize loads files only from inside the overlay, so it keeps a copy.
    const [canonical, copy] = await Promise.all([
      readFile(join(repoRoot, "infra/nats/nats.conf"), "utf8"),
      readFile(join(repoRoot, "infra/k8s/overlays/dev/nats.conf"), "utf8"),
    ]);
    expect(copy).toBe(canonical);
  });

  it("refuses clients without credentials or with another service's password", async () => {
    await expect(NatsBus.connect(`nats://127.0.0.1:${natsPort}`)).rejects.toThrow(/Authorization Violation/);
    await expect(NatsBus.connect(as("control-plane", passwords["data-plane"]))).rejects.toThrow(
      /Authorization Violation/,
    );
  });

  it("carries snapshots, operator fan-out, namespace inspection and health with each service's own rights", {
    timeout: 60_000,
  }, async () => {
    // Snapshots reached both data planes (they verify the admin's token with keys from them),
    // and a data plane's fan-out on mcpgw.dataplane.ops is answered by both.
    await eventually(async () => {
      const res = await fetch(`${stack.dataPlanes[0]!.url}/mcp/status`, {
        headers: { authorization: `Bearer ${api.token}` },
      });
      return res.ok && ((await res.json()) as { replicas: unknown[] }).replicas.length === 2;
    }, 15_000);
    // The control plane asks one data plane over mcpgw.dataplane.inspect.
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", { name: "Auth", slug: "auth" });
    expect(ns.status).toBe(201);
    const conflicts = await eventually(async () => {
      const res = await api.call<{ replica: string }>("GET", `/api/v1/namespaces/${ns.body.id}/conflicts`);
      return res.status === 200 ? res.body : undefined;
    }, 15_000);
    expect(conflicts?.replica).toMatch(/^dp[01]$/);
    // The worker writes the health bucket.
    const server = await api.call<{ id: string }>("POST", "/api/v1/servers", {
      namespace_id: ns.body.id,
      name: "checked",
      transport: "streamable_http",
      url: upstream.url,
    });
    expect(server.status).toBe(201);
    const asWorker = await NatsBus.connect(as("worker"));
    try {
      const health = await asWorker.bucket("mcpgw_health");
      await eventually(async () => (await health.get(`server.${server.body.id}`)) !== null, 20_000).catch(
        (err) => {
          throw new Error(`the worker wrote no health entry: ${err}\n${worker.output().slice(-3000)}`);
        },
      );
    } finally {
      await asWorker.close();
    }
    // And none of it needed a subject the configuration does not grant.
    expect(nats.output()).not.toMatch(/Violation/);
  });

  it("lets only the control plane write snapshots", { timeout: 30_000 }, async () => {
    const asDataPlane = await NatsBus.connect(as("data-plane"));
    const asWorker = await NatsBus.connect(as("worker"));
    try {
      const config = await asDataPlane.bucket("mcpgw_config");
      expect(await config.get("ready-probe")).toBeNull(); // it may read them
      await expect(config.put("org.forged", "{}")).rejects.toThrow();
      await expect(asWorker.bucket("mcpgw_config")).rejects.toThrow();
      expect(nats.output()).toMatch(/Publish Violation.*"data-plane".*\$KV\.mcpgw_config\.org\.forged/);
    } finally {
      await asDataPlane.close();
      await asWorker.close();
    }
  });
});
