import { schema } from "@mcpgw/db";
import { and, desc, eq, gte, lt, lte, or } from "drizzle-orm";
import { authorize } from "../auth/permissions.ts";
import type { VerbContext } from "../context.ts";
import { validation } from "../errors.ts";
import type { Page } from "./pagination.ts";

type AuditRow = typeof schema.auditLogs.$inferSelect;

export interface AuditLogDto {
  id: string;
  org_id: string | null;
  actor_type: string;
  actor_id: string | null;
  action: string;
  resource_type: string;
  resource_id: string | null;
  ip: string | null;
  request_id: string | null;
  user_agent: string | null;
  diff: { before?: unknown; after?: unknown };
  created_at: string;
}

const toDto = (r: AuditRow): AuditLogDto => ({
  id: r.id,
  org_id: r.org_id,
  actor_type: r.actor_type,
  actor_id: r.actor_id,
  action: r.action,
  resource_type: r.resource_type,
  resource_id: r.resource_id,
  ip: r.ip,
  request_id: r.request_id,
  user_agent: r.user_agent,
  diff: r.diff,
  created_at: r.created_at.toISOString(),
});

export interface AuditQuery {
  actor_id?: string | undefined;
  action?: string | undefined;
  resource_type?: string | undefined;
  resource_id?: string | undefined;
  since?: string | undefined;
  until?: string | undefined;
  cursor?: string | undefined;
  limit?: number | undefined;
}

/** The org's audit trail, newest first, filtered by actor, action, resource and time. */
export async function listAuditLogs({
  ctx,
  query,
}: {
  ctx: VerbContext;
  query: AuditQuery;
}): Promise<Page<AuditLogDto>> {
  authorize(ctx.actor, "audit:read");
  const limit = Math.min(Math.max(query.limit ?? 50, 1), 200);
  let after: SQLCursor | undefined;
  if (query.cursor) {
    try {
      const [t, id] = JSON.parse(Buffer.from(query.cursor, "base64url").toString()) as [string, string];
      if (typeof t !== "string" || typeof id !== "string" || Number.isNaN(Date.parse(t))) throw new Error();
      after = { t: new Date(t), id };
    } catch {
      throw validation("invalid cursor");
    }
  }
  const a = schema.auditLogs;
  const rows = await ctx.db
    .select()
    .from(a)
    .where(
      and(
        eq(a.org_id, ctx.actor.org_id),
        query.actor_id ? eq(a.actor_id, query.actor_id) : undefined,
        query.action ? eq(a.action, query.action) : undefined,
        query.resource_type ? eq(a.resource_type, query.resource_type) : undefined,
        query.resource_id ? eq(a.resource_id, query.resource_id) : undefined,
        query.since ? gte(a.created_at, new Date(query.since)) : undefined,
        query.until ? lte(a.created_at, new Date(query.until)) : undefined,
        after ? or(lt(a.created_at, after.t), and(eq(a.created_at, after.t), lt(a.id, after.id))) : undefined,
      ),
    )
    .orderBy(desc(a.created_at), desc(a.id))
    .limit(limit + 1);
  const items = rows.slice(0, limit);
  const last = items.at(-1);
  return {
    items: items.map(toDto),
    next_cursor:
      rows.length > limit && last
        ? Buffer.from(JSON.stringify([last.created_at.toISOString(), last.id])).toString("base64url")
        : null,
  };
}

interface SQLCursor {
  t: Date;
  id: string;
}
