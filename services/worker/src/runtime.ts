import { type Bus, bucketNames } from "@mcpgw/bus";
import type { Db } from "@mcpgw/db";
import { type JobRunner, jobs } from "@mcpgw/queue";
import { Keyring } from "@mcpgw/secrets";
import type { Logger } from "@mcpgw/telemetry";
import { UpstreamCredentials } from "@mcpgw/upstream-credentials";
import { apiKeyUsageProcessor } from "./processors/api-key-usage.ts";
import { healthCheckProcessor } from "./processors/health-check.ts";
import { healthSweepProcessor } from "./processors/health-sweep.ts";
import { sessionEventsProcessor } from "./processors/session-events.ts";
import { stdioReportsProcessor } from "./processors/stdio-reports.ts";

export interface WorkerRuntimeOptions {
  db: Db;
  bus: Bus;
  busPrefix: string;
  runner: JobRunner;
  logger: Logger;
  /** How often the sweep reconciles per-server health-check schedules. */
  healthSweepMs: number;
  /** Opens sealed upstream credentials for health checks (optional). */
  masterKey?: string | undefined;
  previousMasterKeys?: string[] | undefined;
  /** `MCPGW_ALLOW_PRIVATE_UPSTREAMS` for health probes and token endpoints (unchecked unless `false`). */
  allowPrivateUpstreams?: boolean | undefined;
}

/** Registers every processor and the sweep schedule, then starts the runner. */
export async function startWorker(o: WorkerRuntimeOptions) {
  const health = await o.bus.bucket(bucketNames(o.busPrefix).health);
  const allowPrivateUpstreams = o.allowPrivateUpstreams ?? false;
  const credentials = new UpstreamCredentials(
    o.masterKey ? new Keyring(o.masterKey, o.previousMasterKeys ?? []) : undefined,
    { allowPrivateUpstreams },
  );
  o.runner.register(
    jobs.healthCheck,
    healthCheckProcessor({ db: o.db, health, logger: o.logger, credentials, allowPrivateUpstreams }),
  );
  o.runner.register(jobs.healthSweep, healthSweepProcessor({ db: o.db, runner: o.runner }));
  o.runner.register(jobs.apiKeyUsage, apiKeyUsageProcessor({ db: o.db }));
  o.runner.register(jobs.sessionEvents, sessionEventsProcessor({ db: o.db }));
  o.runner.register(jobs.stdioReports, stdioReportsProcessor({ db: o.db }));
  await o.runner.start();
  await o.runner.schedule("health-sweep", o.healthSweepMs, jobs.healthSweep, {});
  await o.runner.enqueue(jobs.healthSweep, {});
  return { stop: () => o.runner.stop() };
}
