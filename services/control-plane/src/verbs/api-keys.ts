import { randomBytes } from "node:crypto";
import { schema } from "@mcpgw/db";
import { and, eq } from "drizzle-orm";
import { recordAudit } from "../audit.ts";
import { authorize, can } from "../auth/permissions.ts";
import { sha256 } from "../auth/refresh-tokens.ts";
import type { VerbContext } from "../context.ts";
import { forbidden, notFound, validation } from "../errors.ts";
import { bumpOrgVersion } from "./config-version.ts";
import { type Page, type PageRequest, pageQuery, toPage } from "./pagination.ts";

type KeyRow = typeof schema.apiKeys.$inferSelect;

/** Every key starts with this, so leaked keys are recognisable (secret scanners, logs). */
export const API_KEY_PREFIX = "mcpgw_";

export interface ApiKeyDto {
  id: string;
  org_id: string;
  user_id: string | null;
  namespace_id: string | null;
  name: string;
  prefix: string;
  kind: "user" | "a2a";
  permissions: string[];
  expires_at: string | null;
  last_used_at: string | null;
  active: boolean;
  created_at: string;
}

const toDto = (k: KeyRow): ApiKeyDto => ({
  id: k.id,
  org_id: k.org_id,
  user_id: k.user_id,
  namespace_id: k.namespace_id,
  name: k.name,
  prefix: k.prefix,
  kind: k.kind,
  permissions: k.permissions,
  expires_at: k.expires_at?.toISOString() ?? null,
  last_used_at: k.last_used_at?.toISOString() ?? null,
  active: k.active,
  created_at: k.created_at.toISOString(),
});

export interface ApiKeyInput {
  name: string;
  kind?: "user" | "a2a" | undefined;
  namespace_id?: string | null | undefined;
  permissions?: string[] | undefined;
  expires_at?: string | null | undefined;
}

/** Creates a key; the secret is in the result once and stored only as its SHA-256 hash. */
export async function createApiKey({
  ctx,
  input,
}: {
  ctx: VerbContext;
  input: ApiKeyInput;
}): Promise<ApiKeyDto & { key: string }> {
  const kind = input.kind ?? "user";
  authorize(ctx.actor, kind === "a2a" ? "api_keys:create_a2a" : "api_keys:create");
  if (kind === "user" && ctx.actor.user_id.startsWith("a2a:"))
    throw validation("an app-to-app token cannot create user keys");
  const expiresAt = input.expires_at ? new Date(input.expires_at) : null;
  if (expiresAt && expiresAt.getTime() <= Date.now()) throw validation("expires_at must be in the future");
  if (input.namespace_id) {
    const [ns] = await ctx.db
      .select({ id: schema.namespaces.id })
      .from(schema.namespaces)
      .where(
        and(eq(schema.namespaces.id, input.namespace_id), eq(schema.namespaces.org_id, ctx.actor.org_id)),
      );
    if (!ns) throw notFound("namespace");
  }
  // 32 random bytes: high entropy, so a fast hash (not a password hash) is the right store.
  const secret = `${API_KEY_PREFIX}${randomBytes(32).toString("base64url")}`;
  const row = await ctx.db.transaction(async (tx) => {
    const [created] = await tx
      .insert(schema.apiKeys)
      .values({
        org_id: ctx.actor.org_id,
        user_id: kind === "user" ? ctx.actor.user_id : null,
        namespace_id: input.namespace_id ?? null,
        name: input.name,
        prefix: secret.slice(0, API_KEY_PREFIX.length + 8),
        hash: sha256(secret),
        kind,
        permissions: input.permissions ?? ["mcp:use"],
        expires_at: expiresAt,
      })
      .returning();
    await recordAudit(tx, ctx, {
      action: "api_key.create",
      resource_type: "api_key",
      resource_id: created!.id,
      after: created,
    });
    await bumpOrgVersion(tx, ctx.actor.org_id);
    return created!;
  });
  ctx.publisher.notify(ctx.actor.org_id);
  return { ...toDto(row), key: secret };
}

const visible = (ctx: VerbContext) => {
  if (ctx.actor.user_id.startsWith("a2a:")) throw forbidden("app-to-app tokens cannot manage API keys");
  return can(ctx.actor, "api_keys:manage_all")
    ? eq(schema.apiKeys.org_id, ctx.actor.org_id)
    : and(eq(schema.apiKeys.org_id, ctx.actor.org_id), eq(schema.apiKeys.user_id, ctx.actor.user_id));
};

/** Lists keys: admins see the org's, everyone else their own. */
export async function listApiKeys({
  ctx,
  page,
}: {
  ctx: VerbContext;
  page: PageRequest;
}): Promise<Page<ApiKeyDto>> {
  const q = pageQuery(schema.apiKeys, page);
  const rows = await ctx.db
    .select()
    .from(schema.apiKeys)
    .where(and(visible(ctx), q.where))
    .orderBy(...q.orderBy)
    .limit(q.limit);
  return toPage(rows, page.limit, toDto);
}

/** One key the actor may see. */
export async function getApiKey({ ctx, id }: { ctx: VerbContext; id: string }): Promise<ApiKeyDto> {
  const [row] = await ctx.db
    .select()
    .from(schema.apiKeys)
    .where(and(visible(ctx), eq(schema.apiKeys.id, id)));
  if (!row) throw notFound("api key");
  return toDto(row);
}

/** Revokes a key: data planes stop accepting it with the next snapshot. */
export async function revokeApiKey({ ctx, id }: { ctx: VerbContext; id: string }): Promise<void> {
  await ctx.db.transaction(async (tx) => {
    const [before] = await tx
      .select()
      .from(schema.apiKeys)
      .where(and(visible(ctx), eq(schema.apiKeys.id, id)))
      .for("update");
    if (!before) throw notFound("api key");
    const [after] = await tx
      .update(schema.apiKeys)
      .set({ active: false })
      .where(eq(schema.apiKeys.id, id))
      .returning();
    await recordAudit(tx, ctx, {
      action: "api_key.revoke",
      resource_type: "api_key",
      resource_id: id,
      before,
      after,
    });
    await bumpOrgVersion(tx, ctx.actor.org_id);
  });
  ctx.publisher.notify(ctx.actor.org_id);
}
