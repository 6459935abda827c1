import type { schema } from "@mcpgw/db";
import { and, eq, type SQL } from "drizzle-orm";
import type { PgColumn, PgTable } from "drizzle-orm/pg-core";
import { recordAudit } from "../audit.ts";
import { authorize, type Permission } from "../auth/permissions.ts";
import type { VerbContext } from "../context.ts";
import { assertChanges, conflict, notFound } from "../errors.ts";
import { bumpOrgVersion } from "./config-version.ts";
import { type Page, type PageRequest, pageQuery, toPage } from "./pagination.ts";

/** A table of rows that belong to one organization. */
type OrgTable = PgTable & { id: PgColumn; org_id: PgColumn; created_at: PgColumn; name?: PgColumn };

export interface OrgResourceOptions<Row, Dto> {
  table: OrgTable;
  /** Audit resource type and action prefix, e.g. `policy` → `policy.create`. */
  resource: string;
  /** How errors name it, e.g. "identity provider". */
  label: string;
  read: Permission;
  write: Permission;
  toDto: (row: Row) => Dto;
  /** Whether a change goes into the org's snapshot (bump the config version and publish). */
  inSnapshot: boolean;
}

/**
 * The verbs every org-scoped resource shares: list with cursors, get, create, update and delete,
 * each authorized, each mutation audited and versioned in its own transaction. Resources add
 * their own checks before calling them.
 */
export function orgResource<Row extends { id: string; created_at: Date }, Dto>(
  o: OrgResourceOptions<Row, Dto>,
) {
  // Drizzle's builders are typed per table; this helper is typed by Row at its edges instead.
  const t = o.table as typeof schema.policies;
  const inOrg = (ctx: VerbContext, id: string): SQL => and(eq(t.id, id), eq(t.org_id, ctx.actor.org_id))!;
  const changed = async (
    ctx: VerbContext,
    work: (tx: Parameters<Parameters<VerbContext["db"]["transaction"]>[0]>[0]) => Promise<Row>,
  ) => {
    const row = await ctx.db.transaction(async (tx) => {
      const r = await work(tx);
      if (o.inSnapshot) await bumpOrgVersion(tx, ctx.actor.org_id);
      return r;
    });
    if (o.inSnapshot) ctx.publisher.notify(ctx.actor.org_id);
    return row;
  };

  return {
    async list(ctx: VerbContext, page: PageRequest): Promise<Page<Dto>> {
      authorize(ctx.actor, o.read);
      const q = pageQuery(t, page);
      const rows = (await ctx.db
        .select()
        .from(t)
        .where(and(eq(t.org_id, ctx.actor.org_id), q.where))
        .orderBy(...q.orderBy)
        .limit(q.limit)) as unknown as Row[];
      return toPage(rows, page.limit, o.toDto);
    },

    async get(ctx: VerbContext, id: string): Promise<Dto> {
      authorize(ctx.actor, o.read);
      const [row] = (await ctx.db.select().from(t).where(inOrg(ctx, id))) as unknown as Row[];
      if (!row) throw notFound(o.label);
      return o.toDto(row);
    },

    /** Refuses a second row of the same `name` in the org. */
    async assertNameFree(ctx: VerbContext, name: string, exceptId?: string): Promise<void> {
      const [dup] = await ctx.db
        .select({ id: t.id })
        .from(t)
        .where(and(eq(t.org_id, ctx.actor.org_id), eq(t.name, name)));
      if (dup && dup.id !== exceptId) throw conflict(`a ${o.label} named '${name}' already exists`);
    },

    async create(ctx: VerbContext, values: Record<string, unknown>): Promise<Dto> {
      authorize(ctx.actor, o.write);
      const row = await changed(ctx, async (tx) => {
        const [created] = (await tx
          .insert(t)
          .values({ ...values, org_id: ctx.actor.org_id } as never)
          .returning()) as unknown as Row[];
        await recordAudit(tx, ctx, {
          action: `${o.resource}.create`,
          resource_type: o.resource,
          resource_id: created!.id,
          after: created,
        });
        return created!;
      });
      return o.toDto(row);
    },

    async update(ctx: VerbContext, id: string, patch: Record<string, unknown>): Promise<Dto> {
      authorize(ctx.actor, o.write);
      assertChanges(patch);
      const row = await changed(ctx, async (tx) => {
        const [before] = await tx.select().from(t).where(inOrg(ctx, id)).for("update");
        if (!before) throw notFound(o.label);
        const [after] = (await tx
          .update(t)
          .set(patch as never)
          .where(inOrg(ctx, id))
          .returning()) as unknown as Row[];
        await recordAudit(tx, ctx, {
          action: `${o.resource}.update`,
          resource_type: o.resource,
          resource_id: id,
          before,
          after,
        });
        return after!;
      });
      return o.toDto(row);
    },

    async remove(ctx: VerbContext, id: string): Promise<void> {
      authorize(ctx.actor, o.write);
      await changed(ctx, async (tx) => {
        const [before] = (await tx.delete(t).where(inOrg(ctx, id)).returning()) as unknown as Row[];
        if (!before) throw notFound(o.label);
        await recordAudit(tx, ctx, {
          action: `${o.resource}.delete`,
          resource_type: o.resource,
          resource_id: id,
          before,
        });
        return before;
      });
    },
  };
}
