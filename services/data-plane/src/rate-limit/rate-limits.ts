import { globToRegExp } from "@mcpgw/policy";
import type { RateLimitEntry } from "@mcpgw/snapshot";
import { Counter, type Logger, type Registry } from "@mcpgw/telemetry";
import type { Redis } from "ioredis";
import { RateLimiterMemory } from "rate-limiter-flexible";
import type { Principal } from "../auth/principal.ts";
import type { RoutedServer } from "../snapshot/store.ts";
import { type Answer, type Bucket, BurstBucket, MemoryBucket } from "./buckets.ts";
import { LeasedBucket, LeaseStore } from "./leased-bucket.ts";

/** What a request is, for the rules that may apply to it. */
export interface RateLimitSubject {
  ip: string;
  principal: Principal;
  routed: RoutedServer;
  /** The JSON-RPC method (first of a batch); absent for GET/DELETE. */
  method?: string | undefined;
  /** The tool of a tools/call. */
  tool?: string | undefined;
  /** For the log line of a rejection where no request context carries it (the byte relay). */
  requestId?: string | undefined;
}

export interface RateLimitVerdict {
  allowed: boolean;
  /** Seconds until the most restrictive rejecting rule admits again. */
  retryAfterS: number;
  /** IETF RateLimit / RateLimit-Policy headers for the most restrictive rule that applied. */
  headers: Record<string, string>;
  rule: { id: string; name: string } | undefined;
}

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

/** Every check that no rule applies to answers this one promise: nothing allocated for them. */
const NO_VERDICT: Promise<undefined> = Promise.resolve(undefined);

/**
 * Enforces an org's rate-limit rules, shared by every replica through Redis. Each rule's points
 * are spent from leases taken from Redis in batches (see LeasedBucket for how, and the accuracy
 * that gives across replicas), so a request that its leases cover is decided without a round
 * trip; small limits are counted call by call. All rules that apply are checked, each counts the
 * request, and the most restrictive answer wins. When Redis is unreachable each rule falls back
 * to an in-memory insurance limiter enforcing this replica's share of the limit; keys already
 * over their limit stay refused in memory, so a flood does not reach Redis at all.
 */
export class RateLimits {
  private readonly buckets = new Map<string, { shape: string; rule: RateLimitEntry; bucket: Bucket }>();
  private readonly store: LeaseStore | undefined;
  private readonly rejected: Counter<"rule">;
  private readonly fallbacks: Counter;
  private readonly storeCalls: Counter<"kind">;

  constructor(private readonly o: RateLimitsOptions) {
    this.store = o.redis ? new LeaseStore(o.redis) : undefined;
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
    this.storeCalls = new Counter({
      name: "mcpgw_dp_rate_limit_store_calls_total",
      help: "Round trips to the rate-limit store: kind lease (a batch of points taken ahead) or call (one request counted by itself)",
      labelNames: ["kind"] as const,
      registers: [o.metrics],
    });
  }

  private bucket(rule: RateLimitEntry): Bucket {
    const cached = this.buckets.get(rule.id);
    // Snapshots are immutable: the same rule object has the same shape.
    if (cached?.rule === rule) return cached.bucket;
    const ruleShape = shape(rule);
    if (cached?.shape === ruleShape) {
      cached.rule = rule;
      return cached.bucket;
    }
    // A changed rule counts afresh under a key of its own.
    const keyPrefix = `${this.o.prefix}:rl:${rule.id}:${ruleShape}`;
    const main = this.counter(rule.limit, rule.window_s, keyPrefix, rule.block_s ?? 0);
    // A burst allowance is a second bucket that refills over ten windows.
    const bucket = rule.burst
      ? new BurstBucket(main, this.counter(rule.burst, rule.window_s * 10, `${keyPrefix}:burst`, 0))
      : main;
    this.buckets.set(rule.id, { shape: ruleShape, rule, bucket });
    return bucket;
  }

