import { createHash, randomBytes } from "node:crypto";
import { join } from "node:path";
import { type Bus, bucketNames, operatorBusKey, SignedBus } from "@mcpgw/bus";
import type { JobProducer } from "@mcpgw/queue";
import { Keyring } from "@mcpgw/secrets";
import { importSnapshotKey, stdioSecretsContext } from "@mcpgw/snapshot";
import type { Logger, Registry } from "@mcpgw/telemetry";
import { UpstreamCredentials } from "@mcpgw/upstream-credentials";
import { Redis } from "ioredis";
import { createDataPlaneApp, createRequestListener, createUpgradeListener } from "./app.ts";
import { Authenticator } from "./auth/authenticator.ts";
import { trustedProxies } from "./rate-limit/client-ip.ts";
import { RateLimits } from "./rate-limit/rate-limits.ts";
import { ReplicaDirectory } from "./replicas.ts";
import { originGuard } from "./request-origin.ts";
import { answerOperatorRequest, mountOperatorRoutes } from "./routes/operators.ts";
import { SessionQuota } from "./session-quota.ts";
import { SnapshotStore } from "./snapshot/store.ts";
import { JsonRpcGateway } from "./transports/json-rpc.ts";
import { MessageSessions } from "./transports/message-sessions.ts";
import { UpstreamPools } from "./upstream/pools.ts";
import { UpstreamRevisions } from "./upstream/stateless-upstream.ts";
import { type StdioOptions, StdioProcessManager, stdioIsolation } from "./upstream/stdio-processes.ts";
import { UsageReporter } from "./usage-reporter.ts";

/**
 * The rate limiter's Redis connection: commands fail fast while Redis is down (no offline
 * queue, short timeout) so the in-memory insurance answers instead of requests waiting.
 */
function connectRateLimitRedis(url: string, logger: Logger): Redis {
  const redis = new Redis(url, {
    enableOfflineQueue: false,
    // Not auto-pipelining: with scripts and MULTI on the same connection it crashed the process
    // inside ioredis ("results[i] is not iterable"). Concurrent checks still share the connection.
    commandTimeout: 200,
    maxRetriesPerRequest: 0,
    retryStrategy: () => 500,
  });
  let down = false;
  redis.on("error", (err) => {
    if (!down)
      logger.warn(
        { err: err.message },
        "rate-limit Redis unreachable; enforcing per-replica insurance limits",
      );
    down = true;
  });
  redis.on("ready", () => {
    if (down) logger.info("rate-limit Redis back; shared limits resume");
    down = false;
  });
  return redis;
}

export interface DataPlaneRuntimeOptions {
  /** Resolves once the bus is reachable; the data plane serves from its disk cache until then. */
  bus: Promise<Bus>;
  busPrefix: string;
  snapshotPublicKey: string;
  dataDir: string;
  maxBodyBytes: number;
  replicaId: string;
  logger: Logger;
  metrics: Registry;
  /** Opens sealed upstream credentials; without it, servers with credentials answer 502. */
  masterKey?: string | undefined;
  previousMasterKeys?: string[] | undefined;
  /** Where API-key usage goes (the worker's queue); none: usage is not recorded. */
  jobs?: JobProducer | undefined;
  publicUrl: string;
  /** Shared rate-limit counters; without it (embedded mode) counters live in this process. */
  redisUrl?: string | undefined;
  /** Key prefix for the shared counters. */
  redisPrefix?: string | undefined;
  /** Replicas sharing the limits; while Redis is unreachable each enforces 1/n of a limit. */
  rateLimitReplicas?: number | undefined;
  /** `MCPGW_TRUSTED_PROXIES`: CIDR ranges whose forwarding headers name the client. */
  trustedProxies?: string | undefined;
  stdio?: {
    /** Executables registered stdio servers may run here; none by default. */
    allowedCommands?: string[] | undefined;
    maxProcesses?: number | undefined;
    maxPerOrg?: number | undefined;
    maxPerPrincipal?: number | undefined;
    poolSize?: number | undefined;
    idleTimeoutMs?: number | undefined;
    unusedTimeoutMs?: number | undefined;
    /** Children of a root data plane run as this user (default `mcpgw-stdio`). */
    user?: string | undefined;
    /** Not root: run every org's stdio servers although children share this identity. */
    allowSharedIdentity?: boolean | undefined;
    sandbox?: "none" | "bwrap" | undefined;
  };
  /** Message-level sessions idle this long are closed. */
  sessionIdleTimeoutMs?: number | undefined;
  /** Upstreams on private addresses may be reached (checked again at each connection otherwise). */
  allowPrivateUpstreams?: boolean | undefined;
  /**
   * Where this process's own listener answers on this host (requests other replicas forward here
   * are replayed there; see `loopbackUrl` in config.ts). Never a load balancer's address.
   */
  loopbackUrl: string;
  /** Host names clients reach this gateway by besides loopback and `publicUrl` (`*`: any). */
  allowedHosts?: string[] | undefined;
  /** Browser origins allowed besides the gateway's own names (`*`: any). */
  allowedOrigins?: string[] | undefined;
  /** `/metrics` needs this bearer token when set (`MCPGW_METRICS_TOKEN`). */
  metricsToken?: string | undefined;
  /** Label metrics with server ids (`MCPGW_METRICS_TENANT_LABELS`). */
  metricsTenantLabels?: boolean | undefined;
  /** Answer budget per member server when a namespace endpoint fans out. */
  aggregateMemberTimeoutMs?: number | undefined;
}

