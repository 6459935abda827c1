import { type Db, schema } from "@mcpgw/db";
import { type JobRunner, jobs } from "@mcpgw/queue";
import { and, eq, inArray } from "drizzle-orm";

const PREFIX = "health:";

/**
 * The `health-sweep` processor: keeps exactly one repeating health check per enabled HTTP/SSE
 * server, at the server's own interval, and drops schedules of servers gone or disabled.
 */
export function healthSweepProcessor(deps: { db: Db; runner: JobRunner }) {
  const intervals = new Map<string, number>();
  return async (): Promise<void> => {
    const servers = await deps.db
      .select({ id: schema.mcpServers.id, interval: schema.mcpServers.health_check_interval_s })
      .from(schema.mcpServers)
      .where(
        and(
          eq(schema.mcpServers.enabled, true),
          eq(schema.mcpServers.health_check_enabled, true),
          inArray(schema.mcpServers.transport, ["streamable_http", "sse"]),
        ),
      );
    const wanted = new Set(servers.map((s) => `${PREFIX}${s.id}`));
    for (const s of servers) {
      const id = `${PREFIX}${s.id}`;
      const everyMs = s.interval * 1000;
      if (intervals.get(id) === everyMs) continue;
      await deps.runner.schedule(id, everyMs, jobs.healthCheck, { server_id: s.id });
      await deps.runner.enqueue(jobs.healthCheck, { server_id: s.id });
      intervals.set(id, everyMs);
    }
    for (const id of await deps.runner.scheduleIds()) {
      if (id.startsWith(PREFIX) && !wanted.has(id)) {
        await deps.runner.unschedule(id);
        intervals.delete(id);
      }
    }
  };
}
