import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Bus, BusMessage, KvBucket } from "@mcpgw/bus";
import { Counter, type Logger, type Registry, SpanStatusCode, tracer } from "@mcpgw/telemetry";
import { request } from "undici";
import {
  FORWARDED_PEER_HEADER,
  FORWARDED_PEER_PROOF_HEADER,
  forwardedPeerProof,
} from "./rate-limit/client-ip.ts";
import { MAX_CLIENT_BACKLOG_BYTES } from "./transports/client-backlog.ts";

/** Header marking a request one replica forwarded to another (never forwarded again). */
export const FORWARDED_HEADER = "x-mcpgw-forwarded-by";

const HEARTBEAT_MS = 10_000;
/** NATS refuses payloads over its max_payload (1 MiB by default): bodies travel in chunks. */
const CHUNK_BYTES = 256 * 1024;
/**
 * Backstop for the owner's status line once it acknowledged: its own timeouts bound the answer
 * (a resumed 2026-07-28 exchange answers only when the upstream is done), its death ends the wait.
 */
const HEAD_TIMEOUT_MS = 10 * 60_000;
/** How long the owner has to say it received a request (NATS down, owner gone: give up fast). */
const ACK_TIMEOUT_MS = 3_000;
const NO_BYTES = new Uint8Array();
const spans = tracer("mcpgw-data-plane");

/** Request headers that describe one hop, not the request: never carried to the owner. */
const HOP_HEADERS = new Set([
  "host",
  "connection",
  "content-length",
  "transfer-encoding",
  "keep-alive",
  "expect",
  "upgrade",
  "te",
  "trailer",
  "proxy-connection",
]);
/** A request whose body has not fully arrived after this long is dropped by the owner. */
const ASSEMBLY_TIMEOUT_MS = 10_000;

/** Frames of the forwarding exchange (header `t`). */
type Frame = "req" | "body" | "cancel" | "ack" | "alive" | "head" | "data" | "end" | "fail";

/** A request this replica forwarded and whose answer it relays to its client. */
interface Outbound {
  res: ServerResponse;
  owner: string;
  /** The owner's request subject (where a cancel goes). */
  to: string;
  onHead: (ok: boolean) => void;
  acked: boolean;
  headSent: boolean;
  /** The sequence number the next data frame must carry (a gap means a lost frame). */
  nextSeq: number;
  /** When the owner last sent anything for this exchange. */
  lastHeard: number;
  timers: NodeJS.Timeout[];
}

/** A request another replica forwarded here, while its body arrives and its answer streams back. */
interface Inbound {
  from: string;
  meta: { method: string; url: string; headers: Record<string, string>; peer?: string };
  chunks: Buffer[];
  /** Aborts the replay (the requesting replica's client went away). */
  abort: AbortController;
  answered: boolean;
  replaying: boolean;
  startedAt: number;
}

export interface ReplicaDirectoryOptions {
  replicaId: string;
  /** Where this replica's own listener answers (forwarded requests are replayed there). */
  loopbackUrl: string;
  /** Subject prefix shared by the replicas of one deployment. */
  busPrefix: string;
  /** Request bodies larger than this are cut (the owner then refuses them as too large). */
  maxBodyBytes: number;
  logger: Logger;
  metrics?: Registry | undefined;
  /**
   * How often an owner says a replay is still under way (default 5 s); a forwarded exchange that
   * hears nothing for three of these ends (a lost `end` frame, a stuck owner).
   */
  keepaliveMs?: number | undefined;
}

/**
 * Which data-plane replicas exist, kept in a NATS KV bucket (each replica writes its own entry
 * and a heartbeat; entries of replicas gone silent are ignored), and the forwarding of requests
 * between them. Sessions that live in one replica (a stdio process, a legacy SSE stream) are
 * reached from any other: a request for one is carried over NATS to the owner, which replays it
 * on its own listener and streams the answer back over NATS. Replicas need no route to each
 * other, only to NATS, and the load balancer needs no stickiness.
 */
export class ReplicaDirectory {
  private readonly replicas = new Map<string, { seen: number }>();
  private readonly outbound = new Map<string, Outbound>();
  private readonly inbound = new Map<string, Inbound>();
  private readonly forwarded: Counter<"direction" | "outcome"> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private sweeper: NodeJS.Timeout | undefined;
  private stopWatch: (() => Promise<void>) | undefined;
  private stopListening: Array<() => void> = [];
  private bucket: KvBucket | undefined;
  private bus: Bus | undefined;

  readonly replicaId: string;
  private readonly keepaliveMs: number;

