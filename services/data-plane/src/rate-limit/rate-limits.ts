import { globToRegExp } from "@mcpgw/policy";
import type { RateLimitEntry } from "@mcpgw/snapshot";
import { Counter, type Logger, type Registry } from "@mcpgw/telemetry";
import type { Redis } from "ioredis";
import {
  BurstyRateLimiter,
  RateLimiterMemory,
  RateLimiterRedis,
  RateLimiterRes,
} from "rate-limiter-flexible";
import type { Principal } from "../auth/principal.ts";
import type { RoutedServer } from "../snapshot/store.ts";

/** The in-memory stand-in used while Redis fails; counts how often it answered. */
class InsuranceLimiter extends RateLimiterMemory {
  constructor(
    opts: ConstructorParameters<typeof RateLimiterMemory>[0],
    private readonly onUse: () => void,
  ) {
    super(opts);
  }

  override consume(
    ...args: Parameters<RateLimiterMemory["consume"]>
  ): ReturnType<RateLimiterMemory["consume"]> {
    this.onUse();
    return super.consume(...args);
  }
}

/** What a request is, for the rules that may apply to it. */
export interface RateLimitSubject {
  ip: string;
  principal: Principal;
  routed: RoutedServer;
  /** The JSON-RPC method (first of a batch); absent for GET/DELETE. */
  method?: string | undefined;
  /** The tool of a tools/call. */
  tool?: string | undefined;
}

export interface RateLimitVerdict {
  allowed: boolean;
  /** Seconds until the most restrictive rejecting rule admits again. */
  retryAfterS: number;
  /** IETF RateLimit / RateLimit-Policy headers for the most restrictive rule that applied. */
  headers: Record<string, string>;
  rule: { id: string; name: string } | undefined;
}

type Limiter = RateLimiterRedis | RateLimiterMemory | BurstyRateLimiter;

export interface RateLimitsOptions {
  /** Shared counters; without Redis (embedded mode) counters are in memory. */
  redis: Redis | undefined;
  prefix: string;
  /** Replicas sharing the limits: each enforces 1/n of a limit while Redis is unreachable. */
  replicas: number;
  logger: Logger;
  metrics: Registry;
}

/** The counting key of a rule for a subject; undefined when the rule's scope does not apply. */
function scopeKey(rule: RateLimitEntry, s: RateLimitSubject): string | undefined {
  switch (rule.scope) {
    case "ip":
      return s.ip;
    case "user":
      return s.principal.user_id ?? s.principal.id;
    case "api_key":
      return s.principal.key_id ?? s.principal.a2a_key_id;
    case "org":
      return s.routed.org.org_id;
    case "namespace":
      return s.routed.namespace.id;
    case "server":
      return s.routed.server.id;
    case "tool":
      return s.tool === undefined ? undefined : `${s.routed.server.id}:${s.tool}`;
    case "method":
      return s.method;
  }
}

function applies(rule: RateLimitEntry, s: RateLimitSubject): boolean {
  const m = rule.match;
  if (m.server_id && m.server_id !== s.routed.server.id) return false;
  if (m.namespace_id && m.namespace_id !== s.routed.namespace.id) return false;
  if (m.tool && (s.tool === undefined || !globToRegExp(m.tool).test(s.tool))) return false;
  if (m.method && (s.method === undefined || !globToRegExp(m.method).test(s.method))) return false;
  return true;
}

function cost(rule: RateLimitEntry, tool: string | undefined): number {
  if (tool === undefined) return 1;
  for (const [pattern, points] of Object.entries(rule.costs))
    if (globToRegExp(pattern).test(tool)) return points;
  return 1;
}

const shape = (r: RateLimitEntry) => `${r.limit}/${r.window_s}/${r.burst ?? 0}/${r.block_s ?? 0}`;

/**
 * Enforces an org's rate-limit rules with rate-limiter-flexible on Redis, shared by every
 * replica. All rules that apply are checked concurrently (their commands are in flight together
 * on one connection) and the most restrictive answer wins. When Redis is unreachable each rule
 * falls back to an in-memory insurance limiter enforcing this replica's share; keys already over
 * their limit are blocked in memory so a flood does not reach Redis at all.
 */
export class RateLimits {
  private readonly limiters = new Map<string, { shape: string; limiter: Limiter }>();
  private readonly rejected: Counter<"rule">;
  private readonly fallbacks: Counter;

  constructor(private readonly o: RateLimitsOptions) {
    this.rejected = new Counter({
      name: "mcpgw_dp_rate_limited_total",
      help: "Requests rejected by a rate-limit rule",
      labelNames: ["rule"] as const,
      registers: [o.metrics],
    });
    this.fallbacks = new Counter({
      name: "mcpgw_dp_rate_limit_store_errors_total",
      help: "Rate-limit checks answered by the in-memory insurance limiter because Redis failed",
      registers: [o.metrics],
    });
  }