  private counter(points: number, windowS: number, keyPrefix: string, blockS: number): Bucket {
    const memory = (p: number) =>
      new MemoryBucket(
        new RateLimiterMemory({ points: p, duration: windowS, blockDuration: blockS, keyPrefix }),
      );
    if (!this.store) return memory(points);
    const { replicas } = this.o;
    return new LeasedBucket({
      store: this.store,
      keyPrefix,
      limit: points,
      windowMs: windowS * 1000,
      blockMs: blockS * 1000,
      replicas,
      insurance: memory(points === 0 ? 0 : Math.max(1, Math.floor(points / replicas))),
      onInsured: () => this.fallbacks.inc(),
      onStoreCall: (kind) => this.storeCalls.inc({ kind }),
      logger: this.o.logger,
    });
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
        ...(s.requestId ? { request_id: s.requestId } : {}),
      },
      "request rejected by rate limit",
    );
  }

  /** Drops limiters of rules no longer in any snapshot. */
  retain(ruleIds: ReadonlySet<string>): void {
    for (const id of this.buckets.keys()) if (!ruleIds.has(id)) this.buckets.delete(id);
  }

  /** Consumes from every rule that applies; undefined when none does. */
  check(s: RateLimitSubject): Promise<RateLimitVerdict | undefined> {
    const rules = s.routed.org.rate_limits;
    if (rules.length === 0) return NO_VERDICT;
    const hit: RateLimitEntry[] = [];
    const answers: Array<Answer | Promise<Answer>> = [];
    let waiting = false;
    for (const rule of rules) {
      if (!applies(rule, s)) continue;
      const key = scopeKey(rule, s);
      if (key === undefined) continue;
      let answer = this.bucket(rule).take(key, cost(rule, s.tool));
      if (answer instanceof Promise) {
        waiting = true;
        answer = answer.catch((err: unknown) => {
          // Neither an answer nor a fallback: never fail the request on the limiter's account.
          this.o.logger.warn(
            { err, rule: rule.id, ...(s.requestId ? { request_id: s.requestId } : {}) },
            "rate limit check failed; admitting",
          );
          return { ok: true, remaining: rule.limit, msBeforeNext: 0 };
        });
      }
      hit.push(rule);
      answers.push(answer);
    }
    if (hit.length === 0) return NO_VERDICT;
    // Every rule decided from its lease or its in-memory block: no round trip at all.
    if (!waiting) return Promise.resolve(this.verdict(s, hit, answers as Answer[]));
    return Promise.all(answers).then((done) => this.verdict(s, hit, done));
  }

  private verdict(s: RateLimitSubject, rules: RateLimitEntry[], answers: Answer[]): RateLimitVerdict {
    // The most restrictive: a rejecting rule with the longest wait, else the least remaining.
    let decisive = -1;
    let rejected = false;
    for (let i = 0; i < answers.length; i++) {
      const a = answers[i]!;
      if (a.ok) continue;
      rejected = true;
      if (decisive < 0 || a.msBeforeNext > answers[decisive]!.msBeforeNext) decisive = i;
    }
    if (!rejected) {
      const share = (i: number) => (rules[i]!.limit > 0 ? answers[i]!.remaining / rules[i]!.limit : 0);
      decisive = 0;
      for (let i = 1; i < answers.length; i++) if (share(i) < share(decisive)) decisive = i;
    }
    const rule = rules[decisive]!;
    const answer = answers[decisive]!;
    const resetS = Math.max(0, Math.ceil(answer.msBeforeNext / 1000));
    const headers = {
      "ratelimit-policy": `"${rule.id}";q=${rule.limit};w=${rule.window_s}`,
      ratelimit: `"${rule.id}";r=${Math.max(0, answer.remaining)};t=${resetS}`,
    };
    if (rejected) {
      for (let i = 0; i < answers.length; i++) {
        if (answers[i]!.ok) continue;
        this.rejected.inc({ rule: rules[i]!.id });
        this.logRejection(rules[i]!, s);
      }
    }
    return {
      allowed: !rejected,
      retryAfterS: rejected ? Math.max(1, resetS) : 0,
      headers,
      rule: { id: rule.id, name: rule.name },
    };
  }
}
