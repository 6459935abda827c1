import type { KvBucket } from "@mcpgw/bus";
import { type Db, schema } from "@mcpgw/db";
import { EGRESS_REFUSED, egressAgent, egressFetch } from "@mcpgw/egress";
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
  /** `MCPGW_ALLOW_PRIVATE_UPSTREAMS`: probes pass the egress rules at connect time otherwise. */
  allowPrivateUpstreams: boolean;
}

export interface HealthResult {
  status: "healthy" | "unhealthy";
  latency_ms: number;
  error: string | null;
}

/** MCP initialize + ping against one endpoint, bounded by `timeoutMs`, over an egress-checked `fetch`. */
export async function probeMcpEndpoint(
  url: string,
  transport: "streamable_http" | "sse",
  o: { timeoutMs: number; headers?: Record<string, string> | undefined; fetch: typeof globalThis.fetch },
): Promise<HealthResult> {
  const { timeoutMs, headers = {}, fetch } = o;
  const started = performance.now();
  const client = new Client({ name: "mcpgw-health-check", version: "1.0.0" });
  const abort = AbortSignal.timeout(timeoutMs);
  const t: Transport =
    transport === "sse"
      ? new SSEClientTransport(new URL(url), { requestInit: { signal: abort, headers }, fetch })
      : new StreamableHTTPClientTransport(new URL(url), { requestInit: { signal: abort, headers }, fetch });
  try {
    await client.connect(t, { timeout: timeoutMs, signal: abort });
    await client.ping({ timeout: timeoutMs, signal: abort });
    return { status: "healthy", latency_ms: Math.round(performance.now() - started), error: null };
  } catch (err) {
    const message = abort.aborted
      ? `no answer within ${timeoutMs} ms`
      : (egressRefusal(err)?.slice(0, 200) ?? probeFailure(err));
    return {
      status: "unhealthy",
      latency_ms: Math.round(performance.now() - started),
      error: message,
    };
  } finally {
    if (t instanceof StreamableHTTPClientTransport) await t.terminateSession().catch(() => {});
    await client.close().catch(() => {});
  }
}

const CONNECT_ERRORS: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "host name lookup failed",
  ETIMEDOUT: "connection timed out",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  CERT_HAS_EXPIRED: "TLS certificate expired",
  DEPTH_ZERO_SELF_SIGNED_CERT: "self-signed TLS certificate",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "TLS certificate not trusted",
  ERR_TLS_CERT_ALTNAME_INVALID: "TLS certificate does not match the host",
};

/**
 * Why a probe failed, short and safe to show an operator: the upstream's HTTP status and what
 * kind of answer it was, or the connection error; never an upstream body (an HTML error page,
 * a stack trace), which stays out of the API and the logs.
 */
export function probeFailure(err: unknown): string {
  const top = err as Cause | undefined;
  const status = typeof top?.code === "number" && top.code >= 100 && top.code < 600 ? top.code : undefined;
  if (status !== undefined) {
    const body = top?.message ?? "";
    const kind = /<!doctype html|<html[\s>]|<body[\s>]|<head[\s>]/i.test(body)
      ? "an HTML page, not an MCP endpoint"
      : status === 401 || status === 403
        ? "the upstream refused the gateway's credentials"
        : status === 404
          ? "no MCP endpoint at this URL"
          : status === 405
            ? "this URL does not take MCP requests"
            : status >= 500
              ? "upstream error"
              : "not an MCP answer";
    return `upstream answered HTTP ${status}: ${kind}`;
  }
  // A JSON-RPC error of the upstream (its initialize or ping refused): the code, not its words.
  if (typeof top?.code === "number" && top.code < 0)
    return `upstream refused the probe (JSON-RPC ${top.code})`;
  for (const e of causes(err)) {
    const reason = typeof e.code === "string" ? CONNECT_ERRORS[e.code] : undefined;
    if (reason) return reason;
  }
  const message = (top?.message ?? String(err)).replace(/\p{Cc}+/gu, " ").trim();
  // Messages of the SDK and of fetch, not of the upstream: kept, but short.
  return /[<{]/.test(message) ? "the upstream's answer is not MCP" : message.slice(0, 200) || "probe failed";
}

/** The egress rules' reason when they refused the connection (transports wrap it as `fetch failed`). */
function egressRefusal(err: unknown): string | undefined {
  for (const e of causes(err)) if (e.code === EGRESS_REFUSED) return e.message;
  return undefined;
}

type Cause = { code?: unknown; message?: string; cause?: unknown };

/** An error and the causes it wraps, outermost first (at most ten deep). */
function* causes(err: unknown): Generator<Cause> {
  let e = err as Cause | undefined;
  for (let depth = 0; e && typeof e === "object" && depth < 10; depth++, e = e.cause as Cause | undefined)
    yield e;
}

/** The `health-check` processor: probes a server, records the result and publishes it to data planes. */
export function healthCheckProcessor(deps: HealthCheckDeps) {
  // One agent for every probe: keep-alive connections are reused, each new one is checked.
  const fetch = egressFetch(egressAgent({ allowPrivate: deps.allowPrivateUpstreams }));
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
        probeMcpEndpoint(e.url, server.transport as "streamable_http" | "sse", {
          timeoutMs: server.health_check_timeout_ms,
          headers,
          fetch,
        }),
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
        .set({
          status: result.status,
          last_health_check_at: checkedAt,
          last_error: result.status === "healthy" ? null : result.error,
        })
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
