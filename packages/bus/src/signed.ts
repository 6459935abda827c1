import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { Bus, BusMessage, KvBucket } from "./types.ts";

/** How far a request's clock may be from ours, and how long its nonce is remembered. */
const WINDOW_MS = 60_000;
/** Most nonces remembered at once (a flood beyond it is refused, not remembered without bound). */
const MAX_NONCES = 50_000;

interface Envelope {
  v: 1;
  ts: number;
  nonce: string;
  body: unknown;
  mac: string;
}

/** The key operator requests are authenticated with: derived from the master key every service has. */
export function operatorBusKey(masterKey: string): Buffer {
  return createHash("sha256").update(`mcpgw operator bus\n${masterKey}`).digest();
}

/**
 * Requests and answers between services (operator fan-out, namespace inspection) carried with
 * an HMAC-SHA256 over a timestamp, a nonce and the body, as snapshots are carried signed: a NATS
 * client without the key can neither ask a data plane anything nor answer in its place, and a
 * captured request cannot be replayed. Buckets and raw streams pass through unchanged.
 */
export class SignedBus implements Bus {
  private readonly nonces = new Map<string, number>();

  constructor(
    private readonly inner: Bus,
    private readonly key: Buffer,
    private readonly onRefused: (reason: string) => void = () => {},
  ) {}

  private mac(ts: number, nonce: string, body: string): string {
    return createHmac("sha256", this.key).update(`${ts}.${nonce}.${body}`).digest("base64url");
  }

  private seal(body: unknown): Envelope {
    const ts = Date.now();
    const nonce = randomBytes(12).toString("base64url");
    return { v: 1, ts, nonce, body, mac: this.mac(ts, nonce, JSON.stringify(body ?? null)) };
  }

  /** The body of a well-signed, fresh, unseen envelope; undefined (and why) otherwise. */
  private open(message: unknown, remember: boolean): { body: unknown } | { refused: string } {
    const e = message as Partial<Envelope> | null;
    if (e?.v !== 1 || typeof e.ts !== "number" || typeof e.nonce !== "string" || typeof e.mac !== "string")
      return { refused: "unsigned" };
    const expected = Buffer.from(this.mac(e.ts, e.nonce, JSON.stringify(e.body ?? null)));
    const given = Buffer.from(e.mac);
    if (given.length !== expected.length || !timingSafeEqual(given, expected))
      return { refused: "bad signature" };
    const now = Date.now();
    if (Math.abs(now - e.ts) > WINDOW_MS) return { refused: "stale" };
    if (remember) {
      if (this.nonces.has(e.nonce)) return { refused: "replayed" };
      if (this.nonces.size >= MAX_NONCES) {
        for (const [n, at] of this.nonces) if (now - at > WINDOW_MS) this.nonces.delete(n);
        if (this.nonces.size >= MAX_NONCES) return { refused: "too many requests" };
      }
      this.nonces.set(e.nonce, now);
    }
    return { body: e.body };
  }

  bucket(name: string): Promise<KvBucket> {
    return this.inner.bucket(name);
  }

  serve(
    subject: string,
    handler: (request: unknown) => Promise<unknown>,
    options?: { queue?: string },
  ): Promise<() => Promise<void>> {
    return this.inner.serve(
      subject,
      async (request) => {
        const opened = this.open(request, true);
        if ("refused" in opened) {
          this.onRefused(opened.refused);
          return this.seal({ error: "request refused: not signed by this deployment" });
        }
        return this.seal(await handler(opened.body));
      },
      options,
    );
  }

  /** Answers that are not signed with our key are dropped: nobody else may answer for a data plane. */
  private answer(reply: unknown): { ok: true; body: unknown } | { ok: false } {
    const opened = this.open(reply, false);
    if ("refused" in opened) {
      this.onRefused(`answer ${opened.refused}`);
      return { ok: false };
    }
    return { ok: true, body: opened.body };
  }

  async gather(subject: string, request: unknown, waitMs: number, expected?: number): Promise<unknown[]> {
    const replies = await this.inner.gather(subject, this.seal(request), waitMs, expected);
    return replies.map((r) => this.answer(r)).flatMap((a) => (a.ok ? [a.body] : []));
  }

  async ask(subject: string, request: unknown, waitMs: number): Promise<unknown> {
    const reply = await this.inner.ask(subject, this.seal(request), waitMs);
    if (reply === undefined) return undefined;
    const a = this.answer(reply);
    return a.ok ? a.body : undefined;
  }

  publish(subject: string, message: BusMessage): void {
    this.inner.publish(subject, message);
  }

  listen(subject: string, onMessage: (message: BusMessage) => void): () => void {
    return this.inner.listen(subject, onMessage);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