  constructor(private readonly o: ReplicaDirectoryOptions) {
    this.replicaId = o.replicaId;
    this.keepaliveMs = o.keepaliveMs ?? HEARTBEAT_MS / 2;
    this.forwarded = o.metrics
      ? new Counter({
          name: "mcpgw_forwarded_requests_total",
          help: "Session requests carried between replicas over NATS, by direction and outcome",
          labelNames: ["direction", "outcome"],
          registers: [o.metrics],
        })
      : undefined;
  }

  /** The subject a replica receives forwarded requests on, and the one it receives answers on. */
  private subject(replicaId: string, kind: "in" | "out"): string {
    return `${this.o.busPrefix}.dataplane.fwd.${replicaId.replace(/[^A-Za-z0-9_-]/g, "_")}.${kind}`;
  }

  async attach(bus: Bus, bucket: KvBucket): Promise<void> {
    this.bus = bus;
    this.bucket = bucket;
    this.stopListening = [
      bus.listen(this.subject(this.replicaId, "in"), (m) => this.onRequestFrame(m)),
      bus.listen(this.subject(this.replicaId, "out"), (m) => this.onAnswerFrame(m)),
    ];
    this.stopWatch = await bucket.watch((e) => {
      if (e.value === null) {
        this.replicas.delete(e.key);
        return;
      }
      try {
        const v = JSON.parse(e.value) as { at: number };
        this.replicas.set(e.key, { seen: v.at });
      } catch {
        // not ours
      }
    });
    const beat = () =>
      void bucket.put(this.replicaId, JSON.stringify({ at: Date.now() })).catch((err) => {
        this.o.logger.debug({ err: (err as Error).message }, "replica heartbeat failed");
      });
    beat();
    this.timer = setInterval(beat, HEARTBEAT_MS);
    this.timer.unref();
    this.sweeper = setInterval(() => this.sweepInbound(), this.keepaliveMs);
    this.sweeper.unref();
  }

  /** Replicas with a recent heartbeat, this one included. */
  liveCount(): number {
    let n = 1;
    for (const id of this.replicas.keys()) if (id !== this.replicaId && this.isLive(id)) n++;
    return n;
  }

  /** Whether another replica has sent a heartbeat recently. */
  isLive(replicaId: string): boolean {
    if (replicaId === this.replicaId) return false;
    const r = this.replicas.get(replicaId);
    return r !== undefined && Date.now() - r.seen < HEARTBEAT_MS * 3;
  }

