import { RateLimiterMemory, RateLimiterRes } from "rate-limiter-flexible";
import { AppError } from "../errors.ts";

/** Consecutive failures an account may have before each further one locks it for a while. */
export const FREE_FAILURES = 5;
/** The longest an account stays locked: attackers slow down, owners are never locked out for good. */
export const MAX_LOCK_S = 15 * 60;

/** Lock duration after `failures` consecutive failures: 0 up to FREE_FAILURES, then doubling. */
export function lockSeconds(failures: number): number {
  if (failures < FREE_FAILURES) return 0;
  return Math.min(2 ** (failures - FREE_FAILURES), MAX_LOCK_S);
}

export const tooManyAttempts = (retryAfterS: number) =>
  new AppError("RateLimited", "too many login attempts; try again later", {
    retry_after: Math.max(1, Math.ceil(retryAfterS)),
  });

/**
 * Per-client-IP login limiter (in memory per control-plane replica; the per-account lock lives
 * in the database and so holds across replicas).
 */
export class LoginThrottle {
  private readonly perIp: RateLimiterMemory;

  constructor(points = 30, durationS = 300) {
    this.perIp = new RateLimiterMemory({ points, duration: durationS, keyPrefix: "login_ip" });
  }

  /** Counts an attempt from `ip`; throws RateLimited once the IP is over its budget. */
  async attempt(ip: string | undefined): Promise<void> {
    if (!ip) return;
    try {
      await this.perIp.consume(ip);
    } catch (res) {
      if (res instanceof RateLimiterRes) throw tooManyAttempts(res.msBeforeNext / 1000);
      throw res;
    }
  }
}
