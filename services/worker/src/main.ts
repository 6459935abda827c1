import { NatsBus } from "@mcpgw/bus";
import { openDatabase } from "@mcpgw/db";
import { BullMqJobRunner } from "@mcpgw/queue";
import { createLogger } from "@mcpgw/telemetry";
import { loadWorkerConfig } from "./config.ts";
import { startWorker } from "./runtime.ts";

const logger = createLogger("worker");
let config: ReturnType<typeof loadWorkerConfig>;
try {
  config = loadWorkerConfig();
} catch (err) {
  logger.fatal((err as Error).message);
  process.exit(1);
}

const database = await openDatabase(config.DATABASE_URL, { max: 4 });
const bus = await NatsBus.connect(config.NATS_URL, { name: "mcpgw-worker" });
const runner = new BullMqJobRunner({
  redisUrl: config.REDIS_URL,
  prefix: config.MCPGW_QUEUE_PREFIX,
  concurrency: config.WORKER_CONCURRENCY,
});
const worker = await startWorker({
  db: database.db,
  bus,
  busPrefix: config.MCPGW_BUS_PREFIX,
  runner,
  logger,
  healthSweepMs: config.WORKER_HEALTH_SWEEP_MS,
  allowPrivateUpstreams: config.MCPGW_ALLOW_PRIVATE_UPSTREAMS,
  masterKey: config.MCPGW_MASTER_KEY || undefined,
  previousMasterKeys: config.MCPGW_MASTER_KEY_PREVIOUS?.split(",").filter(Boolean),
});
logger.info("worker started");

let stopping = false;
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, "worker shutting down: finishing running jobs");
  const deadline = setTimeout(() => process.exit(1), 30_000);
  deadline.unref();
  await worker.stop();
  await bus.close();
  await database.close();
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