  private limiter(rule: RateLimitEntry): Limiter {
    const cached = this.limiters.get(rule.id);
    if (cached?.shape === shape(rule)) return cached.limiter;
    const keyPrefix = `${this.o.prefix}:rl:${rule.id}:${shape(rule)}`;
    const make = (
      points: number,
      duration: number,
      prefix: string,
      block: number,
    ): RateLimiterRedis | RateLimiterMemory => {
      const insurance = new InsuranceLimiter(
        {
          points: Math.max(1, Math.floor(points / this.o.replicas)),
          duration,
          blockDuration: block,
          keyPrefix: `${prefix}:insurance`,
        },
        () => this.fallbacks.inc(),
      );
      if (!this.o.redis)
        return new RateLimiterMemory({ points, duration, blockDuration: block, keyPrefix: prefix });
      const redisLimiter = new RateLimiterRedis({
        storeClient: this.o.redis,
        keyPrefix: prefix,
        points,
        duration,
        blockDuration: block,
        rejectIfRedisNotReady: true,
        inMemoryBlockOnConsumed: points + 1,
        insuranceLimiter: insurance,
      });
      return redisLimiter;
    };
    const main = make(rule.limit, rule.window_s, keyPrefix, rule.block_s ?? 0);
    // A burst allowance is a second bucket that refills over ten windows.
    const limiter = rule.burst
      ? new BurstyRateLimiter(main, make(rule.burst, rule.window_s * 10, `${keyPrefix}:burst`, 0))
      : main;
    this.limiters.set(rule.id, { shape: shape(rule), limiter });
    return limiter;
  }

  private readonly lastLogged = new Map<string, number>();

  /** One log line per rule and second at most: a flood must not flood the logs too. */
  private logRejection(rule: RateLimitEntry, s: RateLimitSubject) {
    const now = Date.now();
    if ((this.lastLogged.get(rule.id) ?? 0) > now - 1000) return;
    this.lastLogged.set(rule.id, now);
    if (this.lastLogged.size > 10_000) this.lastLogged.clear();
    this.o.logger.info(
      {
        rule: rule.id,
        rule_name: rule.name,
        scope: rule.scope,
        org: s.routed.org.org_id,
        server: s.routed.server.id,
        principal: s.principal.id,
        method: s.method,
        tool: s.tool,
      },
      "request rejected by rate limit",
    );
  }

  /** Drops limiters of rules no longer in any snapshot. */
  retain(ruleIds: ReadonlySet<string>): void {
    for (const id of this.limiters.keys()) if (!ruleIds.has(id)) this.limiters.delete(id);
  }

  /** Consumes from every rule that applies; undefined when none does. */
  async check(s: RateLimitSubject): Promise<RateLimitVerdict | undefined> {
    const rules = s.routed.org.rate_limits;
    if (rules.length === 0) return undefined;
    const checks: Array<Promise<{ rule: RateLimitEntry; res: RateLimiterRes; ok: boolean }>> = [];
    for (const rule of rules) {
      if (!applies(rule, s)) continue;
      const key = scopeKey(rule, s);
      if (key === undefined) continue;
      const points = cost(rule, s.tool);
      checks.push(
        this.limiter(rule)
          .consume(key, points)
          .then(
            (res) => ({ rule, res, ok: true }),
            (res: unknown) => {
              if (res instanceof RateLimiterRes) return { rule, res, ok: false };
              // Neither an answer nor a fallback: never fail the request on the limiter's account.
              this.o.logger.warn({ err: res, rule: rule.id }, "rate limit check failed; admitting");
              return { rule, res: new RateLimiterRes(rule.limit, 0, 0, false), ok: true };
            },
          ),
      );
    }
    if (checks.length === 0) return undefined;
    const results = await Promise.all(checks);
    const rejections = results.filter((r) => !r.ok);
    // The most restrictive: a rejecting rule with the longest wait, else the least remaining.
    const decisive = rejections.length
      ? rejections.reduce((a, b) => (b.res.msBeforeNext > a.res.msBeforeNext ? b : a))
      : results.reduce((a, b) =>
          b.res.remainingPoints / b.rule.limit < a.res.remainingPoints / a.rule.limit ? b : a,
        );
    const resetS = Math.max(0, Math.ceil(decisive.res.msBeforeNext / 1000));
    const headers = {
      "ratelimit-policy": `"${decisive.rule.id}";q=${decisive.rule.limit};w=${decisive.rule.window_s}`,
      ratelimit: `"${decisive.rule.id}";r=${Math.max(0, decisive.res.remainingPoints)};t=${resetS}`,
    };
    if (rejections.length) {
      for (const r of rejections) {
        this.rejected.inc({ rule: r.rule.id });
        this.logRejection(r.rule, s);
      }
      return {
        allowed: false,
        retryAfterS: Math.max(1, resetS),
        headers,
        rule: { id: decisive.rule.id, name: decisive.rule.name },
      };
    }
    return {
      allowed: true,
      retryAfterS: 0,
      headers,
      rule: { id: decisive.rule.id, name: decisive.rule.name },
    };
  }
}
