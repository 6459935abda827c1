/** One value of a key-value bucket; `value` null means the key was deleted. */
export interface KvEntry {
  key: string;
  value: string | null;
  revision: number;
}

/** Thrown by `update` when the key's revision is not the expected one. */
export class KvConflict extends Error {
  override name = "KvConflict";
}

/** A watched key-value bucket: NATS JetStream KV in production, in-process in embedded mode. */
export interface KvBucket {
  get(key: string): Promise<KvEntry | null>;
  put(key: string, value: string): Promise<number>;
  /** Compare-and-set: writes only if the key is at `revision` (0: the key must not exist). */
  update(key: string, value: string, revision: number): Promise<number>;
  delete(key: string): Promise<void>;
  /**
   * Calls `onEntry` with the last value of every key, then with each change, until stopped.
   * Survives connection loss: a reconnect resumes the watch.
   */
  watch(onEntry: (entry: KvEntry) => void): Promise<() => Promise<void>>;
}

/** One message of a raw stream between processes: small string headers and a byte payload. */
export interface BusMessage {
  headers: Record<string, string>;
  data: Uint8Array;
}

/** Opens buckets by name, and carries requests to every replica (operator fan-out). */
export interface Bus {
  bucket(name: string): Promise<KvBucket>;
  /**
   * Answers requests on `subject`; every process serving it answers each request, or, with a
   * `queue`, one process of those serving it in that queue.
   */
  serve(
    subject: string,
    handler: (request: unknown) => Promise<unknown>,
    options?: { queue?: string },
  ): Promise<() => Promise<void>>;
  /**
   * Sends a request to every process serving `subject`; the answers that arrive within `waitMs`
   * (or as soon as `expected` answers are in).
   */
  gather(subject: string, request: unknown, waitMs: number, expected?: number): Promise<unknown[]>;
  /** Sends a request to one process serving `subject`; its answer, or undefined after `waitMs`. */
  ask(subject: string, request: unknown, waitMs: number): Promise<unknown>;
  /**
   * Sends one message on `subject` (fire and forget). Messages from one process to one listener
   * arrive in the order they were sent.
   */
  publish(subject: string, message: BusMessage): void;
  /** Calls `onMessage` for every message published on `subject`, until the returned stop. */
  listen(subject: string, onMessage: (message: BusMessage) => void): () => void;
  close(): Promise<void>;
}

/** Bucket names, prefixed so that test runs and deployments sharing a NATS never collide. */
export function bucketNames(prefix: string) {
  return { config: `${prefix}_config`, health: `${prefix}_health` };
}
