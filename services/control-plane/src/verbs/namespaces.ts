import { schema } from "@mcpgw/db";
import { and, eq } from "drizzle-orm";
import { recordAudit } from "../audit.ts";
import { authorize } from "../auth/permissions.ts";
import type { VerbContext } from "../context.ts";
import { assertChanges, conflict, notFound } from "../errors.ts";
import { bumpOrgVersion } from "./config-version.ts";
import { type Page, type PageRequest, pageQuery, toPage } from "./pagination.ts";

type NamespaceRow = typeof schema.namespaces.$inferSelect;

export interface NamespaceDto {
  id: string;
  org_id: string;
  name: string;
  slug: string;
  description: string | null;
  tool_naming: "prefix" | "none";
  tool_separator: string;
  metadata: Record<string, unknown>;
  created_at: string;
  updated_at: string;
}

/** The API shape of a namespace. */
export function toNamespaceDto(r: NamespaceRow): NamespaceDto {
  return {
    id: r.id,
    org_id: r.org_id,
    name: r.name,
    slug: r.slug,
    description: r.description,
    tool_naming: r.tool_naming,
    tool_separator: r.tool_separator,
    metadata: r.metadata,
    created_at: r.created_at.toISOString(),
    updated_at: r.updated_at.toISOString(),
  };
}

export interface NamespaceInput {
  name: string;
  slug: string;
  description?: string | null | undefined;
  tool_naming?: "prefix" | "none" | undefined;
  tool_separator?: string | undefined;
  metadata?: Record<string, unknown> | undefined;
}

const inOrg = (ctx: VerbContext, id: string) =>
  and(eq(schema.namespaces.id, id), eq(schema.namespaces.org_id, ctx.actor.org_id));

/** Lists the namespaces of the actor's org. */
export async function listNamespaces({
  ctx,
  page,
}: {
  ctx: VerbContext;
  page: PageRequest;
}): Promise<Page<NamespaceDto>> {
  authorize(ctx.actor, "namespaces:read");
  const q = pageQuery(schema.namespaces, page);
  const rows = await ctx.db
    .select()
    .from(schema.namespaces)
    .where(and(eq(schema.namespaces.org_id, ctx.actor.org_id), q.where))
    .orderBy(...q.orderBy)
    .limit(q.limit);
  return toPage(rows, page.limit, toNamespaceDto);
}

/** One namespace of the actor's org. */
export async function getNamespace({ ctx, id }: { ctx: VerbContext; id: string }): Promise<NamespaceDto> {
  authorize(ctx.actor, "namespaces:read");
  const [row] = await ctx.db.select().from(schema.namespaces).where(inOrg(ctx, id));
  if (!row) throw notFound("namespace");
  return toNamespaceDto(row);
}

async function assertSlugFree(ctx: VerbContext, slug: string, exceptId?: string) {
  const [existing] = await ctx.db
    .select({ id: schema.namespaces.id })
    .from(schema.namespaces)
    .where(and(eq(schema.namespaces.org_id, ctx.actor.org_id), eq(schema.namespaces.slug, slug)));
  if (existing && existing.id !== exceptId) throw conflict(`namespace slug '${slug}' is already taken`);
}

/** Creates a namespace. */
export async function createNamespace({
  ctx,
  input,
}: {
  ctx: VerbContext;
  input: NamespaceInput;
}): Promise<NamespaceDto> {
  authorize(ctx.actor, "namespaces:write");
  await assertSlugFree(ctx, input.slug);
  const row = await ctx.db.transaction(async (tx) => {
    const [created] = await tx
      .insert(schema.namespaces)
      .values({ ...input, org_id: ctx.actor.org_id })
      .returning();
    await recordAudit(tx, ctx, {
      action: "namespace.create",
      resource_type: "namespace",
      resource_id: created!.id,
      after: created,
    });
    await bumpOrgVersion(tx, ctx.actor.org_id);
    return created!;
  });
  ctx.publisher.notify(ctx.actor.org_id);
  return toNamespaceDto(row);
}

/** Updates a namespace's fields. */
export async function updateNamespace({
  ctx,
  id,
  input,
}: {
  ctx: VerbContext;
  id: string;
  input: Partial<NamespaceInput>;
}): Promise<NamespaceDto> {
  authorize(ctx.actor, "namespaces:write");
  assertChanges(input);
  if (input.slug) await assertSlugFree(ctx, input.slug, id);
  const row = await ctx.db.transaction(async (tx) => {
    const [before] = await tx.select().from(schema.namespaces).where(inOrg(ctx, id)).for("update");
    if (!before) throw notFound("namespace");
    const [after] = await tx.update(schema.namespaces).set(input).where(inOrg(ctx, id)).returning();
    await recordAudit(tx, ctx, {
      action: "namespace.update",
      resource_type: "namespace",
      resource_id: id,
      before,
      after,
    });
    await bumpOrgVersion(tx, ctx.actor.org_id);
    return after!;
  });
  ctx.publisher.notify(ctx.actor.org_id);
  return toNamespaceDto(row);
}

/** Deletes a namespace and, by cascade, its servers. */
export async function deleteNamespace({ ctx, id }: { ctx: VerbContext; id: string }): Promise<void> {
  authorize(ctx.actor, "namespaces:write");
  await ctx.db.transaction(async (tx) => {
    const [before] = await tx.delete(schema.namespaces).where(inOrg(ctx, id)).returning();
    if (!before) throw notFound("namespace");
    await recordAudit(tx, ctx, {
      action: "namespace.delete",
      resource_type: "namespace",
      resource_id: id,
      before,
    });
    await bumpOrgVersion(tx, ctx.actor.org_id);
  });
  ctx.publisher.notify(ctx.actor.org_id);
}
