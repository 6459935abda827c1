import { schema, type Tx } from "@mcpgw/db";
import { checkCatalogEntry, StdioLaunchError, type StdioParameter } from "@mcpgw/snapshot";
import { eq, or } from "drizzle-orm";
import { recordAudit } from "../audit.ts";
import { authorize, authorizePlatformAdmin } from "../auth/permissions.ts";
import type { VerbContext } from "../context.ts";
import { assertChanges, conflict, notFound, validation } from "../errors.ts";
import { bumpOrgVersion } from "./config-version.ts";
import { type Page, type PageRequest, pageQuery, toPage } from "./pagination.ts";

type EntryRow = typeof schema.stdioCatalog.$inferSelect;

export interface CatalogEntryInput {
  slug: string;
  name: string;
  description?: string | null | undefined;
  command: string;
  args?: string[] | undefined;
  env?: Record<string, string> | undefined;
  parameters?: StdioParameter[] | undefined;
  enabled?: boolean | undefined;
}
export type CatalogEntryPatch = Partial<CatalogEntryInput>;

export interface CatalogEntryDto extends Omit<EntryRow, "created_at" | "updated_at"> {
  created_at: string;
  updated_at: string;
}

const toDto = (r: EntryRow): CatalogEntryDto => ({
  ...r,
  created_at: r.created_at.toISOString(),
  updated_at: r.updated_at.toISOString(),
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The entry an id or slug names (inside `tx` when given). */
export async function findCatalogEntry(db: Tx | VerbContext["db"], idOrSlug: string) {
  const [row] = await db
    .select()
    .from(schema.stdioCatalog)
    .where(
      UUID.test(idOrSlug)
        ? or(eq(schema.stdioCatalog.id, idOrSlug), eq(schema.stdioCatalog.slug, idOrSlug))
        : eq(schema.stdioCatalog.slug, idOrSlug),
    );
  return row;
}

function check(entry: Pick<CatalogEntryInput, "command" | "args" | "env" | "parameters">) {
  try {
    checkCatalogEntry({
      command: entry.command,
      args: entry.args ?? [],
      env: entry.env ?? {},
      parameters: entry.parameters ?? [],
    });
  } catch (err) {
    if (err instanceof StdioLaunchError) throw validation(err.message);
    throw err;
  }
}

/**
 * Every org with a server of the entry gets a new config version: data planes must launch
 * what the entry now says. Stored values must still fit the entry's declarations.
 */
async function republishUsers(tx: Tx, entry: EntryRow): Promise<string[]> {
  const servers = await tx
    .select({
      org_id: schema.mcpServers.org_id,
      name: schema.mcpServers.name,
      parameters: schema.mcpServers.parameters,
    })
    .from(schema.mcpServers)
    .where(eq(schema.mcpServers.catalog_entry_id, entry.id));
  for (const s of servers) {
    const unknown = Object.keys(s.parameters).find(
      (name) => !entry.parameters.some((p) => p.name === name && !p.secret),
    );
    if (unknown)
      throw conflict(
        `server '${s.name}' sets parameter '${unknown}', which the changed entry no longer declares as a plain parameter`,
      );
  }
  const orgs = [...new Set(servers.map((s) => s.org_id))];
  for (const org of orgs) await bumpOrgVersion(tx, org);
  return orgs;
}

/** Lists the catalog (anyone who may read servers: org admins choose entries from it). */
export async function listCatalog({
  ctx,
  page,
}: {
  ctx: VerbContext;
  page: PageRequest;
}): Promise<Page<CatalogEntryDto>> {
  authorize(ctx.actor, "servers:read");
  const q = pageQuery(schema.stdioCatalog, page);
  const rows = await ctx.db
    .select()
    .from(schema.stdioCatalog)
    .where(q.where)
    .orderBy(...q.orderBy)
    .limit(q.limit);
  return toPage(rows, page.limit, toDto);
}

/** One catalog entry by id or slug. */
export async function getCatalogEntry({ ctx, id }: { ctx: VerbContext; id: string }) {
  authorize(ctx.actor, "servers:read");
  const row = await findCatalogEntry(ctx.db, id);
  if (!row) throw notFound("catalog entry");
  return toDto(row);
}

/** Adds a launchable stdio server to the platform's catalog (platform administrators only). */
export async function createCatalogEntry({ ctx, input }: { ctx: VerbContext; input: CatalogEntryInput }) {
  authorizePlatformAdmin(ctx.actor, "only platform administrators define stdio commands");
  check(input);
  const row = await ctx.db.transaction(async (tx) => {
    if (await findCatalogEntry(tx, input.slug))
      throw conflict(`a catalog entry '${input.slug}' already exists`);
    const [created] = await tx
      .insert(schema.stdioCatalog)
      .values({
        slug: input.slug,
        name: input.name,
        description: input.description ?? null,
        command: input.command,
        args: input.args ?? [],
        env: input.env ?? {},
        parameters: input.parameters ?? [],
        enabled: input.enabled ?? true,
      })
      .returning();
    await recordAudit(tx, ctx, {
      action: "stdio_catalog.create",
      resource_type: "stdio_catalog",
      resource_id: created!.id,
      after: created,
    });
    return created!;
  });
  return toDto(row);
}

/** Changes an entry; every org using it gets the change on its data planes. */
export async function updateCatalogEntry({
  ctx,
  id,
  patch,
}: {
  ctx: VerbContext;
  id: string;
  patch: CatalogEntryPatch;
}) {
  authorizePlatformAdmin(ctx.actor, "only platform administrators define stdio commands");
  assertChanges(patch);
  const { row, orgs } = await ctx.db.transaction(async (tx) => {
    const before = await findCatalogEntry(tx, id);
    if (!before) throw notFound("catalog entry");
    const merged = { ...before, ...patch, description: patch.description ?? before.description };
    check(merged);
    if (patch.slug && patch.slug !== before.slug && (await findCatalogEntry(tx, patch.slug)))
      throw conflict(`a catalog entry '${patch.slug}' already exists`);
    const [after] = await tx
      .update(schema.stdioCatalog)
      .set(patch)
      .where(eq(schema.stdioCatalog.id, before.id))
      .returning();
    await recordAudit(tx, ctx, {
      action: "stdio_catalog.update",
      resource_type: "stdio_catalog",
      resource_id: before.id,
      before,
      after,
    });
    return { row: after!, orgs: await republishUsers(tx, after!) };
  });
  for (const org of orgs) ctx.publisher.notify(org);
  return toDto(row);
}

/** Removes an entry no server uses any more. */
export async function deleteCatalogEntry({ ctx, id }: { ctx: VerbContext; id: string }) {
  authorizePlatformAdmin(ctx.actor, "only platform administrators define stdio commands");
  await ctx.db.transaction(async (tx) => {
    const before = await findCatalogEntry(tx, id);
    if (!before) throw notFound("catalog entry");
    const [used] = await tx
      .select({ id: schema.mcpServers.id })
      .from(schema.mcpServers)
      .where(eq(schema.mcpServers.catalog_entry_id, before.id))
      .limit(1);
    if (used) throw conflict("servers still use this catalog entry; delete them first");
    await tx.delete(schema.stdioCatalog).where(eq(schema.stdioCatalog.id, before.id));
    await recordAudit(tx, ctx, {
      action: "stdio_catalog.delete",
      resource_type: "stdio_catalog",
      resource_id: before.id,
      before,
    });
  });
}
