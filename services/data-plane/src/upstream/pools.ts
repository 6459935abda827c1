import { egressConnector, egressFetch } from "@mcpgw/egress";
import { Pool } from "undici";

/**
 * One undici connection pool per upstream origin, reused across snapshot versions so that
 * keep-alive connections survive config changes; pools of origins no longer configured are
 * closed by `retain`.
 */
export class UpstreamPools {
  private readonly pools = new Map<string, Pool>();

  constructor(
    /** Connections per origin; null: as many as needed. */
    private readonly connections: number | null = 128,
    /** Unless private upstreams are allowed, every connection's address is checked when made. */
    private readonly allowPrivate = false,
  ) {}

  get(origin: string, connectTimeoutMs: number): Pool {
    let pool = this.pools.get(origin);
    if (!pool) {
      pool = new Pool(origin, {
        connections: this.connections,
        pipelining: 1,
        // Names and IP literals alike: the egress rules judge the address each socket goes to.
        connect: egressConnector({ allowPrivate: this.allowPrivate, connectTimeoutMs }),
        keepAliveTimeout: 30_000,
      });
      this.pools.set(origin, pool);
    }
    return pool;
  }

  /**
   * A `fetch` whose connections come from these pools, so that they pass the same egress check
   * (for the SDK's client transports and other message-level upstream connections).
   */
  fetcher(connectTimeoutMs: number): typeof globalThis.fetch {
    return ((input: string | URL | Request, init?: RequestInit) => {
      const url = new URL(input instanceof Request ? input.url : String(input));
      return egressFetch(this.get(url.origin, connectTimeoutMs))(url, init);
    }) as typeof globalThis.fetch;
  }

  /** Closes pools whose origin is not in `origins` (after in-flight requests finish). */
  retain(origins: ReadonlySet<string>): void {
    for (const [origin, pool] of this.pools) {
      if (!origins.has(origin)) {
        this.pools.delete(origin);
        void pool.close().catch(() => {});
      }
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((p) => p.destroy().catch(() => {})));
    this.pools.clear();
  }
}
