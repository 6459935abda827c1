import { schema } from "@mcpgw/db";
import { and, eq } from "drizzle-orm";
import { recordAudit } from "../audit.ts";
import { authorize } from "../auth/permissions.ts";
import type { Role, VerbContext } from "../context.ts";
import { assertChanges, conflict, notFound } from "../errors.ts";
import { bumpOrgVersion } from "./config-version.ts";
import { type Page, type PageRequest, pageQuery, toPage } from "./pagination.ts";
import { assertSafeUpstreamUrl } from "./upstream-url.ts";

type IdpRow = typeof schema.identityProviders.$inferSelect;

export interface IdentityProviderDto {
  id: string;
  org_id: string;
  name: string;
  issuer: string;
  jwks_url: string;
  audience: string;
  role_claim: string;
  role_mapping: Record<string, string>;
  default_role: Role;
  enabled: boolean;
  created_at: string;
  updated_at: string;
}

const toDto = (r: IdpRow): IdentityProviderDto => ({
  ...r,
  created_at: r.created_at.toISOString(),
  updated_at: r.updated_at.toISOString(),
});

export interface IdentityProviderInput {
  name: string;
  issuer: string;
  jwks_url: string;
  audience: string;
  role_claim?: string | undefined;
  role_mapping?: Record<string, Role> | undefined;
  default_role?: Role | undefined;
  enabled?: boolean | undefined;
}

const inOrg = (ctx: VerbContext, id: string) =>
  and(eq(schema.identityProviders.id, id), eq(schema.identityProviders.org_id, ctx.actor.org_id));

/** Lists the org's trusted OIDC issuers. */
export async function listIdentityProviders({
  ctx,
  page,
}: {
  ctx: VerbContext;
  page: PageRequest;
}): Promise<Page<IdentityProviderDto>> {
  authorize(ctx.actor, "identity_providers:read");
  const q = pageQuery(schema.identityProviders, page);
  const rows = await ctx.db
    .select()
    .from(schema.identityProviders)
    .where(and(eq(schema.identityProviders.org_id, ctx.actor.org_id), q.where))
    .orderBy(...q.orderBy)
    .limit(q.limit);
  return toPage(rows, page.limit, toDto);
}

/** One trusted issuer. */
export async function getIdentityProvider({
  ctx,
  id,
}: {
  ctx: VerbContext;
  id: string;
}): Promise<IdentityProviderDto> {
  authorize(ctx.actor, "identity_providers:read");
  const [row] = await ctx.db.select().from(schema.identityProviders).where(inOrg(ctx, id));
  if (!row) throw notFound("identity provider");
  return toDto(row);
}

/** Trusts an OIDC issuer: data planes verify its tokens against its JWKS. */
export async function createIdentityProvider({
  ctx,
  input,
}: {
  ctx: VerbContext;
  input: IdentityProviderInput;
}): Promise<IdentityProviderDto> {
  authorize(ctx.actor, "identity_providers:write");
  const jwks_url = await assertSafeUpstreamUrl(input.jwks_url, ctx.allowPrivateUpstreams);
  const [dup] = await ctx.db
    .select({ id: schema.identityProviders.id })
    .from(schema.identityProviders)
    .where(
      and(
        eq(schema.identityProviders.org_id, ctx.actor.org_id),
        eq(schema.identityProviders.issuer, input.issuer),
      ),
    );
  if (dup) throw conflict("this issuer is already trusted");
  const row = await ctx.db.transaction(async (tx) => {
    const [created] = await tx
      .insert(schema.identityProviders)
      .values({ ...input, jwks_url, org_id: ctx.actor.org_id })
      .returning();
    await recordAudit(tx, ctx, {
      action: "identity_provider.create",
      resource_type: "identity_provider",
      resource_id: created!.id,
      after: created,
    });
    await bumpOrgVersion(tx, ctx.actor.org_id);
    return created!;
  });
  ctx.publisher.notify(ctx.actor.org_id);
  return toDto(row);
}

/** Changes a trusted issuer. */
export async function updateIdentityProvider({
  ctx,
  id,
  patch,
}: {
  ctx: VerbContext;
  id: string;
  patch: Partial<IdentityProviderInput>;
}): Promise<IdentityProviderDto> {
  authorize(ctx.actor, "identity_providers:write");
  assertChanges(patch);
  const fields = { ...patch };
  if (patch.jwks_url)
    fields.jwks_url = await assertSafeUpstreamUrl(patch.jwks_url, ctx.allowPrivateUpstreams);
  const row = await ctx.db.transaction(async (tx) => {
    const [before] = await tx.select().from(schema.identityProviders).where(inOrg(ctx, id)).for("update");
    if (!before) throw notFound("identity provider");
    const [after] = await tx.update(schema.identityProviders).set(fields).where(inOrg(ctx, id)).returning();
    await recordAudit(tx, ctx, {
      action: "identity_provider.update",
      resource_type: "identity_provider",
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

/** Stops trusting an issuer. */
export async function deleteIdentityProvider({ ctx, id }: { ctx: VerbContext; id: string }): Promise<void> {
  authorize(ctx.actor, "identity_providers:write");
  await ctx.db.transaction(async (tx) => {
    const [before] = await tx.delete(schema.identityProviders).where(inOrg(ctx, id)).returning();
    if (!before) throw notFound("identity provider");
    await recordAudit(tx, ctx, {
      action: "identity_provider.delete",
      resource_type: "identity_provider",
      resource_id: id,
      before,
    });
    await bumpOrgVersion(tx, ctx.actor.org_id);
  });
  ctx.publisher.notify(ctx.actor.org_id);
}