/**
 * Wires a data plane: disk cache first, then the config bucket watch in the background.
 * Shared by the standalone process and the embedded mode.
 */
export { loopbackUrl } from "./config.ts";

export async function startDataPlane(o: DataPlaneRuntimeOptions) {
  const store = new SnapshotStore(
    await importSnapshotKey(o.snapshotPublicKey),
    join(o.dataDir, "snapshots"),
    o.logger,
  );
  await store.loadCache();
  const { pools, sessionPools } = upstreamPools(o, store);
  const redis = o.redisUrl ? connectRateLimitRedis(o.redisUrl, o.logger) : undefined;
  const rateLimits = rateLimitsFor(o, store, redis);
  const usage = new UsageReporter(o.jobs, o.logger, o.replicaId);
  const allowPrivate = { allowPrivateUpstreams: o.allowPrivateUpstreams ?? false };
  const authenticator = new Authenticator(store, usage.keyUsed, allowPrivate);
  const keyring = o.masterKey ? new Keyring(o.masterKey, o.previousMasterKeys ?? []) : undefined;
  const credentials = new UpstreamCredentials(keyring, allowPrivate);
  const stdio = stdioManager(o, keyring, usage.stdio);
  // Each snapshot's stdio servers: reported refused or runnable here (the worker sets their status).
  store.onChange((state) => stdio.review(state.servers.values()));
  stdio.review(store.current.servers.values());
  const connectDeps = {
    stdio,
    credentials,
    revisions: new UpstreamRevisions(),
    pools: sessionPools,
    logger: o.logger,
  };
  const sessionIdle = o.sessionIdleTimeoutMs ?? 15 * 60_000;
  const replicas = new ReplicaDirectory({
    replicaId: o.replicaId,
    loopbackUrl: o.loopbackUrl,
    busPrefix: o.busPrefix,
    maxBodyBytes: o.maxBodyBytes,
    logger: o.logger,
    metrics: o.metrics,
  });
  const sessions = new MessageSessions({
    replicas,
    report: usage.session,
    replicaId: o.replicaId,
    logger: o.logger,
    idleTimeoutMs: sessionIdle,
    maxMessageBytes: o.maxBodyBytes,
    metrics: o.metrics,
  });
  // Configuration reaches sessions already open: each is held to every snapshot that lands
  // (after the token verifier, registered earlier, has taken in its revocations).
  store.onChange(() => {
    void sessions.recheck().catch((err) => o.logger.warn({ err }, "could not recheck sessions"));
  });
  const rpc = new JsonRpcGateway({
    replicaId: o.replicaId,
    logger: o.logger,
    idleTimeoutMs: sessionIdle,
    maxBodyBytes: o.maxBodyBytes,
    replicas,
  });
  const dataPlane = createDataPlaneApp({
    metricsToken: o.metricsToken,
    tenantLabels: o.metricsTenantLabels,
    connect: connectDeps,
    report: usage.session,
    // Every replica derives the same key, so any of them can check any session id.
    sessionKey: o.masterKey
      ? createHash("sha256").update(`mcpgw session binding\n${o.masterKey}`).digest()
      : undefined,
    quota: new SessionQuota(redis, `${o.redisPrefix ?? "mcpgw"}`, sessionIdle, o.logger),
    aggregateMemberTimeoutMs: o.aggregateMemberTimeoutMs ?? 5_000,
    sessions,
    rpc,
    store,
    authenticator,
    credentials,
    pools,
    logger: o.logger,
    metrics: o.metrics,
    maxBodyBytes: o.maxBodyBytes,
    replicaId: o.replicaId,
    publicUrl: o.publicUrl.replace(/\/$/, ""),
    rateLimits,
    trustedProxies: trustedProxies(o.trustedProxies),
  });

  // DNS-rebinding protection for every route but probes (Host and Origin checked first).
  const guard = originGuard({
    publicUrls: [o.publicUrl],
    allowedHosts: o.allowedHosts ?? [],
    allowedOrigins: o.allowedOrigins ?? [],
  });

  // Operator endpoints: every replica answers for itself over the bus.
  const answer = answerOperatorRequest({
    replicaId: o.replicaId,
    startedAt: Date.now(),
    store,
    sessions,
    stdio,
    logger: o.logger,
    inspectNamespace: dataPlane.inspectNamespace,
  });
  const bus = joinBus(o, store, replicas, answer);
  mountOperatorRoutes(dataPlane.app, {
    replicaId: o.replicaId,
    startedAt: Date.now(),
    store,
    sessions,
    stdio,
    authenticator,
    logger: o.logger,
    gather: bus.gather,
  });

  return {
    app: dataPlane.app,
    /** The node request listener to serve (`http.createServer(listener)`). */
    listener: createRequestListener(dataPlane, guard),
    /** The node `upgrade` listener (WebSocket transport). */
    upgrade: createUpgradeListener(dataPlane, guard),
    stdio,
    sessions,
    store,
    watching: bus.watching,
    async stop() {
      await bus.stop();
      await replicas.stop();
      await usage.stop();
      await sessions.shutdown();
      await rpc.shutdown();
      await stdio.shutdown();
      redis?.disconnect();
      await store.flush();
      await pools.close();
      await sessionPools.close();
    },
  };
}

