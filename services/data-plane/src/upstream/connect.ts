import type { ServerEntry } from "@mcpgw/snapshot";
import type { Logger } from "@mcpgw/telemetry";
import type { UpstreamCredentials } from "@mcpgw/upstream-credentials";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { UpstreamPools } from "./pools.ts";
import { StatelessUpstreamTransport, type UpstreamRevisions } from "./stateless-upstream.ts";
import type { StdioOwner, StdioProcessManager } from "./stdio-processes.ts";

export interface ConnectDeps {
  stdio: StdioProcessManager;
  credentials: UpstreamCredentials;
  /** Streamable HTTP upstreams that speak only the stateless revision. */
  revisions: UpstreamRevisions;
  /** Upstream connections come from these pools: every one passes the egress check. */
  pools: UpstreamPools;
  logger: Logger;
}

/**
 * Opens a message-level connection to a server's upstream for one client session: a child
 * process for stdio servers, the SDK's client transports for legacy SSE and Streamable HTTP
 * (which keep the upstream session id themselves), or a translation to the stateless revision
 * for Streamable HTTP upstreams that speak it. The gateway's own credentials go upstream; the
 * client's never do. `owner` is who the session is for: stdio capacity is shared by it.
 */
export async function connectUpstream(
  server: ServerEntry,
  sessionId: string,
  deps: ConnectDeps,
  owner: StdioOwner,
): Promise<Transport> {
  if (server.transport === "stdio") {
    const proc = await deps.stdio.acquire(server, sessionId, owner);
    const close = proc.close.bind(proc);
    proc.close = async () => {
      proc.closing = true;
      await close();
    };
    return proc;
  }
  const endpoint = server.endpoints[Math.floor(Math.random() * server.endpoints.length)];
  if (!endpoint) throw new Error("server has no endpoint");
  const headers = (await deps.credentials.headersFor(server)) ?? {};
  const url = new URL(endpoint.url);
  const fetch = deps.pools.fetcher(Math.min(server.timeout_ms, 10_000));
  if (
    server.transport === "streamable_http" &&
    (await deps.revisions.isStateless(server.id, endpoint.url, headers, server.timeout_ms, fetch))
  ) {
    return new StatelessUpstreamTransport({
      url: endpoint.url,
      headers,
      timeoutMs: server.timeout_ms,
      fetch,
      logger: deps.logger,
    });
  }
  const transport: Transport =
    server.transport === "sse"
      ? new SSEClientTransport(url, {
          requestInit: { headers },
          fetch,
          eventSourceInit: {
            fetch: (input, init) =>
              fetch(input, {
                ...init,
                headers: { ...(init?.headers as Record<string, string>), ...headers },
              }),
          },
        })
      : new StreamableHTTPClientTransport(url, { requestInit: { headers }, fetch });
  await transport.start();
  return transport;
}

/** Who a session of `principal` with a server of `routed.org` is for, as stdio capacity counts it. */
export function stdioOwner(
  routed: { org: { org_id: string; org: { platform: boolean } } },
  principal: { id: string },
): StdioOwner {
  return { orgId: routed.org.org_id, principalId: principal.id, platformOrg: routed.org.org.platform };
}
