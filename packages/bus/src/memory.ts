import { EventEmitter } from "node:events";
import { type Bus, type BusMessage, type KvBucket, KvConflict, type KvEntry } from "./types.ts";

class MemoryBucket implements KvBucket {
  private readonly values = new Map<string, { value: string; revision: number }>();
  private readonly events = new EventEmitter().setMaxListeners(0);
  private revision = 0;

  async get(key: string): Promise<KvEntry | null> {
    const v = this.values.get(key);
    return v ? { key, ...v } : null;
  }

  async put(key: string, value: string): Promise<number> {
    const revision = ++this.revision;
    this.values.set(key, { value, revision });
    this.events.emit("entry", { key, value, revision } satisfies KvEntry);
    return revision;
  }

  async update(key: string, value: string, revision: number): Promise<number> {
    const current = this.values.get(key)?.revision ?? 0;
    if (current !== revision) throw new KvConflict(`${key} is at revision ${current}, not ${revision}`);
    return this.put(key, value);
  }

  async delete(key: string): Promise<void> {
    if (!this.values.delete(key)) return;
    this.events.emit("entry", { key, value: null, revision: ++this.revision } satisfies KvEntry);
  }

  async watch(onEntry: (entry: KvEntry) => void): Promise<() => Promise<void>> {
    for (const [key, v] of this.values) onEntry({ key, ...v });
    this.events.on("entry", onEntry);
    return async () => {
      this.events.off("entry", onEntry);
    };
  }
}

/** The in-process bus of embedded mode: the same contract as NATS KV, inside one process. */
export class MemoryBus implements Bus {
  private readonly buckets = new Map<string, MemoryBucket>();

  async bucket(name: string): Promise<KvBucket> {
    let bucket = this.buckets.get(name);
    if (!bucket) {
      bucket = new MemoryBucket();
      this.buckets.set(name, bucket);
    }
    return bucket;
  }

  private readonly handlers = new Map<
    string,
    Set<{ handle: (request: unknown) => Promise<unknown>; queue?: string }>
  >();

  async serve(
    subject: string,
    handler: (request: unknown) => Promise<unknown>,
    options: { queue?: string } = {},
  ): Promise<() => Promise<void>> {
    let set = this.handlers.get(subject);
    if (!set) {
      set = new Set();
      this.handlers.set(subject, set);
    }
    const entry = { handle: handler, ...(options.queue ? { queue: options.queue } : {}) };
    set.add(entry);
    return async () => {
      set.delete(entry);
    };
  }

  /** The handlers a request reaches: every one outside a queue, one per queue (as NATS does). */
  private reached(subject: string) {
    const out: Array<(request: unknown) => Promise<unknown>> = [];
    const queues = new Set<string>();
    for (const e of this.handlers.get(subject) ?? []) {
      if (e.queue !== undefined) {
        if (queues.has(e.queue)) continue;
        queues.add(e.queue);
      }
      out.push(e.handle);
    }
    return out;
  }

  async ask(subject: string, request: unknown, waitMs: number): Promise<unknown> {
    const [handler] = this.reached(subject);
    if (!handler) return undefined;
    return Promise.race([
      handler(structuredClone(request)).catch(() => undefined),
      new Promise<undefined>((r) => setTimeout(() => r(undefined), waitMs)),
    ]);
  }

  async gather(subject: string, request: unknown, waitMs: number, _expected?: number): Promise<unknown[]> {
    const handlers = this.reached(subject);
    // Same contract as NATS: answers that do not arrive in time are left out.
    const answers = await Promise.all(
      handlers.map((h) =>
        Promise.race([
          h(structuredClone(request)).then((a) => ({ a })),
          new Promise<undefined>((r) => setTimeout(() => r(undefined), waitMs)),
        ]).catch(() => undefined),
      ),
    );
    return answers.filter((x): x is { a: unknown } => x !== undefined).map((x) => x.a);
  }

  private readonly subjects = new EventEmitter().setMaxListeners(0);

  publish(subject: string, message: BusMessage): void {
    // Delivered after the caller returns, in order, as a network bus would.
    const copy = { headers: { ...message.headers }, data: message.data.slice() };
    queueMicrotask(() => this.subjects.emit(subject, copy));
  }

  listen(subject: string, onMessage: (message: BusMessage) => void): () => void {
    this.subjects.on(subject, onMessage);
    return () => this.subjects.off(subject, onMessage);
  }

  async close(): Promise<void> {}
}
