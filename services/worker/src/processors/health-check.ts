import type { KvBucket } from "@mcpgw/bus";
import { type Db, schema } from "@mcpgw/db";
import type { HealthCheckPayload } from "@mcpgw/queue";
import type { Logger } from "@mcpgw/telemetry";
import type { UpstreamCredentials } from "@mcpgw/upstream-credentials";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { eq } from "drizzle-orm";

export interface HealthCheckDeps {
  db: Db;
  health: KvBucket;
  logger: Logger;
  /** The gateway's own credentials for upstreams that require them. */
  credentials: UpstreamCredentials;
}

export interface HealthResult {
  status: "healthy" | "unhealthy";
  latency_ms: number;
  error: string | null;
}

/** MCP initialize + ping against one endpoint, bounded by `timeoutMs`. */
export async function probeMcpEndpoint(
  url: string,
  transport: "streamable_http" | "sse",
  timeoutMs: number,
  headers: Record<string, string> = {},
): Promise<HealthResult> {
  const started = performance.now();
  const client = new Client({ name: "mcpgw-health-check", version: "1.0.0" });
  const abort = AbortSignal.timeout(timeoutMs);
  const t: Transport =
    transport === "sse"
      ? new SSEClientTransport(new URL(url), { requestInit: { signal: abort, headers } })
      : new StreamableHTTPClientTransport(new URL(url), { requestInit: { signal: abort, headers } });
  try {
    await client.connect(t, { timeout: timeoutMs, signal: abort });
    await client.ping({ timeout: timeoutMs, signal: abort });
    return { status: "healthy", latency_ms: Math.round(performance.now() - started), error: null };
  } catch (err) {
    const message = abort.aborted
      ? `no answer within ${timeoutMs} ms`
      : (err as Error).message || String(err);
    return {
      status: "unhealthy",
      latency_ms: Math.round(performance.now() - started),
      error: message.slice(0, 500),
    };
  } finally {
    if (t instanceof StreamableHTTPClientTransport) await t.terminateSession().catch(() => {});
    await client.close().catch(() => {});
  }
}

/** The `health-check` processor: probes a server, records the result and publishes it to data planes. */
export function healthCheckProcessor(deps: HealthCheckDeps) {
  return async ({ server_id }: HealthCheckPayload): Promise<void> => {
    const [server] = await deps.db
      .select()
      .from(schema.mcpServers)
      .where(eq(schema.mcpServers.id, server_id));
    // Deleted or disabled since it was scheduled: nothing to check (the sweep drops the schedule).
    if (!server?.enabled || !server.health_check_enabled) return;
    if (server.transport !== "streamable_http" && server.transport !== "sse") return;
    let headers: Record<string, string> | undefined;
    try {
      headers = await deps.credentials.headersFor(server);
    } catch (err) {
      deps.logger.warn(
        { server: server.id, reason: (err as Error).message },
        "health check cannot open upstream credentials",
      );
    }
    const results = await Promise.all(
      server.endpoints.map((e) =>
        probeMcpEndpoint(
          e.url,
          server.transport as "streamable_http" | "sse",
          server.health_check_timeout_ms,
          headers,
        ),
      ),
    );
    // A server is healthy while any of its endpoints is.
    const healthy = results.find((r) => r.status === "healthy");
    const result = healthy ??
      results[0] ?? { status: "unhealthy" as const, latency_ms: 0, error: "no endpoints" };
    const checkedAt = new Date();
    await deps.db.transaction(async (tx) => {
      await tx.insert(schema.healthChecks).values({
        org_id: server.org_id,
        server_id: server.id,
        status: result.status,
        latency_ms: result.latency_ms,
        error: result.error,
        checked_at: checkedAt,
      });
      await tx
        .update(schema.mcpServers)
        .set({ status: result.status, last_health_check_at: checkedAt })
        .where(eq(schema.mcpServers.id, server.id));
    });
    await deps.health.put(
      `server.${server.id}`,
      JSON.stringify({
        server_id: server.id,
        org_id: server.org_id,
        ...result,
        checked_at: checkedAt.toISOString(),
      }),
    );
    if (result.status !== server.status) {
      deps.logger.info(
        { server: server.id, from: server.status, to: result.status, error: result.error },
        "server health changed",
      );
    }
  };
}