/**
 * Connection pools to upstreams, trimmed to the origins the current snapshot names. The byte
 * relay's are capped per origin; message-level sessions each hold a long-lived stream upstream,
 * so theirs are not.
 */
function upstreamPools(o: DataPlaneRuntimeOptions, store: SnapshotStore) {
  const pools = new UpstreamPools(128, o.allowPrivateUpstreams ?? false);
  const sessionPools = new UpstreamPools(null, o.allowPrivateUpstreams ?? false);
  store.onChange((state) => {
    const origins = new Set<string>();
    for (const { server } of state.servers.values())
      for (const e of server.endpoints) origins.add(new URL(e.url).origin);
    pools.retain(origins);
    sessionPools.retain(origins);
  });
  return { pools, sessionPools };
}

/** The rate limiters, forgetting rules the current snapshot no longer has. */
function rateLimitsFor(
  o: DataPlaneRuntimeOptions,
  store: SnapshotStore,
  redis: ReturnType<typeof connectRateLimitRedis> | undefined,
) {
  const rateLimits = new RateLimits({
    redis,
    prefix: o.redisPrefix ?? "mcpgw",
    replicas: Math.max(1, o.rateLimitReplicas ?? 1),
    logger: o.logger,
    metrics: o.metrics,
  });
  store.onChange((state) => {
    const ids = new Set<string>();
    for (const org of state.orgs.values()) for (const r of org.rate_limits) ids.add(r.id);
    rateLimits.retain(ids);
  });
  return rateLimits;
}

