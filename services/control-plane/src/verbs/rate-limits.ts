import { schema } from "@mcpgw/db";
import { and, eq } from "drizzle-orm";
import { recordAudit } from "../audit.ts";
import { authorize } from "../auth/permissions.ts";
import type { VerbContext } from "../context.ts";
import { assertChanges, conflict, notFound, validation } from "../errors.ts";
import { bumpOrgVersion } from "./config-version.ts";
import { type Page, type PageRequest, pageQuery, toPage } from "./pagination.ts";

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

const inOrg = (ctx: VerbContext, id: string) =>
  and(eq(schema.rateLimits.id, id), eq(schema.rateLimits.org_id, ctx.actor.org_id));

/** Lists the org's rate-limit rules (plan defaults are not rows; see the org's plan). */
export async function listRateLimits({
  ctx,
  page,
}: {
  ctx: VerbContext;
  page: PageRequest;
}): Promise<Page<RateLimitDto>> {
  authorize(ctx.actor, "rate_limits:read");
  const q = pageQuery(schema.rateLimits, page);
  const rows = await ctx.db
    .select()
    .from(schema.rateLimits)
    .where(and(eq(schema.rateLimits.org_id, ctx.actor.org_id), q.where))
    .orderBy(...q.orderBy)
    .limit(q.limit);
  return toPage(rows, page.limit, toDto);
}

/** One rule. */
export async function getRateLimit({ ctx, id }: { ctx: VerbContext; id: string }): Promise<RateLimitDto> {
  authorize(ctx.actor, "rate_limits:read");
  const [row] = await ctx.db.select().from(schema.rateLimits).where(inOrg(ctx, id));
  if (!row) throw notFound("rate limit");
  return toDto(row);
}

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
  const [dup] = await ctx.db
    .select({ id: schema.rateLimits.id })
    .from(schema.rateLimits)
    .where(and(eq(schema.rateLimits.org_id, ctx.actor.org_id), eq(schema.rateLimits.name, input.name)));
  if (dup) throw conflict(`a rate limit named '${input.name}' already exists`);
  const row = await ctx.db.transaction(async (tx) => {
    const [created] = await tx
      .insert(schema.rateLimits)
      .values({ ...input, org_id: ctx.actor.org_id })
      .returning();
    await recordAudit(tx, ctx, {
      action: "rate_limit.create",
      resource_type: "rate_limit",
      resource_id: created!.id,
      after: created,
    });
    await bumpOrgVersion(tx, ctx.actor.org_id);
    return created!;
  });
  ctx.publisher.notify(ctx.actor.org_id);
  return toDto(row);
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
  authorize(ctx.actor, "rate_limits:write");
  assertChanges(patch);
  checkMatch(patch.match);
  const row = await ctx.db.transaction(async (tx) => {
    const [before] = await tx.select().from(schema.rateLimits).where(inOrg(ctx, id)).for("update");
    if (!before) throw notFound("rate limit");
    const [after] = await tx.update(schema.rateLimits).set(patch).where(inOrg(ctx, id)).returning();
    await recordAudit(tx, ctx, {
      action: "rate_limit.update",
      resource_type: "rate_limit",
      resource_id: id,
      before,
      after,
    });
    await bumpOrgVersion(tx, ctx.actor.org_id);
    return after!;
  });
  ctx.publisher.notify(ctx.actor.org_id);
  return toDto(row);
}

/** Deletes a rule. */
export async function deleteRateLimit({ ctx, id }: { ctx: VerbContext; id: string }): Promise<void> {
  authorize(ctx.actor, "rate_limits:write");
  await ctx.db.transaction(async (tx) => {
    const [before] = await tx.delete(schema.rateLimits).where(inOrg(ctx, id)).returning();
    if (!before) throw notFound("rate limit");
    await recordAudit(tx, ctx, {
      action: "rate_limit.delete",
      resource_type: "rate_limit",
      resource_id: id,
      before,
    });
    await bumpOrgVersion(tx, ctx.actor.org_id);
  });
  ctx.publisher.notify(ctx.actor.org_id);
}
