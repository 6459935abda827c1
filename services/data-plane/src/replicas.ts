import type { IncomingMessage, ServerResponse } from "node:http";
import type { KvBucket } from "@mcpgw/bus";
import type { Logger } from "@mcpgw/telemetry";
import { request } from "undici";

/** Header marking a request one replica forwarded to another (never forwarded again). */
export const FORWARDED_HEADER = "x-mcpgw-forwarded-by";

const HEARTBEAT_MS = 10_000;

/**
 * Which data-plane replicas exist and where they answer, kept in a NATS KV bucket (each replica
 * writes its own entry and a heartbeat; entries of replicas gone silent are ignored). Sessions
 * that live in one replica (a stdio process, a legacy SSE stream) are reached from any other
 * through it: requests for them are forwarded to the owner's internal address.
 */
export class ReplicaDirectory {
  private readonly replicas = new Map<string, { url: string; seen: number }>();
  private timer: NodeJS.Timeout | undefined;
  private stopWatch: (() => Promise<void>) | undefined;
  private bucket: KvBucket | undefined;

  constructor(
    readonly replicaId: string,
    private readonly internalUrl: string,
    private readonly logger: Logger,
  ) {}

  async attach(bucket: KvBucket): Promise<void> {
    this.bucket = bucket;
    this.stopWatch = await bucket.watch((e) => {
      if (e.value === null) {
        this.replicas.delete(e.key);
        return;
      }
      try {
        const v = JSON.parse(e.value) as { url: string; at: number };
        this.replicas.set(e.key, { url: v.url, seen: v.at });
      } catch {
        // not ours
      }
    });
    const beat = () =>
      void bucket
        .put(this.replicaId, JSON.stringify({ url: this.internalUrl, at: Date.now() }))
        .catch((err) => {
          this.logger.debug({ err: (err as Error).message }, "replica heartbeat failed");
        });
    beat();
    this.timer = setInterval(beat, HEARTBEAT_MS);
    this.timer.unref();
  }

  /** Replicas with a recent heartbeat, this one included. */
  liveCount(): number {
    let n = 1;
    for (const [id, r] of this.replicas)
      if (id !== this.replicaId && Date.now() - r.seen < HEARTBEAT_MS * 3) n++;
    return n;
  }

  /** The internal URL of a live replica other than this one. */
  urlOf(replicaId: string): string | undefined {
    if (replicaId === this.replicaId) return undefined;
    const r = this.replicas.get(replicaId);
    return r && Date.now() - r.seen < HEARTBEAT_MS * 3 ? r.url : undefined;
  }

  /**
   * Relays a request to the replica that owns its session and streams the answer back.
   * False when that replica is unknown or unreachable (the caller answers "session not found").
   */
  async forward(req: IncomingMessage, res: ServerResponse, ownerId: string, body?: Buffer): Promise<boolean> {
    if (req.headers[FORWARDED_HEADER]) return false;
    const base = this.urlOf(ownerId);
    if (!base) return false;
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (
        typeof v === "string" &&
        !["host", "connection", "content-length", "transfer-encoding", "keep-alive"].includes(k)
      )
        headers[k] = v;
    }
    headers[FORWARDED_HEADER] = this.replicaId;
    try {
      const upstream = await request(`${base}${req.url ?? "/"}`, {
        method: (req.method ?? "GET") as "GET",
        headers,
        body: body ?? (req.method === "POST" ? req : undefined),
        headersTimeout: 30_000,
        bodyTimeout: 0,
      });
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries(upstream.headers))
        if (typeof v === "string" && k !== "transfer-encoding" && k !== "connection") out[k] = v;
      res.writeHead(upstream.statusCode, out);
      if (out["content-type"]?.startsWith("text/event-stream")) res.flushHeaders();
      res.once("close", () => upstream.body.destroy());
      upstream.body.pipe(res);
      return true;
    } catch (err) {
      this.logger.warn(
        { owner: ownerId, err: (err as Error).message },
        "could not forward a session request to its replica",
      );
      return false;
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.stopWatch?.();
    await this.bucket?.delete(this.replicaId).catch(() => {});
  }
}

/** The replica a message-level session id names (`s1.<replica>.<uuid>`). */
export function sessionOwner(sessionId: string): string | undefined {
  const m = /^s1\.(.+)\.[0-9a-f-]{36}$/i.exec(sessionId);
  return m?.[1];
}
