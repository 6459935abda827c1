import { schema } from "@mcpgw/db";
import { and, eq } from "drizzle-orm";
import { authorize } from "../auth/permissions.ts";
import type { VerbContext } from "../context.ts";
import { conflict } from "../errors.ts";
import { orgResource } from "./org-resource.ts";
import type { Page, PageRequest } from "./pagination.ts";

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

const namespaces = orgResource({
  table: schema.namespaces,
  resource: "namespace",
  label: "namespace",
  read: "namespaces:read",
  write: "namespaces:write",
  toDto: toNamespaceDto,
  inSnapshot: true,
});

/** Lists the namespaces of the actor's org. */
export const listNamespaces = ({
  ctx,
  page,
}: {
  ctx: VerbContext;
  page: PageRequest;
}): Promise<Page<NamespaceDto>> => namespaces.list(ctx, page);

/** One namespace of the actor's org. */
export const getNamespace = ({ ctx, id }: { ctx: VerbContext; id: string }): Promise<NamespaceDto> =>
  namespaces.get(ctx, id);

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
  return namespaces.create(ctx, { ...input });
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
  if (input.slug) await assertSlugFree(ctx, input.slug, id);
  return namespaces.update(ctx, id, { ...input });
}

/** Deletes a namespace and, by cascade, its servers. */
export const deleteNamespace = ({ ctx, id }: { ctx: VerbContext; id: string }): Promise<void> =>
  namespaces.remove(ctx, id);
