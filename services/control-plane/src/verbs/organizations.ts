import { schema } from "@mcpgw/db";
import type { PolicyEffect } from "@mcpgw/policy";
import { eq } from "drizzle-orm";
import { recordAudit } from "../audit.ts";
import { hashPassword } from "../auth/passwords.ts";
import { authorizePlatformAdmin } from "../auth/permissions.ts";
import type { VerbContext } from "../context.ts";
import { assertChanges, conflict, notFound } from "../errors.ts";
import { bumpOrgVersion } from "./config-version.ts";
import { type Page, type PageRequest, pageQuery, toPage } from "./pagination.ts";

type OrgRow = typeof schema.organizations.$inferSelect;

export interface OrganizationDto {
  id: string;
  name: string;
  slug: string;
  plan: string;
  max_servers: number;
  max_sessions: number;
  log_retention_days: number;
  active: boolean;
  policy_default: PolicyEffect;
  config_version: number;
  published_version: number;
  created_at: string;
  updated_at: string;
}

const toDto = (o: OrgRow): OrganizationDto => ({
  id: o.id,
  name: o.name,
  slug: o.slug,
  plan: o.plan,
  max_servers: o.max_servers,
  max_sessions: o.max_sessions,
  log_retention_days: o.log_retention_days,
  active: o.active,
  policy_default: o.policy_default,
  config_version: o.config_version,
  published_version: o.published_version,
  created_at: o.created_at.toISOString(),
  updated_at: o.updated_at.toISOString(),
});

export interface OrganizationInput {
  name: string;
  slug: string;
  plan?: string | undefined;
  max_servers?: number | undefined;
  max_sessions?: number | undefined;
  log_retention_days?: number | undefined;
  active?: boolean | undefined;
  policy_default?: PolicyEffect | undefined;
  /** The new org's first admin. */
  admin?: { email: string; password: string; name?: string | undefined } | undefined;
}

/** Lists every organization (platform administrators only). */
export async function listOrganizations({
  ctx,
  page,
}: {
  ctx: VerbContext;
  page: PageRequest;
}): Promise<Page<OrganizationDto>> {
  authorizePlatformAdmin(ctx.actor);
  const q = pageQuery(schema.organizations, page);
  const rows = await ctx.db
    .select()
    .from(schema.organizations)
    .where(q.where)
    .orderBy(...q.orderBy)
    .limit(q.limit);
  return toPage(rows, page.limit, toDto);
}

/** One organization: platform administrators see any, everyone else only their own. */
export async function getOrganization({
  ctx,
  id,
}: {
  ctx: VerbContext;
  id: string;
}): Promise<OrganizationDto> {
  if (!ctx.actor.platform_admin && id !== ctx.actor.org_id) throw notFound("organization");
  const [row] = await ctx.db.select().from(schema.organizations).where(eq(schema.organizations.id, id));
  if (!row) throw notFound("organization");
  return toDto(row);
}

/** Creates an organization, optionally with its first admin. */
export async function createOrganization({
  ctx,
  input,
}: {
  ctx: VerbContext;
  input: OrganizationInput;
}): Promise<OrganizationDto> {
  authorizePlatformAdmin(ctx.actor);
  const { admin, ...fields } = input;
  const [taken] = await ctx.db
    .select({ id: schema.organizations.id })
    .from(schema.organizations)
    .where(eq(schema.organizations.slug, input.slug));
  if (taken) throw conflict(`organization slug '${input.slug}' is already taken`);
  if (admin) {
    const [user] = await ctx.db
      .select({ id: schema.users.id })
      .from(schema.users)
      .where(eq(schema.users.email, admin.email));
    if (user) throw conflict("a user with the admin's email already exists");
  }
  const passwordHash = admin ? await hashPassword(admin.password) : null;
  const row = await ctx.db.transaction(async (tx) => {
    const [org] = await tx.insert(schema.organizations).values(fields).returning();
    await recordAudit(tx, ctx, {
      org_id: org!.id,
      action: "organization.create",
      resource_type: "organization",
      resource_id: org!.id,
      after: org,
    });
    if (admin) {
      const [user] = await tx
        .insert(schema.users)
        .values({
          org_id: org!.id,
          email: admin.email,
          name: admin.name ?? "",
          password_hash: passwordHash,
          role: "admin",
        })
        .returning();
      await recordAudit(tx, ctx, {
        org_id: org!.id,
        action: "user.create",
        resource_type: "user",
        resource_id: user!.id,
        after: user,
      });
    }
    return org!;
  });
  ctx.publisher.notify(row.id);
  return toDto(row);
}

/** Changes an organization's plan, limits, default policy or activity. */
export async function updateOrganization({
  ctx,
  id,
  patch,
}: {
  ctx: VerbContext;
  id: string;
  patch: Partial<Omit<OrganizationInput, "admin">>;
}): Promise<OrganizationDto> {
  authorizePlatformAdmin(ctx.actor);
  assertChanges(patch);
  const row = await ctx.db.transaction(async (tx) => {
    const [before] = await tx
      .select()
      .from(schema.organizations)
      .where(eq(schema.organizations.id, id))
      .for("update");
    if (!before) throw notFound("organization");
    const [after] = await tx
      .update(schema.organizations)
      .set(patch)
      .where(eq(schema.organizations.id, id))
      .returning();
    await recordAudit(tx, ctx, {
      org_id: id,
      action: "organization.update",
      resource_type: "organization",
      resource_id: id,
      before,
      after,
    });
    await bumpOrgVersion(tx, id);
    return after!;
  });
  ctx.publisher.notify(id);
  return toDto({ ...row, config_version: row.config_version + 1 });
}

/** Deletes an organization and everything in it. */
export async function deleteOrganization({ ctx, id }: { ctx: VerbContext; id: string }): Promise<void> {
  authorizePlatformAdmin(ctx.actor);
  if (id === ctx.actor.org_id) throw conflict("you cannot delete your own organization");
  await ctx.db.transaction(async (tx) => {
    const [before] = await tx.delete(schema.organizations).where(eq(schema.organizations.id, id)).returning();
    if (!before) throw notFound("organization");
    // The org's own audit rows go with it; this one is kept in the actor's org.
    await recordAudit(tx, ctx, {
      action: "organization.delete",
      resource_type: "organization",
      resource_id: id,
      before,
    });
  });
  ctx.publisher.notify(id);
}
