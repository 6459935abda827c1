import { z } from "@hono/zod-openapi";
import type { ControlPlaneDeps } from "../env.ts";
import {
  createRateLimit,
  deleteRateLimit,
  getRateLimit,
  listRateLimits,
  updateRateLimit,
} from "../verbs/rate-limits.ts";
import { crudRoutes } from "./crud.ts";
import { DisplayName, NO_CONTROL_CHARACTERS } from "./schemas.ts";

const Scope = z.enum(["ip", "user", "api_key", "org", "namespace", "server", "tool", "method"]);
const Glob = z.string().min(1).max(256).regex(NO_CONTROL_CHARACTERS, "must not contain control characters");

const RateLimit = z
  .object({
    id: z.string(),
    org_id: z.string(),
    name: z.string(),
    scope: Scope,
    match: z.record(z.string(), z.string()),
    limit: z.number().int(),
    window_s: z.number().int(),
    burst: z.number().int().nullable(),
    block_s: z.number().int().nullable(),
    costs: z.record(z.string(), z.number().int()),
    enabled: z.boolean(),
    created_at: z.string(),
    updated_at: z.string(),
  })
  .openapi("RateLimit");

const RateLimitInput = z
  .strictObject({
    name: DisplayName.max(128),
    scope: Scope.openapi({
      description:
        "What is counted separately: each client IP, user, API key, the org, a namespace, a server, a tool of a server, or an MCP method",
    }),
    match: z
      .strictObject({
        server_id: z.uuid().optional(),
        namespace_id: z.uuid().optional(),
        tool: Glob.optional(),
        method: Glob.optional(),
      })
      .optional()
      .openapi({ description: "Where the rule applies; absent keys match everything" }),
    limit: z.number().int().min(0).max(1_000_000_000).openapi({
      description: "Points per window; 0 admits nothing (a switch that stops the traffic it matches)",
    }),
    window_s: z
      .number()
      .int()
      .min(1)
      .max(86_400 * 31),
    burst: z
      .number()
      .int()
      .min(0)
      .max(1_000_000_000)
      .nullable()
      .optional()
      .openapi({ description: "Extra points a key may use once per window on top of `limit`" }),
    block_s: z
      .number()
      .int()
      .min(0)
      .max(86_400 * 31)
      .nullable()
      .optional()
      .openapi({ description: "Keep a key blocked this long after it went over" }),
    costs: z
      .record(Glob, z.number().int().min(1).max(1_000_000))
      .optional()
      .openapi({ description: 'Points per tools/call by tool-name glob, e.g. {"search_*": 10}' }),
    enabled: z.boolean().optional(),
  })
  .openapi("RateLimitInput");

const tags = ["Rate limits"];

/** `/api/v1/rate-limits`: rules enforced by every data-plane replica against shared counters. */
export function rateLimitRoutes(deps: ControlPlaneDeps) {
  return crudRoutes(deps, {
    tags,
    item: RateLimit,
    input: RateLimitInput,
    patch: RateLimitInput.partial(),
    verbs: {
      list: (ctx, page) => listRateLimits({ ctx, page }),
      create: (ctx, input) =>
        createRateLimit({ ctx, input: input as Parameters<typeof createRateLimit>[0]["input"] }),
      get: (ctx, id) => getRateLimit({ ctx, id }),
      update: (ctx, id, patch) =>
        updateRateLimit({ ctx, id, patch: patch as Parameters<typeof updateRateLimit>[0]["patch"] }),
      remove: (ctx, id) => deleteRateLimit({ ctx, id }),
    },
  });
}
