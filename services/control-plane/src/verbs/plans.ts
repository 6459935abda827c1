import type { RateLimitEntry } from "@mcpgw/snapshot";

/**
 * Rate limits every org of a plan gets on top of its own rules (all are checked; the most
 * restrictive wins). Plans not listed have no default limit.
 */
export const PLAN_RATE_LIMITS: Record<string, Array<Pick<RateLimitEntry, "scope" | "limit" | "window_s">>> = {
  free: [{ scope: "org", limit: 60_000, window_s: 60 }],
  pro: [{ scope: "org", limit: 600_000, window_s: 60 }],
};

/** The plan's default rules in snapshot form. */
export function planRateLimits(plan: string): RateLimitEntry[] {
  return (PLAN_RATE_LIMITS[plan] ?? []).map((r, i) => ({
    id: `plan-${plan}-${i}`,
    name: `plan ${plan}: ${r.limit} per ${r.window_s}s per ${r.scope}`,
    scope: r.scope,
    match: {},
    limit: r.limit,
    window_s: r.window_s,
    burst: null,
    block_s: null,
    costs: {},
  }));
}