/** The stdio process manager with its limits, isolation and sealed secrets. */
function stdioManager(
  o: DataPlaneRuntimeOptions,
  keyring: Keyring | undefined,
  onReport: StdioOptions["onReport"],
) {
  const maxProcesses = o.stdio?.maxProcesses ?? 32;
  return new StdioProcessManager({
    allowedCommands: new Set(o.stdio?.allowedCommands ?? []),
    maxProcesses,
    maxPerOrg: o.stdio?.maxPerOrg ?? Math.max(1, Math.ceil(maxProcesses / 2)),
    maxPerPrincipal: o.stdio?.maxPerPrincipal ?? Math.max(1, Math.ceil(maxProcesses / 4)),
    poolSize: o.stdio?.poolSize ?? 1,
    idleTimeoutMs: o.stdio?.idleTimeoutMs ?? 5 * 60_000,
    unusedTimeoutMs: o.stdio?.unusedTimeoutMs,
    isolation: stdioIsolation({
      user: o.stdio?.user ?? "mcpgw-stdio",
      acceptShared: o.stdio?.allowSharedIdentity ?? false,
      sandbox: o.stdio?.sandbox ?? "none",
      logger: o.logger,
    }),
    tenantLabels: o.metricsTenantLabels,
    openSecrets: keyring
      ? (server) =>
          JSON.parse(keyring.open(server.stdio?.secrets_sealed ?? "", stdioSecretsContext(server.id)))
      : undefined,
    onReport,
    logger: o.logger,
    metrics: o.metrics,
  });
}

/**
 * This replica on the bus, in the background: it answers operator requests (signed: HMAC with
 * a key derived from the master key, so a NATS client without it can neither ask this replica
 * anything nor answer for another one), announces itself to the other replicas, and watches the
 * config bucket. Until the bus is up, operator requests are answered by this replica alone.
 */
function joinBus(
  o: DataPlaneRuntimeOptions,
  store: SnapshotStore,
  replicas: ReplicaDirectory,
  answer: (request: unknown) => Promise<unknown>,
) {
  const opsSubject = `${o.busPrefix}.dataplane.ops`;
  let connectedBus: Bus | undefined;
  const stops: Array<() => Promise<void>> = [];
  let stopped = false;
  if (!o.masterKey)
    o.logger.warn(
      "no MCPGW_MASTER_KEY: operator requests from other replicas and the control plane are refused",
    );
  const opsKey = o.masterKey ? operatorBusKey(o.masterKey) : randomBytes(32);
  const watching = o.bus
    .then(async (plain) => {
      const bus = new SignedBus(plain, opsKey, (reason) =>
        o.logger.warn({ reason }, "refused an operator message not signed by this deployment"),
      );
      stops.push(await bus.serve(opsSubject, answer));
      // Questions one replica answers for all (namespace inspection for the control plane).
      stops.push(await bus.serve(`${o.busPrefix}.dataplane.inspect`, answer, { queue: "inspect" }));
      await replicas.attach(bus, await bus.bucket(`${o.busPrefix}_replicas`));
      connectedBus = bus;
      const bucket = await bus.bucket(bucketNames(o.busPrefix).config);
      if (stopped) return;
      const stopWatch = await bucket.watch((entry) => {
        if (entry.value === null) store.remove(entry.key);
        else void store.apply(entry.key, entry.value);
      });
      stops.unshift(stopWatch);
      o.logger.info("watching config snapshots");
    })
    .catch((err) => o.logger.error({ err }, "config watch failed"));
  return {
    watching,
    /** Every live replica answers; waiting longer only helps replicas not yet announced. */
    gather: async (request: unknown): Promise<unknown[]> =>
      connectedBus
        ? connectedBus.gather(opsSubject, request, 500, replicas.liveCount())
        : [await answer(request)],
    async stop() {
      stopped = true;
      for (const stop of stops) await stop();
    },
  };
}
