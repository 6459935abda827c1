import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Keyring } from "../../secrets/src/keyring.ts";
import { generateSnapshotKeys } from "../../snapshot/src/signing.ts";
import { deleteNatsBuckets, deleteRedisKeys } from "./cleanup.ts";
import { createTestDatabase } from "./database.ts";
import { runId, testEnv } from "./env.ts";
import { eventually, freePort, type ManagedProcess, startTsService, waitForReady } from "./processes.ts";

export interface DataPlaneHandle {
  url: string;
  port: number;
  dataDir: string;
  proc: ManagedProcess;
  /** Restarts the replica on the same port and data dir (its disk cache survives). */
  restart(extraEnv?: Record<string, string>): Promise<void>;
}

export interface Stack {
  cpUrl: string;
  dataPlanes: DataPlaneHandle[];
  worker: ManagedProcess | undefined;
  admin: { email: string; password: string };
  env: Record<string, string>;
  /** Logs in as the bootstrap admin and returns a fetch bound to the control plane. */
  api(): Promise<Api>;
  stop(): Promise<void>;
}

export interface Api {
  token: string;
  call<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }>;
}

export interface StackOptions {
  replicas?: number;
  worker?: boolean;
  natsUrl?: string;
  /** Extra environment for every service. */
  env?: Record<string, string>;
  /** Extra environment per data-plane replica (by index). */
  replicaEnv?: Array<Record<string, string>>;
}

/**
 * The distributed gateway as separate processes: control plane, N data-plane replicas and
 * (optionally) the worker, on a database, NATS bucket prefix and Redis prefix of their own.
 */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const id = runId();
  const db = await createTestDatabase();
  const { privateJwk, publicJwk } = await generateSnapshotKeys();
  const admin = { email: `admin-${id}@example.test`, password: `pw-${id}-long-enough` };
  const env: Record<string, string> = {
    DATABASE_URL: db.url,
    NATS_URL: options.natsUrl ?? testEnv.natsUrl,
    REDIS_URL: testEnv.redisUrl,
    MCPGW_BUS_PREFIX: `t${id}`,
    MCPGW_QUEUE_PREFIX: `t${id}`,
    MCPGW_MASTER_KEY: Keyring.generateKey(),
    MCPGW_SNAPSHOT_SIGNING_KEY: JSON.stringify(privateJwk),
    MCPGW_SNAPSHOT_PUBLIC_KEY: JSON.stringify(publicJwk),
    MCPGW_ADMIN_EMAIL: admin.email,
    MCPGW_ADMIN_PASSWORD: admin.password,
    MCPGW_ALLOW_PRIVATE_UPSTREAMS: "true",
    MCPGW_PUBLISH_SWEEP_MS: "500",
    WORKER_HEALTH_SWEEP_MS: "1000",
    LOG_LEVEL: "info",
    ...options.env,
  };
  const tmp = await mkdtemp(join(tmpdir(), "mcpgw-stack-"));
  const started: ManagedProcess[] = [];
  /** Everything this stack holds: its processes, database, temp dir, bus and queue names. */
  const release = async () => {
    await Promise.all(started.map((p) => p.stop()));
    await db.drop();
    await rm(tmp, { recursive: true, force: true });
    await deleteNatsBuckets(env.NATS_URL!, env.MCPGW_BUS_PREFIX!);
    await deleteRedisKeys(env.REDIS_URL!, env.MCPGW_QUEUE_PREFIX!);
  };
  try {
    return await startServices(options, env, tmp, started, admin, release);
  } catch (err) {
    // A stack that fails to start leaves no process running and no database behind.
    await release().catch(() => {});
    throw err;
  }
}

async function startServices(
  options: StackOptions,
  env: Record<string, string>,
  tmp: string,
  started: ManagedProcess[],
  admin: Stack["admin"],
  release: () => Promise<void>,
): Promise<Stack> {
  const cpPort = await freePort();
  const cp = startTsService("services/control-plane/src/main.ts", {
    ...env,
    CP_PORT: String(cpPort),
    CP_HOST: "127.0.0.1",
  });
  started.push(cp);
  const cpUrl = `http://127.0.0.1:${cpPort}`;
  await waitForReady(`${cpUrl}/ready`, cp);

  const dataPlanes: DataPlaneHandle[] = [];
  for (let i = 0; i < (options.replicas ?? 2); i++) {
    const port = await freePort();
    const dataDir = join(tmp, `dp${i}`);
    const dpEnv = {
      ...env,
      DP_PORT: String(port),
      DP_HOST: "127.0.0.1",
      MCPGW_DATA_DIR: dataDir,
      MCPGW_REPLICA_ID: `dp${i}`,
      ...options.replicaEnv?.[i],
    };
    const handle: DataPlaneHandle = {
      url: `http://127.0.0.1:${port}`,
      port,
      dataDir,
      proc: startTsService("services/data-plane/src/main.ts", dpEnv),
      async restart(extraEnv = {}) {
        await handle.proc.stop();
        handle.proc = startTsService("services/data-plane/src/main.ts", { ...dpEnv, ...extraEnv });
      },
    };
    started.push(handle.proc);
    dataPlanes.push(handle);
  }
  await Promise.all(dataPlanes.map((d) => waitForReady(`${d.url}/ready`, d.proc)));
  const worker = options.worker ? startTsService("services/worker/src/main.ts", env) : undefined;
  if (worker) started.push(worker);

  return {
    cpUrl,
    dataPlanes,
    worker,
    admin,
    env,
    api: () => login(cpUrl, admin.email, admin.password),
    async stop() {
      // Replicas restarted by the test run as new processes: stop those, not the first ones.
      started.splice(0, started.length, ...dataPlanes.map((d) => d.proc), cp, ...(worker ? [worker] : []));
      await release();
    },
  };
}

/** Logs in to a control plane and returns a JSON client bound to the token. */
export async function login(cpUrl: string, email: string, password: string): Promise<Api> {
  const res = await fetch(`${cpUrl}/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, password }),
  });
  if (!res.ok) throw new Error(`login failed: ${res.status} ${await res.text()}`);
  const { access_token: token } = (await res.json()) as { access_token: string };
  return {
    token,
    async call<T>(method: string, path: string, body?: unknown) {
      const r = await fetch(`${cpUrl}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await r.text();
      return { status: r.status, body: (text ? JSON.parse(text) : undefined) as T };
    },
  };
}

/**
 * Waits until `dataPlane` serves `serverId` to `credential` (a token or API key): a JSON-RPC
 * ping through `/servers/{id}/rpc` answers 200 once the snapshot with both has landed there.
 */
export async function waitForServer(
  dataPlane: string,
  serverId: string,
  credential: string,
  budgetMs = 30_000,
): Promise<void> {
  await eventually(
    async () => {
      const res = await fetch(`${dataPlane}/servers/${serverId}/rpc`, {
        method: "POST",
        headers: { authorization: `Bearer ${credential}`, "content-type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
      });
      await res.body?.cancel();
      return res.status === 200;
    },
    budgetMs,
    `server ${serverId} to be served by ${dataPlane}`,
  );
}
