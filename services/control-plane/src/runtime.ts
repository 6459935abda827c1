import type { Bus } from "@mcpgw/bus";
import { bucketNames, operatorBusKey, SignedBus } from "@mcpgw/bus";
import type { DbHandle } from "@mcpgw/db";
import { Keyring } from "@mcpgw/secrets";
import { importSnapshotKey, importSnapshotPublicKeyOf } from "@mcpgw/snapshot";
import { Counter, type Logger, type Registry } from "@mcpgw/telemetry";
import { sql } from "drizzle-orm";
import { createControlPlaneApp } from "./app.ts";
import { LoginThrottle } from "./auth/login-throttle.ts";
import { TokenIssuer } from "./auth/token-issuer.ts";
import { dataPlanesOnBus } from "./data-planes.ts";
import { SnapshotPublisher } from "./publisher/publisher.ts";
import { bootstrapAdmin } from "./verbs/auth.ts";

export interface ControlPlaneRuntimeOptions {
  database: DbHandle;
  bus: Bus;
  busPrefix: string;
  logger: Logger;
  metrics: Registry;
  masterKey: string;
  previousMasterKeys?: string[];
  snapshotSigningKey: string;
  jwtIssuer: string;
  jwtAudience: string;
  accessTokenTtlS: number;
  allowPrivateUpstreams: boolean;
  publishSweepMs: number;
  admin?: { email?: string | undefined; password?: string | undefined };
}

/**
 * Wires a control plane onto already-open backends: migrations, first admin, signing keys,
 * publisher and app. Shared by the standalone process and the embedded mode.
 */
export async function startControlPlane(o: ControlPlaneRuntimeOptions) {
  const { db } = o.database;
  await o.database.migrate();
  const bootstrapped = await bootstrapAdmin({ db, email: o.admin?.email, password: o.admin?.password });
  const keyring = new Keyring(o.masterKey, o.previousMasterKeys ?? []);
  const tokens = new TokenIssuer(db, keyring, o.jwtIssuer, o.jwtAudience, o.accessTokenTtlS);
  await tokens.init();
  const bucket = await o.bus.bucket(bucketNames(o.busPrefix).config);
  const publisher = new SnapshotPublisher({
    db,
    bucket,
    signingKey: await importSnapshotKey(o.snapshotSigningKey),
    verifyKey: await importSnapshotPublicKeyOf(o.snapshotSigningKey),
    tokens,
    logger: o.logger,
    sweepMs: o.publishSweepMs,
    published: new Counter({
      name: "mcpgw_cp_snapshots_published_total",
      help: "Snapshot publish attempts",
      labelNames: ["kind", "outcome"] as const,
      registers: [o.metrics],
    }),
  });
  publisher.start();
  const app = createControlPlaneApp({
    db,
    tokens,
    publisher,
    logger: o.logger,
    metrics: o.metrics,
    allowPrivateUpstreams: o.allowPrivateUpstreams,
    keyring,
    throttle: new LoginThrottle(),
    // Questions to data planes are signed with a key only the gateway's own services derive.
    dataPlanes: dataPlanesOnBus({
      bus: new SignedBus(o.bus, operatorBusKey(o.masterKey), (reason) =>
        o.logger.warn({ reason }, "dropped a data-plane answer not signed by this deployment"),
      ),
      busPrefix: o.busPrefix,
      logger: o.logger,
    }),
    ready: async () => {
      await db.execute(sql`select 1`);
      return true;
    },
  });
  return { app, publisher, tokens, bootstrapped, stop: () => publisher.stop() };
}
