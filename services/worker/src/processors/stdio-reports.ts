import { type Db, schema } from "@mcpgw/db";
import type { StdioReportsPayload } from "@mcpgw/queue";
import { and, eq, sql } from "drizzle-orm";

/**
 * A data plane's report older than this no longer counts towards a server's status, and is
 * dropped: data planes say everything again every 10 minutes, so this is three heartbeats
 * (a replica that is gone stops counting; a rolling deploy's old ids do not pile up).
 */
const STALE_MS = 30 * 60_000;

/**
 * The `stdio-reports` processor: keeps each data plane's last word on each stdio server
 * (`mcp_servers.data_plane_reports`, by replica) and derives the server's status from them:
 * healthy while some data plane can run it; unhealthy, with the first reason, when every data
 * plane that reported refuses it (allowlist, isolation) or sees it crash at start.
 */
export function stdioReportsProcessor(deps: { db: Db }) {
  return async ({ replica, reports }: StdioReportsPayload): Promise<void> => {
    for (const r of reports) {
      const entry = { [replica]: { ok: r.ok, error: r.error, at: r.at } };
      await deps.db.transaction(async (tx) => {
        const [row] = await tx
          .update(schema.mcpServers)
          .set({
            // Jobs may run out of order: an older report never replaces a newer one.
            data_plane_reports: sql`CASE WHEN coalesce(${schema.mcpServers.data_plane_reports} -> ${replica} ->> 'at', '') > ${r.at}
              THEN ${schema.mcpServers.data_plane_reports}
              ELSE ${schema.mcpServers.data_plane_reports} || ${JSON.stringify(entry)}::jsonb END`,
          })
          .where(and(eq(schema.mcpServers.id, r.server_id), eq(schema.mcpServers.transport, "stdio")))
          .returning({ reports: schema.mcpServers.data_plane_reports });
        if (!row) return; // deleted since, or not a stdio server
        const fresh = Object.entries(row.reports).filter(([, d]) => Date.parse(d.at) > Date.now() - STALE_MS);
        await tx
          .update(schema.mcpServers)
          .set({ ...statusOf(fresh), data_plane_reports: Object.fromEntries(fresh) })
          .where(eq(schema.mcpServers.id, r.server_id));
      });
    }
  };
}

/** A stdio server's status from the data planes' fresh reports. */
function statusOf(fresh: Array<[string, { ok: boolean; error: string | null }]>) {
  if (fresh.length === 0) return { status: "unknown" as const, last_error: null };
  if (fresh.some(([, d]) => d.ok)) return { status: "healthy" as const, last_error: null };
  const [replica, first] = fresh.sort(([a], [b]) => a.localeCompare(b))[0]!;
  const who = fresh.length > 1 ? `every data plane refuses or fails it; ${replica}` : replica;
  return {
    status: "unhealthy" as const,
    last_error: `${who}: ${first.error ?? "cannot run it"}`.slice(0, 500),
  };
}
