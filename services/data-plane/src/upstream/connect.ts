import type { ServerEntry } from "@mcpgw/snapshot";
import type { Logger } from "@mcpgw/telemetry";
import type { UpstreamCredentials } from "@mcpgw/upstream-credentials";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport, TransportSendOptions } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { endpointOrder, isConnectFailure } from "./endpoints.ts";
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
 * HTTP endpoints are chosen by weight, with failover while connecting fails (endpoints.ts).
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
  const urls = endpointOrder(server).map((i) => server.endpoints[i]!.url);
  if (urls.length === 0) throw new Error("server has no endpoint");
  const headers = (await deps.credentials.headersFor(server)) ?? {};
  const fetch = deps.pools.fetcher(Math.min(server.timeout_ms, 10_000));
  const transport = new FailoverTransport(urls, (url) => httpTransport(server, url, headers, fetch, deps));
  await transport.start();
  return transport;
}

/** The (not yet started) transport to one HTTP endpoint of a server. */
async function httpTransport(
  server: ServerEntry,
  endpointUrl: string,
  headers: Record<string, string>,
  fetch: typeof globalThis.fetch,
  deps: ConnectDeps,
): Promise<Transport> {
  const url = new URL(endpointUrl);
  if (
    server.transport === "streamable_http" &&
    (await deps.revisions.isStateless(server.id, endpointUrl, headers, server.timeout_ms, fetch))
  ) {
    return new StatelessUpstreamTransport({
      url: endpointUrl,
      headers,
      timeoutMs: server.timeout_ms,
      fetch,
      logger: deps.logger,
    });
  }
  return server.transport === "sse"
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
}

/**
 * A message-level upstream connection that moves on to the next endpoint in the chooser's order
 * while connecting fails: `start()` failing (legacy SSE connects there), or the first message
 * failing to connect (Streamable HTTP connects with its first POST). Once a message went through
 * either way, a failure is the session's and is never repeated elsewhere (JSON-RPC calls are not
 * idempotent, and the upstream session lives on that endpoint).
 */
class FailoverTransport implements Transport {
  onclose?: (() => void) | undefined;
  onerror?: ((error: Error) => void) | undefined;
  onmessage?: Transport["onmessage"];
  private current: Transport | undefined;
  /** Index into `urls` of the next endpoint to try. */
  private next = 0;
  private lastError: unknown;
  /** A message went through: no more failover. */
  private contacted = false;
  /** Until then, messages go one at a time, so that all of them move to the next endpoint. */
  private turn: Promise<void> = Promise.resolve();
  /** Messages waiting their turn (later ones wait too, so that none overtakes them). */
  private queued = 0;
  /** Transports given up on: whatever they still say is not the session's. */
  private readonly retired = new WeakSet<Transport>();

  constructor(
    private readonly urls: readonly string[],
    private readonly open: (url: string) => Promise<Transport>,
  ) {}

  get sessionId(): string | undefined {
    return this.current?.sessionId;
  }

  setProtocolVersion(version: string): void {
    this.current?.setProtocolVersion?.(version);
  }

  async start(): Promise<void> {
    const transport = await this.connectNext();
    if (!transport) throw this.lastError;
    this.current = transport;
  }

  send(message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    if (this.contacted && this.queued === 0 && this.current) return this.current.send(message, options);
    this.queued++;
    const sent = this.turn
      .then(() => this.sendFirst(message, options))
      .finally(() => {
        this.queued--;
      });
    this.turn = sent.then(
      () => {},
      () => {},
    );
    return sent;
  }

  async close(): Promise<void> {
    await this.current?.close();
  }

  /** Sends before anything went through: a refused connection moves to the next endpoint. */
  private async sendFirst(message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    for (;;) {
      const transport = this.current;
      if (!transport) throw new Error("Not connected");
      if (this.contacted) return transport.send(message, options);
      try {
        await transport.send(message, options);
        this.contacted = true;
        return;
      } catch (err) {
        if (this.contacted || !isConnectFailure(err)) throw err;
        const replacement = await this.connectNext();
        if (!replacement) throw err;
        this.retire(transport);
        this.current = replacement;
      }
    }
  }

  /** The next endpoint's transport that starts, or undefined when none of the rest does. */
  private async connectNext(): Promise<Transport | undefined> {
    while (this.next < this.urls.length) {
      const url = this.urls[this.next++]!;
      let transport: Transport | undefined;
      try {
        transport = await this.open(url);
        this.wire(transport);
        await transport.start();
        return transport;
      } catch (err) {
        this.lastError = err;
        if (transport) this.retire(transport);
      }
    }
    return undefined;
  }

  private wire(transport: Transport): void {
    transport.onmessage = (message, extra) => {
      if (this.retired.has(transport)) return;
      this.contacted = true;
      this.onmessage?.(message, extra);
    };
    transport.onerror = (error) => {
      if (!this.retired.has(transport)) this.onerror?.(error);
    };
    transport.onclose = () => {
      if (!this.retired.has(transport)) this.onclose?.();
    };
  }

  /** Gives up on a transport: closed (an SSE client would keep reconnecting), heard no more. */
  private retire(transport: Transport): void {
    this.retired.add(transport);
    void transport.close().catch(() => {});
  }
}

/** Who a session of `principal` with a server of `routed.org` is for, as stdio capacity counts it. */
export function stdioOwner(
  routed: { org: { org_id: string; org: { platform: boolean } } },
  principal: { id: string },
): StdioOwner {
  return { orgId: routed.org.org_id, principalId: principal.id, platformOrg: routed.org.org.platform };
}
