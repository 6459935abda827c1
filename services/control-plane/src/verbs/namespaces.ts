import { schema } from "@mcpgw/db";
import { and, eq } from "drizzle-orm";
import { authorize } from "../auth/permissions.ts";
import type { VerbContext } from "../context.ts";
import type { DataPlanes } from "../data-planes.ts";
import { AppError, conflict } from "../errors.ts";
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

export interface NamespaceConflictsDto {
  namespace_id: string;
  slug: string;
  tool_naming: "prefix" | "none";
  tool_separator: string;
  conflicts: Array<{ kind: string; name: string; servers: string[] }>;
  unavailable: Array<{ server: string; reason: string }>;
  /** The data plane that answered, and the org's snapshot version it answered from. */
  replica: string;
  snapshot_version: number;
}

/**
 * The names more than one server of a namespace offers (an unprefixed namespace serves the first
 * and hides the others) and the servers that could not be asked. Only a data plane knows the
 * servers' tools, so the first one to answer over the bus reports, for every enabled member and
 * whatever the policies (an admin view of the configuration, not of one caller's).
 */
export async function getNamespaceConflicts({
  ctx,
  id,
  dataPlanes,
}: {
  ctx: VerbContext;
  id: string;
  dataPlanes: DataPlanes;
}): Promise<NamespaceConflictsDto> {
  // Authorizes like reading the namespace; another org's id is not found.
  await getNamespace({ ctx, id });
  const [org] = await ctx.db
    .select({ version: schema.organizations.config_version })
    .from(schema.organizations)
    .where(eq(schema.organizations.id, ctx.actor.org_id));
  const answer = await dataPlanes.inspectNamespace({
    org_id: ctx.actor.org_id,
    namespace_id: id,
    min_version: org?.version ?? 0,
  });
  if (!answer)
    throw new AppError(
      "Unavailable",
      "no data plane answered in time: a namespace's conflicts are known only to a running data plane",
      { retry_after: 5 },
    );
  if (answer.status === "org_disabled")
    throw conflict("the organization is disabled: its namespaces are not served");
  if (answer.status !== "ok")
    throw new AppError("Unavailable", "the data planes have not received this namespace yet", {
      retry_after: 2,
    });
  return {
    namespace_id: answer.namespace.id,
    slug: answer.namespace.slug,
    tool_naming: answer.namespace.tool_naming,
    tool_separator: answer.namespace.tool_separator,
    conflicts: answer.conflicts,
    unavailable: answer.unavailable,
    replica: answer.replica,
    snapshot_version: answer.snapshot_version,
  };
}
