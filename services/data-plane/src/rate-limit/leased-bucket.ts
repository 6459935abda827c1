import type { Logger } from "@mcpgw/telemetry";
import type { Redis } from "ioredis";
import type { Answer, Bucket } from "./buckets.ts";

/**
 * Takes points of a fixed-window counter atomically. KEYS[1]: the counter; ARGV: cost, want
 * (≥ cost), limit, window ms, block ms. With at least `cost` points left it takes `want` of them,
 * or all that is left; otherwise it counts `cost` anyway (a refused request counts, as with
 * rate-limiter-flexible) and, the first time the counter goes over, holds the key for the block
 * duration. The window starts with the first point taken (rate-limiter-flexible's fixed window).
 * Returns {counter after, points taken, ms until the window or block ends}.
 *
 * rate-limiter-flexible's consume is all or nothing, and a refused consume of a batch would
 * count the whole batch against everyone: leasing needs "take up to n", which is this script.
 */
const LEASE_SCRIPT = `
local cost = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('set', KEYS[1], 0, 'PX', ARGV[4], 'NX')
local used = tonumber(redis.call('get', KEYS[1]))
local left = limit - used
local taken = cost
if left >= cost then taken = math.min(want, left) end
if taken > 0 then used = redis.call('incrby', KEYS[1], taken) end
local ttl = redis.call('pttl', KEYS[1])
local block = tonumber(ARGV[5])
if used > limit and block > 0 and used - taken <= limit then
  redis.call('pexpire', KEYS[1], block)
  ttl = block
elseif ttl < 0 then
  redis.call('pexpire', KEYS[1], ARGV[4])
  ttl = tonumber(ARGV[4])
end
return {used, taken, ttl}
`;

type LeaseReply = [used: number, taken: number, ttlMs: number];

interface LeaseCommand {
  mcpgwRateLease(
    key: string,
    cost: number,
    want: number,
    limit: number,
    windowMs: number,
    blockMs: number,
  ): Promise<LeaseReply>;
}

/** The Redis that leased buckets count in, and the generation their leases belong to. */
export class LeaseStore {
  /**
   * Bumped whenever the connection closes or a command fails: leases of an older generation are
   * void, so points leased before an outage are never spent against a Redis that came back empty.
   */
  generation = 0;

  constructor(private readonly redis: Redis) {
    redis.defineCommand("mcpgwRateLease", { numberOfKeys: 1, lua: LEASE_SCRIPT });
    redis.on("close", () => this.failed());
  }

  /** Whether commands can be sent now (ioredis queues nothing while it reconnects). */
  get ready(): boolean {
    return this.redis.status === "ready";
  }

  failed(): void {
    this.generation++;
  }

  take(key: string, cost: number, want: number, limit: number, windowMs: number, blockMs: number) {
    return (this.redis as unknown as LeaseCommand).mcpgwRateLease(key, cost, want, limit, windowMs, blockMs);
  }
}

/** At most this many points of a key are leased to one replica at once, whatever the limit. */
export const LEASE_MAX_POINTS = 128;
/** A lease is at most 1/(LEASE_SHARE × replicas) of the limit: all replicas' leases ≤ 5 % of it. */
export const LEASE_SHARE = 20;
/** A lease spent within this doubles the next one; one that lasted longer than SLOW_MS halves it. */
const FAST_MS = 250;
const SLOW_MS = 1000;
/** Keys whose window ended are forgotten once this many are held; never more than MAX_KEYS. */
const SWEEP_MIN = 10_000;
const MAX_KEYS = 100_000;

/**
 * The largest lease of a limit shared by `replicas`: 0 when leases would be under 2 points, so
 * such limits (under 40 per replica) are counted in Redis call by call, exactly as before.
 */
export function leaseCap(limit: number, replicas: number): number {
  const cap = Math.min(LEASE_MAX_POINTS, Math.floor(limit / (LEASE_SHARE * replicas)));
  return cap < 2 ? 0 : cap;
}

