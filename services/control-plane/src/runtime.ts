import type { Bus, KvBucket } from "@mcpgw/bus";
import { bucketNames, operatorBusKey, SignedBus } from "@mcpgw/bus";
import type { DbHandle } from "@mcpgw/db";
import { Keyring } from "@mcpgw/secrets";
import { importSnapshotKey, importSnapshotPublicKeyOf } from "@mcpgw/snapshot";
import { Counter, type Logger, type Registry } from "@mcpgw/telemetry";
import { sql } from "drizzle-orm";
import { createControlPlaneApp } from "./app.ts";
import { LoginThrottle } from "./auth/login-throttle.ts";
import { TokenIssuer } from "./auth/token-issuer.ts";
import { type DataPlanes, dataPlanesOnBus } from "./data-planes.ts";
import { SnapshotPublisher } from "./publisher/publisher.ts";
import { bootstrapAdmin } from "./verbs/auth.ts";

export interface ControlPlaneRuntimeOptions {
  database: DbHandle;
  /** May still be connecting: the control plane serves meanwhile (not ready) and publishes once it is up. */
  bus: Bus | Promise<Bus>;
  busPrefix: string;
  logger: Logger;
  metrics: Registry;
  metricsToken?: string | undefined;
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
  // The bus may come later (NATS down at start): until then publishing fails fast and the
  // outbox sweep retries; /ready says not ready.
  let bucket: KvBucket | undefined;
  let dataPlanes: DataPlanes | undefined;
  const connecting = Promise.resolve(o.bus)
    .then(async (bus) => {
      bucket = await bus.bucket(bucketNames(o.busPrefix).config);
      // Questions to data planes are signed with a key only the gateway's own services derive.
      dataPlanes = dataPlanesOnBus({
        bus: new SignedBus(bus, operatorBusKey(o.masterKey), (reason) =>
          o.logger.warn({ reason }, "dropped a data-plane answer not signed by this deployment"),
        ),
        busPrefix: o.busPrefix,
        logger: o.logger,
      });
      o.logger.info("bus connected: publishing config snapshots");
    })
    .catch((err) => o.logger.error({ err }, "bus connection failed"));
  const notConnected = () => Promise.reject(new Error("the bus (NATS) is not connected yet"));
  const lazyBucket: KvBucket = {
    get: (key) => (bucket ? bucket.get(key) : notConnected()),
    put: (key, value) => (bucket ? bucket.put(key, value) : notConnected()),
    update: (key, value, revision) => (bucket ? bucket.update(key, value, revision) : notConnected()),
    delete: (key) => (bucket ? bucket.delete(key) : notConnected()),
    watch: (onEntry) => (bucket ? bucket.watch(onEntry) : notConnected()),
  };
  const publisher = new SnapshotPublisher({
    db,
    bucket: lazyBucket,
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
  const readiness = new Readiness(o.logger, [
    ["database", () => db.execute(sql`select 1`)],
    // A bucket obtained once stays usable across reconnects, so its presence says nothing about
    // now: a read round-trips to JetStream and fails (or times out) while NATS is unreachable.
    ["bus", () => (bucket ? bucket.get(READY_PROBE_KEY) : notConnected())],
  ]);
  const app = createControlPlaneApp({
    db,
    tokens,
    publisher,
    logger: o.logger,
    metrics: o.metrics,
    metricsToken: o.metricsToken,
    allowPrivateUpstreams: o.allowPrivateUpstreams,
    keyring,
    throttle: new LoginThrottle(),
    dataPlanes: {
      inspectNamespace: async (request) => dataPlanes?.inspectNamespace(request),
    },
    ready: () => readiness.check(),
  });
  return { app, publisher, tokens, bootstrapped, connecting, stop: () => publisher.stop() };
}

/** A key nobody writes: reading it is the cheapest JetStream round trip. */
const READY_PROBE_KEY = "ready-probe";
/** A dependency slower than this counts as down: probes (Kubernetes: 1 s by default) must get an answer. */
const READY_CHECK_MS = 800;

/**
 * Ready when every dependency answers now, each within `READY_CHECK_MS`; says in the log when
 * the set of unanswering dependencies changes, so a 503 is explained once, not on every probe.
 */
class Readiness {
  private down: string | null = null;

  constructor(
    private readonly logger: Logger,
    private readonly checks: Array<[name: string, check: () => Promise<unknown>]>,
  ) {}

  async check(): Promise<boolean> {
    const results = await Promise.all(
      this.checks.map(async ([name, check]) => {
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no answer within ${READY_CHECK_MS} ms`)),
            READY_CHECK_MS,
          );
        });
        try {
          await Promise.race([check(), late]);
          return null;
        } catch (err) {
          return { name, reason: (err as Error).message };
        } finally {
          clearTimeout(timer);
        }
      }),
    );
    const failed = results.filter((r) => r !== null);
    const down = failed.map((f) => f.name).join(",");
    const was = this.down ?? "";
    if (down !== was) {
      if (!down) this.logger.info("control plane ready again");
      else if (!was) this.logger.warn({ down: failed }, "control plane not ready");
      // A slow probe of another dependency while one is down changes the set, not the state.
      else this.logger.warn({ down: failed }, "control plane still not ready: what is down changed");
    }
    this.down = down;
    return down === "";
  }
}
