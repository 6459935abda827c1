import { type Db, schema } from "@mcpgw/db";
import type { SessionEventsPayload } from "@mcpgw/queue";
import { sql } from "drizzle-orm";

/**
 * The `session-events` processor: keeps one `mcp_sessions` row per session. Idempotent (keyed
 * by session id; replays change nothing) and order-tolerant: an end that arrives before its
 * start still leaves the session ended.
 */
export function sessionEventsProcessor(deps: { db: Db }) {
  return async ({ events }: SessionEventsPayload): Promise<void> => {
    for (const e of events) {
      const at = new Date(e.at);
      const ended = e.event === "end";
      await deps.db
        .insert(schema.mcpSessions)
        .values({
          session_id: e.session_id,
          org_id: e.org_id,
          namespace_id: e.namespace_id,
          server_id: e.server_id,
          transport: e.transport,
          protocol_version: e.protocol_version,
          client_info: e.client_info,
          principal: e.principal,
          replica: e.replica,
          process_pid: e.process_pid,
          process_status: e.process_pid ? (ended ? "exited" : "running") : null,
          status: ended ? "ended" : "active",
          started_at: at,
          last_seen_at: at,
          ended_at: ended ? at : null,
        })
        .onConflictDoUpdate({
          target: schema.mcpSessions.session_id,
          set: ended
            ? {
                status: "ended",
                ended_at: at,
                last_seen_at: at,
                process_status: sql`case when ${schema.mcpSessions.process_pid} is null then null else 'exited' end`,
              }
            : {
                last_seen_at: at,
                protocol_version: sql`coalesce(excluded.protocol_version, ${schema.mcpSessions.protocol_version})`,
              },
        });
    }
  };
}