/** One key's state on this replica. */
class Lease {
  /** Leased and not yet spent. */
  points = 0;
  /** Local time by which the Redis window of the lease has ended at the latest. */
  until = 0;
  generation = -1;
  /** The counter in Redis at the last answer (every replica's leases included). */
  used = 0;
  /** Points to ask for next time. */
  size = 1;
  lastRefill = 0;
  /** Refused by Redis: refused in memory until then, without asking again. */
  blockedUntil = 0;
  /** The lease request in flight: resolves to the points it took, or -1 when Redis failed. */
  refill: Promise<number> | undefined = undefined;
}

export interface LeasedBucketOptions {
  store: LeaseStore;
  /** Counter keys are `<keyPrefix>:<key>`. */
  keyPrefix: string;
  limit: number;
  windowMs: number;
  blockMs: number;
  replicas: number;
  /** Answers while Redis fails: this replica's share of the limit, in memory. */
  insurance: Bucket;
  onInsured: () => void;
  onStoreCall: (kind: "lease" | "call") => void;
  logger: Logger;
}

/**
 * A fixed-window limit counted in Redis and shared by every replica, spent locally from leases:
 * a replica takes a batch of points from the counter in one round trip, admits requests from it
 * synchronously, and asks for the next batch while half of this one is still left, so a request
 * rarely waits for Redis. Leases grow (doubling, up to `leaseCap`) while they are spent quickly
 * and shrink when the remaining budget is small. Accuracy, per key and window, with R replicas
 * and a cap L:
 *
 * - never more than the limit admitted: points are counted in Redis before they are spent, and a
 *   lease ends (locally) no later than the Redis window it was taken from;
 * - at least limit − R·L admitted when demand exceeds the limit: points leased but unspent when
 *   the window ends are written off, not returned (L ≤ limit / (20·R), so at most 5 %);
 * - limits with L = 0 (under 40·R) are counted call by call: exact, as before.
 *
 * When Redis fails, requests are answered by `insurance` (this replica's share of the limit, in
 * memory) and leases taken before are void; keys Redis refused stay refused in memory.
 */
export class LeasedBucket implements Bucket {
  private readonly leases = new Map<string, Lease>();
  private readonly maxLease: number;
  private sweepAt = SWEEP_MIN;

  constructor(private readonly o: LeasedBucketOptions) {
    this.maxLease = leaseCap(o.limit, o.replicas);
  }

  take(key: string, cost: number): Answer | Promise<Answer> {
    const now = Date.now();
    let l = this.leases.get(key);
    if (l === undefined) {
      this.sweep(now);
      l = new Lease();
      this.leases.set(key, l);
    }
    if (l.blockedUntil > now) return { ok: false, remaining: 0, msBeforeNext: l.blockedUntil - now };
    if (!this.o.store.ready) return this.insure(key, cost);
    const spent = this.spend(l, cost, now);
    if (spent === undefined) return this.wait(key, l, cost);
    // Low-water mark: the next lease is on its way before this one runs out.
    if (l.refill === undefined && l.points <= l.size >> 1) this.refill(key, l, 0);
    return spent;
  }

  private spend(l: Lease, cost: number, now: number): Answer | undefined {
    if (l.points < cost || l.until <= now || l.generation !== this.o.store.generation) return undefined;
    l.points -= cost;
    return {
      ok: true,
      remaining: Math.max(0, this.o.limit - l.used) + l.points,
      msBeforeNext: l.until - now,
    };
  }

  /** The lease ran out: wait for the next one (one request in flight per key), else ask exactly. */
  private async wait(key: string, l: Lease, cost: number): Promise<Answer> {
    if (this.maxLease > 0) {
      for (let round = 0; round < 3; round++) {
        const pending = l.refill ?? this.refill(key, l, cost);
        if (pending === undefined) break;
        const taken = await pending;
        if (taken < 0) return this.insure(key, cost);
        const now = Date.now();
        if (l.blockedUntil > now) return { ok: false, remaining: 0, msBeforeNext: l.blockedUntil - now };
        if (!this.o.store.ready) return this.insure(key, cost);
        const spent = this.spend(l, cost, now);
        if (spent !== undefined) return spent;
        if (taken === 0) break;
      }
    }
    return this.exact(key, l, cost);
  }

