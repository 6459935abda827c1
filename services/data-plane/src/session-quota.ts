import { randomUUID } from "node:crypto";
import type { Logger } from "@mcpgw/telemetry";
import type { Redis } from "ioredis";

// Atomically: forget sessions not seen within the window, refuse when the org is at its limit,
// otherwise hold a place for the new session.
const RESERVE = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1`;

/**
 * The plan's `max_sessions`: concurrent MCP sessions per organization, counted across every
 * replica in Redis (a sorted set of session ids by last activity; sessions silent for longer than
 * the idle window stop counting, as clients rarely end sessions explicitly). Without Redis the
 * count is this replica's. If Redis fails, sessions are admitted: a quota must not become an
 * outage.
 */
export class SessionQuota {
  private readonly local = new Map<string, Map<string, number>>();
  private readonly touched = new Map<string, number>();

  constructor(
    private readonly redis: Redis | undefined,
    private readonly prefix: string,
    private readonly windowMs: number,
    private readonly logger: Logger,
  ) {}

  private key(orgId: string) {
    return `${this.prefix}:sessions:${orgId}`;
  }

  /** Holds a place for a new session; undefined when the org is at its limit. */
  async reserve(orgId: string, max: number): Promise<string | undefined> {
    const ticket = `pending:${randomUUID()}`;
    const now = Date.now();
    if (!this.redis) {
      const sessions = this.local.get(orgId) ?? new Map<string, number>();
      for (const [id, seen] of sessions) if (seen < now - this.windowMs) sessions.delete(id);
      if (sessions.size >= max) return undefined;
      sessions.set(ticket, now);
      this.local.set(orgId, sessions);
      return ticket;
    }
    try {
      const ok = await this.redis.eval(
        RESERVE,
        1,
        this.key(orgId),
        now - this.windowMs,
        max,
        now,
        ticket,
        this.windowMs * 2,
      );
      return ok === 1 ? ticket : undefined;
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, "session quota unavailable; admitting");
      return ticket;
    }
  }

  /** The session the reservation was for started (or `sessionId` undefined: it did not). */
  settle(orgId: string, ticket: string, sessionId: string | undefined): void {
    const now = Date.now();
    if (!this.redis) {
      const sessions = this.local.get(orgId);
      sessions?.delete(ticket);
      if (sessionId) sessions?.set(sessionId, now);
      return;
    }
    const multi = this.redis.multi().zrem(this.key(orgId), ticket);
    if (sessionId) multi.zadd(this.key(orgId), now, sessionId);
    void multi.exec().catch(() => {});
  }

  /** A session was used: it keeps counting (refreshed at most once a minute per session). */
  touch(orgId: string, sessionId: string): void {
    const now = Date.now();
    if ((this.touched.get(sessionId) ?? 0) > now - 60_000) return;
    this.touched.set(sessionId, now);
    if (this.touched.size > 100_000) this.touched.clear();
    if (!this.redis) {
      this.local.get(orgId)?.set(sessionId, now);
      return;
    }
    void this.redis.zadd(this.key(orgId), "XX", now, sessionId).catch(() => {});
  }

  /** A session ended. */
  end(orgId: string, sessionId: string): void {
    this.touched.delete(sessionId);
    if (!this.redis) {
      this.local.get(orgId)?.delete(sessionId);
      return;
    }
    void this.redis.zrem(this.key(orgId), sessionId).catch(() => {});
  }
}