  /**
   * Relays a request to the replica that owns its session and streams the answer back.
   * False when that replica is unknown or does not answer (the caller answers "session not
   * found", so the client re-initializes).
   */
  async forward(req: IncomingMessage, res: ServerResponse, ownerId: string, body?: Buffer): Promise<boolean> {
    const bus = this.bus;
    if (!bus || req.headers[FORWARDED_HEADER] || !this.isLive(ownerId)) return false;
    const id = randomUUID();
    let gone = false;
    res.once("close", () => {
      gone = true;
      this.finishOutbound(id, false);
    });
    const payload =
      body ?? (req.method === "POST" ? await readAtMost(req, this.o.maxBodyBytes + 1) : Buffer.alloc(0));
    // The client left while its body arrived: nothing to forward, nobody to answer.
    if (gone || res.destroyed) return true;
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers))
      if (typeof v === "string" && !HOP_HEADERS.has(k)) headers[k] = v;
    const to = this.subject(ownerId, "in");
    const headReceived = new Promise<boolean>((resolve) => {
      const out: Outbound = {
        res,
        owner: ownerId,
        to,
        onHead: resolve,
        headSent: false,
        acked: false,
        nextSeq: 0,
        lastHeard: Date.now(),
        timers: [],
      };
      const liveness = setInterval(
        () => {
          // The owner died mid-stream (its session is gone), or stopped talking about this exchange
          // (its end frame was lost): end the client's stream.
          const silent = out.acked && Date.now() - out.lastHeard > this.keepaliveMs * 3;
          if (this.isLive(ownerId) && !silent) return;
          this.o.logger.warn({ owner: ownerId, silent }, "replica owning a forwarded stream went silent");
          this.finishOutbound(id, false);
        },
        Math.min(HEARTBEAT_MS / 2, this.keepaliveMs),
      );
      liveness.unref();
      // An owner that does not acknowledge is gone (or NATS is): give up quickly. One that did
      // acknowledge bounds the answer with its own timeouts; the head timeout is a backstop.
      const unacked = setTimeout(() => {
        if (!this.outbound.get(id)?.acked) this.finishOutbound(id, false);
      }, ACK_TIMEOUT_MS);
      const headless = setTimeout(() => {
        if (!this.outbound.get(id)?.headSent) this.finishOutbound(id, false);
      }, HEAD_TIMEOUT_MS);
      out.timers.push(liveness, unacked, headless);
      this.outbound.set(id, out);
    });
    const meta = JSON.stringify({
      method: req.method ?? "GET",
      url: req.url ?? "/",
      headers,
      // The client's socket peer: per-IP rate limits apply on the owner as if it were reached directly.
      peer: req.socket.remoteAddress,
    });
    let offset = 0;
    do {
      const chunk = payload.subarray(offset, offset + CHUNK_BYTES);
      offset += chunk.byteLength;
      const more = offset < payload.byteLength ? "1" : "0";
      bus.publish(
        to,
        offset <= CHUNK_BYTES
          ? frame("req", id, chunk, { from: this.replicaId, meta, more })
          : frame("body", id, chunk, { more }),
      );
    } while (offset < payload.byteLength);
    const span = spans.startSpan("mcp.forward", {
      attributes: { "mcpgw.replica.owner": ownerId, "http.request.method": req.method ?? "" },
    });
    const ok = await headReceived;
    if (!ok && !gone) span.setStatus({ code: SpanStatusCode.ERROR, message: "owner did not answer" });
    span.end();
    this.forwarded?.inc({ direction: "out", outcome: ok ? "answered" : "unanswered" });
    if (!ok && !gone)
      this.o.logger.warn({ owner: ownerId }, "could not forward a session request to its replica");
    return ok || gone;
  }

  /** Answer frames (from owners of sessions this replica forwarded requests to). */
  private onAnswerFrame(m: BusMessage): void {
    const id = m.headers.id ?? "";
    const out = this.outbound.get(id);
    if (!out) return;
    out.lastHeard = Date.now();
    switch (m.headers.t as Frame) {
      case "alive":
        return;
      case "ack":
        out.acked = true;
        return;
      case "head": {
        const { status, headers } = JSON.parse(m.headers.meta ?? "{}") as {
          status: number;
          headers: Record<string, string>;
        };
        out.res.writeHead(status, headers);
        if (headers["content-type"]?.startsWith("text/event-stream")) out.res.flushHeaders();
        out.headSent = true;
        out.onHead(true);
        return;
      }
      case "data":
        // NATS delivers at most once: a missing frame would corrupt the stream, so it ends it.
        if (Number(m.headers.seq) !== out.nextSeq++) {
          this.o.logger.warn({ owner: out.owner }, "a forwarded stream lost a frame; ending it");
          this.finishOutbound(id, false);
          return;
        }
        out.res.write(m.data);
        if (out.res.writableLength > MAX_CLIENT_BACKLOG_BYTES) {
          this.o.logger.warn({ owner: out.owner }, "dropping a forwarded stream whose client does not read");
          out.res.destroy();
        }
        return;
      case "end":
        this.finishOutbound(id, true);
        return;
      case "fail":
        this.finishOutbound(id, false);
        return;
    }
  }

  private finishOutbound(id: string, ended: boolean): void {
    const out = this.outbound.get(id);
    if (!out) return;
    this.outbound.delete(id);
    for (const t of out.timers) clearTimeout(t);
    // Given up, client gone, owner silent: the owner stops working on it (if it still is).
    if (!ended) this.bus?.publish(out.to, frame("cancel", id));
    if (!out.headSent) {
      out.onHead(false);
      return;
    }
    if (ended) out.res.end();
    else out.res.destroy();
  }

  /** Request frames (from replicas forwarding requests of sessions that live here). */
  private onRequestFrame(m: BusMessage): void {
    const id = m.headers.id ?? "";
    switch (m.headers.t as Frame) {
      case "req": {
        let meta: Inbound["meta"];
        try {
          meta = JSON.parse(m.headers.meta ?? "") as Inbound["meta"];
        } catch {
          return;
        }
        const from = m.headers.from ?? "";
        this.bus?.publish(this.subject(from, "out"), frame("ack", id));
        this.inbound.set(id, {
          from,
          meta,
          chunks: [Buffer.from(m.data)],
          abort: new AbortController(),
          answered: false,
          replaying: false,
          startedAt: Date.now(),
        });
        if (m.headers.more !== "1") void this.replay(id);
        return;
      }
      case "body": {
        const inb = this.inbound.get(id);
        if (!inb) return;
        inb.chunks.push(Buffer.from(m.data));
        if (m.headers.more !== "1") void this.replay(id);
        return;
      }
      case "cancel": {
        const inb = this.inbound.get(id);
        if (!inb) return;
        inb.abort.abort();
        this.inbound.delete(id);
        return;
      }
    }
  }

  /**
   * Drops requests forwarded here whose sender went silent (its client cannot be answered any
   * more) and requests whose body never finished arriving.
   */
  private sweepInbound(): void {
    for (const [id, inb] of this.inbound) {
      const stale = !inb.replaying && Date.now() - inb.startedAt > ASSEMBLY_TIMEOUT_MS;
      if (stale || !this.isLive(inb.from)) {
        inb.abort.abort();
        this.inbound.delete(id);
      } else if (inb.replaying) {
        this.bus?.publish(this.subject(inb.from, "out"), frame("alive", id));
      }
    }
  }

  /** Replays a forwarded request on this replica's listener and streams its answer back. */
  private async replay(id: string): Promise<void> {
    const inb = this.inbound.get(id);
    const bus = this.bus;
    if (!inb || !bus) return;
    const to = this.subject(inb.from, "out");
    const body = Buffer.concat(inb.chunks);
    inb.chunks = [];
    inb.replaying = true;
    const span = spans.startSpan("mcp.forward.replay", {
      attributes: { "mcpgw.replica.from": inb.from, "http.request.method": inb.meta.method },
    });
    try {
      const answer = await request(`${this.o.loopbackUrl}${inb.meta.url}`, {
        method: inb.meta.method as "GET",
        headers: {
          ...withoutInternal(inb.meta.headers),
          [FORWARDED_HEADER]: inb.from,
          ...(inb.meta.peer
            ? { [FORWARDED_PEER_HEADER]: inb.meta.peer, [FORWARDED_PEER_PROOF_HEADER]: forwardedPeerProof }
            : {}),
        },
        body: inb.meta.method === "GET" || inb.meta.method === "HEAD" ? undefined : body,
        headersTimeout: HEAD_TIMEOUT_MS,
        bodyTimeout: 0,
        signal: inb.abort.signal,
      });
      // Aborting ends the body with an error; the loop below (or nobody, if aborted now) sees it.
      answer.body.on("error", () => {});
      inb.answered = true;
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(answer.headers))
        if (typeof v === "string" && !["transfer-encoding", "connection", "keep-alive"].includes(k))
          headers[k] = v;
      bus.publish(
        to,
        frame("head", id, NO_BYTES, { meta: JSON.stringify({ status: answer.statusCode, headers }) }),
      );
      let seq = 0;
      for await (const chunk of answer.body as AsyncIterable<Buffer>) {
        for (let i = 0; i < chunk.byteLength; i += CHUNK_BYTES)
          bus.publish(to, frame("data", id, chunk.subarray(i, i + CHUNK_BYTES), { seq: String(seq++) }));
      }
      bus.publish(to, frame("end", id));
      this.forwarded?.inc({ direction: "in", outcome: "answered" });
    } catch (err) {
      const cancelled = inb.abort.signal.aborted;
      if (!cancelled) {
        // A stream cut short must not look complete: fail, never end.
        bus.publish(to, frame("fail", id));
        this.o.logger.warn({ from: inb.from, err: (err as Error).message }, "forwarded request failed here");
      }
      this.forwarded?.inc({ direction: "in", outcome: cancelled ? "cancelled" : "failed" });
      if (!cancelled) span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
    } finally {
      span.end();
      this.inbound.delete(id);
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    for (const stop of this.stopListening) stop();
    for (const id of [...this.outbound.keys()]) this.finishOutbound(id, false);
    // Streams served for other replicas are cut now (their clients see it, not a hang).
    clearInterval(this.sweeper);
    for (const [id, inb] of this.inbound) {
      this.bus?.publish(this.subject(inb.from, "out"), frame("fail", id));
      inb.abort.abort();
    }
    await this.stopWatch?.();
    await this.bucket?.delete(this.replicaId).catch(() => {});
  }
}

/** Request headers without the ones only a replica may set. */
function withoutInternal(headers: Record<string, string>): Record<string, string> {
  const out = { ...headers };
  delete out[FORWARDED_PEER_HEADER];
  delete out[FORWARDED_PEER_PROOF_HEADER];
  return out;
}

function frame(
  t: Frame,
  id: string,
  data: Uint8Array = NO_BYTES,
  extra: Record<string, string> = {},
): BusMessage {
  return { headers: { t, id, ...extra }, data };
}

/** The first `limit` bytes of a request body (the rest is drained, unread). */
async function readAtMost(req: IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    if (size >= limit) continue;
    chunks.push(chunk);
    size += chunk.byteLength;
  }
  return Buffer.concat(chunks).subarray(0, limit);
}
