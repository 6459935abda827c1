import { LRUCache } from "lru-cache";
import { RateLimiterMemory, RateLimiterRes } from "rate-limiter-flexible";
import { AppError } from "../errors.ts";

/** Consecutive failures an account may have before each further one locks it for a while. */
export const FREE_FAILURES = 5;
/** The longest an account stays locked: attackers slow down, owners are never locked out for good. */
export const MAX_LOCK_S = 15 * 60;

/** Lock duration after `failures` consecutive failures: 0 up to FREE_FAILURES - 1, then doubling. */
export function lockSeconds(failures: number): number {
  if (failures < FREE_FAILURES) return 0;
  return Math.min(2 ** (failures - FREE_FAILURES), MAX_LOCK_S);
}

export const tooManyAttempts = (retryAfterS: number) =>
  new AppError("RateLimited", "too many login attempts; try again later", {
    retry_after: Math.max(1, Math.ceil(retryAfterS)),
  });

/**
 * Slows down credential guessing. Per client IP: a budget of failed attempts per window (in
 * memory per control-plane replica). Per unknown email: the same lock schedule as real accounts
 * (whose lock lives in the database and so holds across replicas), so a 429 does not reveal
 * whether an account exists.
 */
export class LoginThrottle {
  private readonly perIp: RateLimiterMemory;
  private readonly unknownAccounts = new LRUCache<string, { failures: number; lockedUntil: number }>({
    max: 100_000,
    ttl: MAX_LOCK_S * 2000,
  });

  constructor(
    private readonly points = 30,
    durationS = 300,
  ) {
    this.perIp = new RateLimiterMemory({ points, duration: durationS, keyPrefix: "login_ip" });
  }

  /** Throws RateLimited when `ip` has used up its failure budget. */
  async check(ip: string | undefined): Promise<void> {
    if (!ip) return;
    const res = await this.perIp.get(ip);
    if (res && res.consumedPoints >= this.points) throw tooManyAttempts(res.msBeforeNext / 1000);
  }

  /** Counts a failed attempt from `ip`. */
  async fail(ip: string | undefined): Promise<void> {
    if (!ip) return;
    await this.perIp.consume(ip).catch((res: unknown) => {
      if (!(res instanceof RateLimiterRes)) throw res;
    });
  }

  /** Throws RateLimited while an email that matches no account is locked. */
  checkUnknown(email: string): void {
    const entry = this.unknownAccounts.get(email.toLowerCase());
    if (entry && entry.lockedUntil > Date.now())
      throw tooManyAttempts((entry.lockedUntil - Date.now()) / 1000);
  }

  /** Counts a failure for an email that matches no account. */
  failUnknown(email: string): void {
    const key = email.toLowerCase();
    const failures = (this.unknownAccounts.get(key)?.failures ?? 0) + 1;
    this.unknownAccounts.set(key, { failures, lockedUntil: Date.now() + lockSeconds(failures) * 1000 });
  }
}
