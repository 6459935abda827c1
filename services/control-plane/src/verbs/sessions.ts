import { schema } from "@mcpgw/db";
import { and, desc, eq, lt, or } from "drizzle-orm";
import { authorize } from "../auth/permissions.ts";
import type { VerbContext } from "../context.ts";
import { notFound, validation } from "../errors.ts";
import type { Page } from "./pagination.ts";

type SessionRow = typeof schema.mcpSessions.$inferSelect;

export interface SessionDto {
  id: string;
  session_id: string;
  namespace_id: string | null;
  server_id: string | null;
  status: string;
  transport: string;
  protocol_version: string | null;
  client_info: Record<string, unknown> | null;
  principal: string | null;
  replica: string | null;
  process_pid: number | null;
  process_status: string | null;
  started_at: string;
  last_seen_at: string | null;
  ended_at: string | null;
}

const toDto = (r: SessionRow): SessionDto => ({
  id: r.id,
  session_id: r.session_id,
  namespace_id: r.namespace_id,
  server_id: r.server_id,
  status: r.status,
  transport: r.transport,
  protocol_version: r.protocol_version,
  client_info: r.client_info ?? null,
  principal: r.principal,
  replica: r.replica,
  process_pid: r.process_pid,
  process_status: r.process_status,
  started_at: r.started_at.toISOString(),
  last_seen_at: r.last_seen_at?.toISOString() ?? null,
  ended_at: r.ended_at?.toISOString() ?? null,
});

/** MCP sessions of a namespace (as reported by data planes through the worker), newest first. */
export async function listNamespaceSessions({
  ctx,
  namespaceId,
  query,
}: {
  ctx: VerbContext;
  namespaceId: string;
  query: { status?: "active" | "ended" | undefined; cursor?: string | undefined; limit?: number | undefined };
}): Promise<Page<SessionDto>> {
  authorize(ctx.actor, "namespaces:read");
  const [ns] = await ctx.db
    .select({ id: schema.namespaces.id })
    .from(schema.namespaces)
    .where(and(eq(schema.namespaces.id, namespaceId), eq(schema.namespaces.org_id, ctx.actor.org_id)));
  if (!ns) throw notFound("namespace");
  const limit = Math.min(Math.max(query.limit ?? 50, 1), 200);
  let after: { t: Date; id: string } | undefined;
  if (query.cursor) {
    try {
      const [t, id] = JSON.parse(Buffer.from(query.cursor, "base64url").toString()) as [string, string];
      if (typeof t !== "string" || typeof id !== "string" || Number.isNaN(Date.parse(t))) throw new Error();
      after = { t: new Date(t), id };
    } catch {
      throw validation("invalid cursor");
    }
  }
  const s = schema.mcpSessions;
  const rows = await ctx.db
    .select()
    .from(s)
    .where(
      and(
        eq(s.org_id, ctx.actor.org_id),
        eq(s.namespace_id, namespaceId),
        query.status ? eq(s.status, query.status) : undefined,
        after ? or(lt(s.started_at, after.t), and(eq(s.started_at, after.t), lt(s.id, after.id))) : undefined,
      ),
    )
    .orderBy(desc(s.started_at), desc(s.id))
    .limit(limit + 1);
  const items = rows.slice(0, limit);
  const last = items.at(-1);
  return {
    items: items.map(toDto),
    next_cursor:
      rows.length > limit && last
        ? Buffer.from(JSON.stringify([last.started_at.toISOString(), last.id])).toString("base64url")
        : null,
  };
}
