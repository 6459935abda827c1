import { createServer } from "node:http";
import { NatsBus } from "@mcpgw/bus";
import { BullMqJobRunner } from "@mcpgw/queue";
import { createLogger, createMetricsRegistry, startTracing } from "@mcpgw/telemetry";
import { list, loadDataPlaneConfig, loopbackUrl } from "./config.ts";
import { startDataPlane } from "./runtime.ts";

const logger = createLogger("data-plane");
let config: ReturnType<typeof loadDataPlaneConfig>;
try {
  config = loadDataPlaneConfig();
} catch (err) {
  logger.fatal((err as Error).message);
  process.exit(1);
}

const stopTracing = await startTracing("mcpgw-data-plane", config.OTEL_EXPORTER_OTLP_ENDPOINT);
// Not awaited: a data plane must start and serve from its disk cache while NATS is down.
const bus = NatsBus.connect(config.NATS_URL, { name: `mcpgw-data-plane-${config.MCPGW_REPLICA_ID}` });
// Producer only: API-key usage goes to the worker's queue; the data plane runs no jobs.
const jobs = config.REDIS_URL
  ? new BullMqJobRunner({ redisUrl: config.REDIS_URL, prefix: config.MCPGW_QUEUE_PREFIX })
  : undefined;
const dp = await startDataPlane({
  masterKey: config.MCPGW_MASTER_KEY || undefined,
  previousMasterKeys: config.MCPGW_MASTER_KEY_PREVIOUS?.split(",").filter(Boolean),
  jobs,
  redisUrl: config.REDIS_URL || undefined,
  redisPrefix: config.MCPGW_QUEUE_PREFIX,
  rateLimitReplicas: config.MCPGW_RATE_LIMIT_REPLICAS,
  trustedProxies: config.MCPGW_TRUSTED_PROXIES,
  allowPrivateUpstreams: config.MCPGW_ALLOW_PRIVATE_UPSTREAMS,
  stdio: {
    allowedCommands: config.MCPGW_STDIO_ALLOWED_COMMANDS.split(",")
      .map((s) => s.trim())
      .filter(Boolean),
    maxProcesses: config.MCPGW_STDIO_MAX_PROCESSES,
    maxPerOrg: config.MCPGW_STDIO_MAX_PER_ORG,
    maxPerPrincipal: config.MCPGW_STDIO_MAX_PER_PRINCIPAL,
    poolSize: config.MCPGW_STDIO_POOL_SIZE,
    idleTimeoutMs: config.MCPGW_STDIO_IDLE_TIMEOUT_MS,
    unusedTimeoutMs: config.MCPGW_STDIO_UNUSED_TIMEOUT_MS,
    user: config.MCPGW_STDIO_USER,
    allowSharedIdentity: config.MCPGW_STDIO_ALLOW_SHARED_IDENTITY,
    sandbox: config.MCPGW_STDIO_SANDBOX,
  },
  sessionIdleTimeoutMs: config.MCPGW_SESSION_IDLE_TIMEOUT_MS,
  aggregateMemberTimeoutMs: config.MCPGW_AGGREGATE_MEMBER_TIMEOUT_MS,
  publicUrl: config.MCPGW_PUBLIC_URL ?? `http://localhost:${config.DP_PORT}`,
  allowedHosts: list(config.MCPGW_ALLOWED_HOSTS),
  metricsToken: config.MCPGW_METRICS_TOKEN,
  metricsTenantLabels: config.MCPGW_METRICS_TENANT_LABELS,
  allowedOrigins: list(config.MCPGW_ALLOWED_ORIGINS),
  loopbackUrl: loopbackUrl(config.DP_HOST, config.DP_PORT),
  bus,
  busPrefix: config.MCPGW_BUS_PREFIX,
  snapshotPublicKey: config.MCPGW_SNAPSHOT_PUBLIC_KEY,
  dataDir: config.MCPGW_DATA_DIR,
  maxBodyBytes: config.MCPGW_MAX_BODY_BYTES,
  replicaId: config.MCPGW_REPLICA_ID,
  logger,
  metrics: createMetricsRegistry("data-plane"),
});

const server = createServer(dp.listener);
server.on("upgrade", dp.upgrade);
server.listen(config.DP_PORT, config.DP_HOST, () =>
  logger.info({ port: config.DP_PORT, replica: config.MCPGW_REPLICA_ID }, "data plane listening"),
);

let stopping = false;
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, "data plane shutting down");
  // Stop accepting, let in-flight requests finish (bounded), then close upstream pools.
  server.close();
  const deadline = setTimeout(() => process.exit(0), 10_000);
  deadline.unref();
  await dp.stop();
  await jobs?.stop();
  await (
    await Promise.race([bus, new Promise<undefined>((r) => setTimeout(() => r(undefined), 100))])
  )?.close();
  await stopTracing();
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
