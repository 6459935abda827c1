import { schema } from "@mcpgw/db";
import { authorize } from "../auth/permissions.ts";
import type { VerbContext } from "../context.ts";
import { validation } from "../errors.ts";
import { orgResource } from "./org-resource.ts";
import type { Page, PageRequest } from "./pagination.ts";

type RateLimitRow = typeof schema.rateLimits.$inferSelect;
export type RateLimitScope = RateLimitRow["scope"];

export interface RateLimitDto {
  id: string;
  org_id: string;
  name: string;
  scope: RateLimitScope;
  match: Record<string, string>;
  limit: number;
  window_s: number;
  burst: number | null;
  block_s: number | null;
  costs: Record<string, number>;
  enabled: boolean;
  created_at: string;
  updated_at: string;
}

const toDto = (r: RateLimitRow): RateLimitDto => ({
  ...r,
  created_at: r.created_at.toISOString(),
  updated_at: r.updated_at.toISOString(),
});

export interface RateLimitInput {
  name: string;
  scope: RateLimitScope;
  match?: Record<string, string> | undefined;
  limit: number;
  window_s: number;
  burst?: number | null | undefined;
  block_s?: number | null | undefined;
  costs?: Record<string, number> | undefined;
  enabled?: boolean | undefined;
}

const MATCH_KEYS = new Set(["server_id", "namespace_id", "tool", "method"]);

function checkMatch(match: Record<string, string> | undefined) {
  for (const key of Object.keys(match ?? {})) {
    if (!MATCH_KEYS.has(key)) throw validation(`match keys are ${[...MATCH_KEYS].join(", ")}; got '${key}'`);
  }
}

const rules = orgResource({
  table: schema.rateLimits,
  resource: "rate_limit",
  label: "rate limit",
  read: "rate_limits:read",
  write: "rate_limits:write",
  toDto,
  inSnapshot: true,
});

/** Lists the org's rate-limit rules (plan defaults are not rows; see the org's plan). */
export const listRateLimits = ({
  ctx,
  page,
}: {
  ctx: VerbContext;
  page: PageRequest;
}): Promise<Page<RateLimitDto>> => rules.list(ctx, page);

/** One rule. */
export const getRateLimit = ({ ctx, id }: { ctx: VerbContext; id: string }): Promise<RateLimitDto> =>
  rules.get(ctx, id);

/** Creates a rule; data planes enforce it with the next snapshot. */
export async function createRateLimit({
  ctx,
  input,
}: {
  ctx: VerbContext;
  input: RateLimitInput;
}): Promise<RateLimitDto> {
  authorize(ctx.actor, "rate_limits:write");
  checkMatch(input.match);
  await rules.assertNameFree(ctx, input.name);
  return rules.create(ctx, { ...input });
}

/** Changes a rule. */
export async function updateRateLimit({
  ctx,
  id,
  patch,
}: {
  ctx: VerbContext;
  id: string;
  patch: Partial<RateLimitInput>;
}): Promise<RateLimitDto> {
  checkMatch(patch.match);
  if (patch.name) await rules.assertNameFree(ctx, patch.name, id);
  return rules.update(ctx, id, { ...patch });
}

/** Deletes a rule. */
export const deleteRateLimit = ({ ctx, id }: { ctx: VerbContext; id: string }): Promise<void> =>
  rules.remove(ctx, id);
