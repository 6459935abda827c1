import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { Redis } from "ioredis";

/** Deletes the KV buckets a test run created (`<prefix>_config`, `<prefix>_health`, …). */
export async function deleteNatsBuckets(natsUrl: string, prefix: string): Promise<void> {
  const nc = await connect({ servers: natsUrl, timeout: 2000 }).catch(() => undefined);
  if (!nc) return;
  try {
    const jsm = await jetstreamManager(nc);
    for await (const name of jsm.streams.names()) {
      if (name.startsWith(`KV_${prefix}_`)) await jsm.streams.delete(name).catch(() => {});
    }
  } finally {
    await nc.close();
  }
}

/** Deletes the Redis keys of a test run's prefix (BullMQ queues, rate-limit counters). */
export async function deleteRedisKeys(redisUrl: string, prefix: string): Promise<void> {
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 500);
      cursor = next;
      if (keys.length) await redis.del(...keys);
    } while (cursor !== "0");
  } catch {
    // Redis not reachable: nothing of ours to clean.
  } finally {
    redis.disconnect();
  }
}
