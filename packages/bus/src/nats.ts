import { type KV, Kvm } from "@nats-io/kv";
import { connect, type NatsConnection, headers as natsHeaders } from "@nats-io/transport-node";
import { type Bus, type BusMessage, type KvBucket, KvConflict, type KvEntry } from "./types.ts";

const decoder = new TextDecoder();

class NatsBucket implements KvBucket {
  constructor(private readonly kv: KV) {}

  async get(key: string): Promise<KvEntry | null> {
    const e = await this.kv.get(key);
    if (e?.operation !== "PUT") return null;
    return { key, value: decoder.decode(e.value), revision: e.revision };
  }

  put(key: string, value: string): Promise<number> {
    return this.kv.put(key, value);
  }

  async update(key: string, value: string, revision: number): Promise<number> {
    try {
      return revision === 0 ? await this.kv.create(key, value) : await this.kv.update(key, value, revision);
    } catch (err) {
      // JetStream answers a failed compare-and-set with "wrong last sequence" (10071).
      if (/wrong last sequence|key exists|10071/i.test(String((err as Error).message))) {
        throw new KvConflict(`${key}: revision moved past ${revision}`);
      }
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    await this.kv.delete(key);
  }

  async watch(onEntry: (entry: KvEntry) => void): Promise<() => Promise<void>> {
    let stopped = false;
    let iterator: Awaited<ReturnType<KV["watch"]>> | undefined;
    let lastRevision = 0;
    // The watch is an ordered consumer; if it ends (server restart, stream recreated), open a
    // new one from the last revision seen so no update is skipped.
    const run = async () => {
      while (!stopped) {
        try {
          iterator = await this.kv.watch(lastRevision > 0 ? { resumeFromRevision: lastRevision + 1 } : {});
          for await (const e of iterator) {
            lastRevision = Math.max(lastRevision, e.revision);
            onEntry({
              key: e.key,
              value: e.operation === "PUT" ? decoder.decode(e.value) : null,
              revision: e.revision,
            });
          }
        } catch {
          // fall through to the retry below
        }
        if (!stopped) await new Promise((r) => setTimeout(r, 500));
      }
    };
    void run();
    return async () => {
      stopped = true;
      iterator?.stop();
    };
  }
}

/**
 * `NATS_URL` as nats.js wants it: a comma-separated list of servers, credentials taken out of
 * the URLs (`nats://user:password@host:4222`, or `nats://token@host:4222`) and passed as options,
 * since nats.js ignores a URL's userinfo. Every server of the list shares one set of credentials.
 */
export function natsConnectOptions(url: string): {
  servers: string[];
  user?: string;
  pass?: string;
  token?: string;
} {
  let user: string | undefined;
  let pass: string | undefined;
  const servers = url
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((server) => {
      const at = server.lastIndexOf("@");
      if (at < 0) return server;
      const scheme = server.indexOf("://");
      const userinfo = server.slice(scheme < 0 ? 0 : scheme + 3, at);
      const colon = userinfo.indexOf(":");
      user ??= decodeURIComponent(colon < 0 ? userinfo : userinfo.slice(0, colon));
      if (colon >= 0) pass ??= decodeURIComponent(userinfo.slice(colon + 1));
      return (scheme < 0 ? "" : server.slice(0, scheme + 3)) + server.slice(at + 1);
    });
  if (user === undefined) return { servers };
  return pass === undefined ? { servers, token: user } : { servers, user, pass };
}

export interface NatsBusOptions {
  /** Connection name shown in NATS monitoring. */
  name?: string;
}

/** A bus on NATS JetStream KV. Resolves once connected; reconnects forever after that. */
export class NatsBus implements Bus {
  private constructor(private readonly nc: NatsConnection) {}

  static async connect(url: string, options: NatsBusOptions = {}): Promise<NatsBus> {
    const nc = await connect({
      ...natsConnectOptions(url),
      name: options.name,
      waitOnFirstConnect: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
    });
    return new NatsBus(nc);
  }

  async bucket(name: string): Promise<KvBucket> {
    const kvm = new Kvm(this.nc);
    // history 1: only the last value per key matters to readers of snapshots and health.
    return new NatsBucket(await kvm.create(name, { history: 1 }));
  }

  async serve(
    subject: string,
    handler: (request: unknown) => Promise<unknown>,
    options: { queue?: string } = {},
  ): Promise<() => Promise<void>> {
    const sub = this.nc.subscribe(subject, {
      ...(options.queue ? { queue: options.queue } : {}),
      callback: (err, msg) => {
        if (err) return;
        void (async () => {
          let answer: unknown;
          try {
            answer = await handler(msg.json());
          } catch (e) {
            answer = { error: (e as Error).message };
          }
          msg.respond(JSON.stringify(answer ?? null));
        })();
      },
    });
    return async () => {
      sub.unsubscribe();
    };
  }

  async ask(subject: string, request: unknown, waitMs: number): Promise<unknown> {
    try {
      return (await this.nc.request(subject, JSON.stringify(request), { timeout: waitMs })).json();
    } catch {
      return undefined; // no responders, timeout, NATS unreachable, or not JSON
    }
  }

  async gather(subject: string, request: unknown, waitMs: number, expected?: number): Promise<unknown[]> {
    const answers: unknown[] = [];
    try {
      const replies = await this.nc.requestMany(
        subject,
        JSON.stringify(request),
        expected
          ? { strategy: "count", maxMessages: expected, maxWait: waitMs }
          : { strategy: "timer", maxWait: waitMs },
      );
      for await (const reply of replies) {
        try {
          answers.push(reply.json());
        } catch {
          // a reply that is not JSON is not an answer
        }
      }
    } catch {
      // no responders, or NATS unreachable: whatever arrived is the answer
    }
    return answers;
  }

  publish(subject: string, message: BusMessage): void {
    const h = natsHeaders();
    for (const [k, v] of Object.entries(message.headers)) h.set(k, v);
    try {
      this.nc.publish(subject, message.data, { headers: h });
    } catch {
      // closed connection: the message is lost, as it would be on the wire
    }
  }

  listen(subject: string, onMessage: (message: BusMessage) => void): () => void {
    const sub = this.nc.subscribe(subject, {
      callback: (err, msg) => {
        if (err) return;
        const headers: Record<string, string> = {};
        for (const k of msg.headers?.keys() ?? []) headers[k] = msg.headers?.get(k) ?? "";
        onMessage({ headers, data: msg.data });
      },
    });
    return () => sub.unsubscribe();
  }

  async close(): Promise<void> {
    await this.nc.drain().catch(() => this.nc.close());
  }
}
