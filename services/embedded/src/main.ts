import { createServer } from "node:http";
import { join, resolve } from "node:path";
import { serve } from "@hono/node-server";
import { MemoryBus } from "@mcpgw/bus";
import { startControlPlane } from "@mcpgw/control-plane/runtime";
import { loopbackUrl, startDataPlane } from "@mcpgw/data-plane/runtime";
import { openDatabase } from "@mcpgw/db";
import { InProcessJobRunner } from "@mcpgw/queue";
import { createLogger, createMetricsRegistry } from "@mcpgw/telemetry";
import { startWorker } from "@mcpgw/worker/runtime";
import { loadEmbeddedConfig } from "./config.ts";
import { loadOrCreateKeys } from "./keys.ts";

// Embedded mode: control plane, data plane and worker in one process, on PGlite, an
// in-process bus and an in-process job runner. Same code paths as the distributed services.
const logger = createLogger("mcpgw");
let config: ReturnType<typeof loadEmbeddedConfig>;
try {
  config = loadEmbeddedConfig();
} catch (err) {
  logger.fatal((err as Error).message);
  process.exit(1);
}

const dataDir = resolve(config.MCPGW_DATA_DIR);
const keys = await loadOrCreateKeys(dataDir);
const database = await openDatabase(`pglite://${join(dataDir, "pg")}`);
const bus = new MemoryBus();
const busPrefix = "mcpgw";

const cp = await startControlPlane({
  database,
  bus,
  busPrefix,
  logger: logger.child({ service: "control-plane" }),
  metrics: createMetricsRegistry("control-plane"),
  metricsToken: config.MCPGW_METRICS_TOKEN,
  masterKey: keys.master_key,
  snapshotSigningKey: keys.snapshot_signing_key,
  jwtIssuer: config.MCPGW_JWT_ISSUER,
  jwtAudience: config.MCPGW_JWT_AUDIENCE,
  accessTokenTtlS: config.MCPGW_ACCESS_TOKEN_TTL_S,
  allowPrivateUpstreams: config.MCPGW_ALLOW_PRIVATE_UPSTREAMS,
  publishSweepMs: 2_000,
  admin: { email: config.MCPGW_ADMIN_EMAIL, password: config.MCPGW_ADMIN_PASSWORD },
});
const runner = new InProcessJobRunner((err, job) => logger.warn({ err, job }, "job failed"));
const dp = await startDataPlane({
  masterKey: keys.master_key,
  jobs: runner,
  allowPrivateUpstreams: config.MCPGW_ALLOW_PRIVATE_UPSTREAMS,
  stdio: {
    allowedCommands: config.MCPGW_STDIO_ALLOWED_COMMANDS.split(",")
      .map((c) => c.trim())
      .filter(Boolean),
    user: config.MCPGW_STDIO_USER,
    allowSharedIdentity: config.MCPGW_STDIO_ALLOW_SHARED_IDENTITY,
    sandbox: config.MCPGW_STDIO_SANDBOX,
  },
  publicUrl: config.MCPGW_PUBLIC_URL ?? `http://${config.MCPGW_HOST}:${config.DP_PORT}`,
  allowedHosts: config.MCPGW_ALLOWED_HOSTS.split(",")
    .map((h) => h.trim())
    .filter(Boolean),
  allowedOrigins: config.MCPGW_ALLOWED_ORIGINS.split(",")
    .map((o) => o.trim())
    .filter(Boolean),
  loopbackUrl: loopbackUrl(config.MCPGW_HOST, config.DP_PORT),
  bus: Promise.resolve(bus),
  busPrefix,
  snapshotPublicKey: keys.snapshot_public_key,
  dataDir,
  maxBodyBytes: config.MCPGW_MAX_BODY_BYTES,
  replicaId: "embedded",
  logger: logger.child({ service: "data-plane" }),
  metrics: createMetricsRegistry("data-plane"),
  metricsToken: config.MCPGW_METRICS_TOKEN,
});
const worker = await startWorker({
  db: database.db,
  bus,
  busPrefix,
  runner,
  logger: logger.child({ service: "worker" }),
  healthSweepMs: config.WORKER_HEALTH_SWEEP_MS,
  allowPrivateUpstreams: config.MCPGW_ALLOW_PRIVATE_UPSTREAMS,
  masterKey: keys.master_key,
});

const cpServer = serve({ fetch: cp.app.fetch, port: config.CP_PORT, hostname: config.MCPGW_HOST });
const dpServer = createServer(dp.listener);
dpServer.on("upgrade", dp.upgrade);
dpServer.listen(config.DP_PORT, config.MCPGW_HOST);
logger.info(
  {
    control_plane: `http://${config.MCPGW_HOST}:${config.CP_PORT}`,
    data_plane: `http://${config.MCPGW_HOST}:${config.DP_PORT}`,
    data_dir: dataDir,
  },
  "MCP Gateway (embedded) ready",
);
if (cp.bootstrapped) {
  const password = cp.bootstrapped.password
    ? `password ${cp.bootstrapped.password}`
    : "the password from MCPGW_ADMIN_PASSWORD";
  // Printed once, on the first start only; the password is stored only as an argon2id hash.
  console.log(
    `\n  First start: created admin ${cp.bootstrapped.email} with ${password}\n  (shown once; keep it)\n`,
  );
}

let stopping = false;
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, "shutting down");
  dpServer.close();
  cpServer.close();
  await worker.stop();
  await dp.stop();
  await cp.stop();
  await database.close();
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
