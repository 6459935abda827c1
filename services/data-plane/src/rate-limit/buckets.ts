import { type RateLimiterMemory, RateLimiterRes } from "rate-limiter-flexible";

/** One bucket's answer to taking points for a key. */
export interface Answer {
  ok: boolean;
  /** Points the key may still take in this window (an estimate when shared by replicas). */
  remaining: number;
  /** Until the window ends (admitted) or the key is admitted again (refused). */
  msBeforeNext: number;
}

/**
 * Points per key and window. `take` answers synchronously when it can decide locally (a leased
 * point, a key blocked in memory) and with a promise when it has to ask a store.
 */
export interface Bucket {
  take(key: string, points: number): Answer | Promise<Answer>;
}

/** Calls `f` with the answer, now or when it arrives (not named `then`: a module exporting `then` is a thenable). */
export function onAnswer<T>(a: Answer | Promise<Answer>, f: (a: Answer) => T | Promise<T>): T | Promise<T> {
  return a instanceof Promise ? a.then(f) : f(a);
}

const answerOf = (ok: boolean, res: RateLimiterRes): Answer => ({
  ok,
  remaining: res.remainingPoints,
  msBeforeNext: res.msBeforeNext,
});

/** A bucket in this process's memory (rate-limiter-flexible): embedded mode and the insurance. */
export class MemoryBucket implements Bucket {
  constructor(private readonly limiter: RateLimiterMemory) {}

  take(key: string, points: number): Promise<Answer> {
    return this.limiter.consume(key, points).then(
      (res) => answerOf(true, res),
      (res: unknown) => {
        if (res instanceof RateLimiterRes) return answerOf(false, res);
        throw res;
      },
    );
  }
}

/**
 * A burst allowance on top of a rule's bucket, as rate-limiter-flexible's BurstyRateLimiter: a
 * request the main bucket refuses may still take points from the burst bucket; the answer keeps
 * the main bucket's remaining points and the earlier of the two waits.
 */
export class BurstBucket implements Bucket {
  constructor(
    private readonly main: Bucket,
    private readonly burst: Bucket,
  ) {}

  take(key: string, points: number): Answer | Promise<Answer> {
    return onAnswer(this.main.take(key, points), (m) =>
      m.ok
        ? m
        : onAnswer(this.burst.take(key, points), (b) => ({
            ok: b.ok,
            remaining: m.remaining,
            msBeforeNext: Math.min(m.msBeforeNext, b.msBeforeNext),
          })),
    );
  }
}
