import { schema } from "@mcpgw/db";
import { and, eq, ne } from "drizzle-orm";
import { authorize } from "../auth/permissions.ts";
import type { Role, VerbContext } from "../context.ts";
import { conflict } from "../errors.ts";
import { orgResource } from "./org-resource.ts";
import type { Page, PageRequest } from "./pagination.ts";
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

const providers = orgResource({
  table: schema.identityProviders,
  resource: "identity_provider",
  label: "identity provider",
  read: "identity_providers:read",
  write: "identity_providers:write",
  toDto,
  inSnapshot: true,
});

/** Lists the org's trusted OIDC issuers. */
export const listIdentityProviders = ({
  ctx,
  page,
}: {
  ctx: VerbContext;
  page: PageRequest;
}): Promise<Page<IdentityProviderDto>> => providers.list(ctx, page);

/** One trusted issuer. */
export const getIdentityProvider = ({
  ctx,
  id,
}: {
  ctx: VerbContext;
  id: string;
}): Promise<IdentityProviderDto> => providers.get(ctx, id);

/**
 * Tokens name their issuer and audience, not the gateway org: an (issuer, audience) pair another
 * org trusts would make the two orgs' tokens indistinguishable, so it is refused.
 */
async function assertPairFree(ctx: VerbContext, issuer: string, audience: string, except?: string) {
  const [taken] = await ctx.db
    .select({ id: schema.identityProviders.id })
    .from(schema.identityProviders)
    .where(
      and(
        eq(schema.identityProviders.issuer, issuer),
        eq(schema.identityProviders.audience, audience),
        ne(schema.identityProviders.org_id, ctx.actor.org_id),
        except ? ne(schema.identityProviders.id, except) : undefined,
      ),
    );
  if (taken)
    throw conflict(
      "another organization trusts this issuer for this audience: its tokens and yours could not be told apart; use an audience of your own",
    );
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
  await assertPairFree(ctx, input.issuer, input.audience);
  return providers.create(ctx, { ...input, jwks_url });
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
  const fields = { ...patch };
  if (patch.issuer !== undefined || patch.audience !== undefined) {
    const [current] = await ctx.db
      .select()
      .from(schema.identityProviders)
      .where(and(eq(schema.identityProviders.id, id), eq(schema.identityProviders.org_id, ctx.actor.org_id)));
    if (current)
      await assertPairFree(ctx, patch.issuer ?? current.issuer, patch.audience ?? current.audience, id);
  }
  if (patch.jwks_url)
    fields.jwks_url = await assertSafeUpstreamUrl(patch.jwks_url, ctx.allowPrivateUpstreams);
  return providers.update(ctx, id, fields);
}

/** Stops trusting an issuer. */
export const deleteIdentityProvider = ({ ctx, id }: { ctx: VerbContext; id: string }): Promise<void> =>
  providers.remove(ctx, id);