  /** Asks Redis for the next lease, without awaiting it; undefined when there is nothing to ask. */
  private refill(key: string, l: Lease, cost: number): Promise<number> | undefined {
    const sent = Date.now();
    const since = sent - l.lastRefill;
    if (since < FAST_MS) l.size = Math.min(this.maxLease, l.size * 2);
    else if (since > SLOW_MS) l.size = Math.max(1, l.size >> 1);
    l.lastRefill = sent;
    const { store, limit } = this.o;
    const live = l.until > sent && l.generation === store.generation;
    const left = limit - (live ? l.used : 0);
    const held = live ? l.points : 0;
    // Tops the lease up to its size, so a replica never holds more than leaseCap unspent points
    // (a call costing more takes what it needs); near the end of the budget leases shrink.
    const topUp = Math.min(l.size - held, Math.floor(left / (2 * this.o.replicas)));
    const want = Math.max(cost - held, topUp);
    if (want < 1 || want > left) return undefined;
    const generation = store.generation;
    this.o.onStoreCall("lease");
    l.refill = store.take(this.counterKey(key), 0, want, limit, this.o.windowMs, this.o.blockMs).then(
      ([used, taken, ttl]) => {
        l.refill = undefined;
        if (generation !== store.generation) return 0;
        const now = Date.now();
        // A reply from a new window only arrives after the old lease ended (it was taken before).
        if (l.until <= now || l.generation !== generation) {
          l.points = 0;
          l.until = sent + ttl;
        } else l.until = Math.max(l.until, sent + ttl);
        l.points += taken;
        l.used = used;
        l.generation = generation;
        return taken;
      },
      (err: unknown) => {
        l.refill = undefined;
        store.failed();
        this.o.logger.debug({ err }, "rate-limit lease failed");
        return -1;
      },
    );
    return l.refill;
  }

  /** One request counted in Redis by itself: small limits, and the end of a budget. */
  private async exact(key: string, l: Lease, cost: number): Promise<Answer> {
    const { store, limit } = this.o;
    const sent = Date.now();
    const generation = store.generation;
    this.o.onStoreCall("call");
    let reply: LeaseReply;
    try {
      reply = await store.take(this.counterKey(key), cost, cost, limit, this.o.windowMs, this.o.blockMs);
    } catch {
      store.failed();
      return this.insure(key, cost);
    }
    const [used, , ttl] = reply;
    if (generation === store.generation) {
      if (l.until <= sent || l.generation !== generation) {
        l.points = 0;
        l.until = sent + ttl;
        l.generation = generation;
      }
      l.used = used;
    }
    if (used <= limit) return { ok: true, remaining: limit - used + l.points, msBeforeNext: ttl };
    // Over the limit: refused in memory for the rest of the window (or the block), as
    // rate-limiter-flexible's inMemoryBlockOnConsumed did, so a flood does not reach Redis; what
    // is left of the lease is written off with it.
    l.blockedUntil = sent + ttl;
    l.points = 0;
    return { ok: false, remaining: 0, msBeforeNext: ttl };
  }

  private insure(key: string, cost: number): Promise<Answer> {
    this.o.onInsured();
    return Promise.resolve(this.o.insurance.take(key, cost));
  }

  private counterKey(key: string): string {
    return `${this.o.keyPrefix}:${key}`;
  }

  /** Forgets keys whose window ended; past MAX_KEYS the oldest too (their leases are written off). */
  private sweep(now: number): void {
    if (this.leases.size < this.sweepAt) return;
    for (const [key, l] of this.leases)
      if (l.refill === undefined && l.until <= now && l.blockedUntil <= now) this.leases.delete(key);
    for (const key of this.leases.keys()) {
      if (this.leases.size < MAX_KEYS) break;
      this.leases.delete(key);
    }
    this.sweepAt = Math.max(SWEEP_MIN, this.leases.size * 2);
  }
}
