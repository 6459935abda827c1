import { serve } from "@hono/node-server";
import { NatsBus } from "@mcpgw/bus";
import { openDatabase } from "@mcpgw/db";
import { createLogger, createMetricsRegistry, startTracing } from "@mcpgw/telemetry";
import { loadControlPlaneConfig } from "./config.ts";
import { startControlPlane } from "./runtime.ts";

const logger = createLogger("control-plane");
let config: ReturnType<typeof loadControlPlaneConfig>;
try {
  config = loadControlPlaneConfig();
} catch (err) {
  logger.fatal((err as Error).message);
  process.exit(1);
}

const stopTracing = await startTracing("mcpgw-control-plane", config.OTEL_EXPORTER_OTLP_ENDPOINT);
const database = await openDatabase(config.DATABASE_URL);
// Not awaited: the control plane listens (not ready) while NATS is down and publishes once it is up.
const bus = NatsBus.connect(config.NATS_URL, { name: "mcpgw-control-plane" });
const cp = await startControlPlane({
  database,
  bus,
  busPrefix: config.MCPGW_BUS_PREFIX,
  logger,
  metrics: createMetricsRegistry("control-plane"),
  metricsToken: config.MCPGW_METRICS_TOKEN,
  masterKey: config.MCPGW_MASTER_KEY,
  previousMasterKeys: config.MCPGW_MASTER_KEY_PREVIOUS?.split(",").filter(Boolean),
  snapshotSigningKey: config.MCPGW_SNAPSHOT_SIGNING_KEY,
  jwtIssuer: config.MCPGW_JWT_ISSUER,
  jwtAudience: config.MCPGW_JWT_AUDIENCE,
  accessTokenTtlS: config.MCPGW_ACCESS_TOKEN_TTL_S,
  allowPrivateUpstreams: config.MCPGW_ALLOW_PRIVATE_UPSTREAMS ?? false,
  publishSweepMs: config.MCPGW_PUBLISH_SWEEP_MS,
  admin: { email: config.MCPGW_ADMIN_EMAIL, password: config.MCPGW_ADMIN_PASSWORD },
});
if (cp.bootstrapped?.password) {
  // Printed once, on the first start only; it is not stored anywhere in clear.
  console.log(`\n  Created admin ${cp.bootstrapped.email} with password ${cp.bootstrapped.password}\n`);
}

const server = serve({ fetch: cp.app.fetch, port: config.CP_PORT, hostname: config.CP_HOST }, (info) =>
  logger.info({ port: info.port }, "control plane listening"),
);

let stopping = false;
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, "control plane shutting down");
  server.close();
  await cp.stop();
  await (
    await Promise.race([bus, new Promise<undefined>((r) => setTimeout(() => r(undefined), 100))])
  )?.close();
  await database.close();
  await stopTracing();
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
