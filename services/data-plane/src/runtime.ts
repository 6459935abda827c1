import { join } from "node:path";
import { type Bus, bucketNames } from "@mcpgw/bus";
import { importSnapshotKey } from "@mcpgw/snapshot";
import type { Logger, Registry } from "@mcpgw/telemetry";
import { createDataPlaneApp } from "./app.ts";
import { TokenVerifier } from "./auth/token-verifier.ts";
import { SnapshotStore } from "./snapshot/store.ts";
import { UpstreamPools } from "./upstream/pools.ts";

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
}

/**
 * Wires a data plane: disk cache first, then the config bucket watch in the background.
 * Shared by the standalone process and the embedded mode.
 */
export async function startDataPlane(o: DataPlaneRuntimeOptions) {
  const store = new SnapshotStore(
    await importSnapshotKey(o.snapshotPublicKey),
    join(o.dataDir, "snapshots"),
    o.logger,
  );
  await store.loadCache();
  const pools = new UpstreamPools();
  store.onChange((state) => {
    const origins = new Set<string>();
    for (const { server } of state.servers.values())
      for (const e of server.endpoints) origins.add(new URL(e.url).origin);
    pools.retain(origins);
  });
  const verifier = new TokenVerifier(store);
  const app = createDataPlaneApp({
    store,
    verifier,
    pools,
    logger: o.logger,
    metrics: o.metrics,
    maxBodyBytes: o.maxBodyBytes,
    replicaId: o.replicaId,
  });

  let stopWatch: (() => Promise<void>) | undefined;
  let stopped = false;
  const watching = o.bus
    .then(async (bus) => {
      const bucket = await bus.bucket(bucketNames(o.busPrefix).config);
      if (stopped) return;
      stopWatch = await bucket.watch((entry) => {
        if (entry.value === null) store.remove(entry.key);
        else void store.apply(entry.key, entry.value);
      });
      o.logger.info("watching config snapshots");
    })
    .catch((err) => o.logger.error({ err }, "config watch failed"));

  return {
    app,
    store,
    watching,
    async stop() {
      stopped = true;
      await stopWatch?.();
      await store.flush();
      await pools.close();
    },
  };
}
