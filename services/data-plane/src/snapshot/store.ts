import { mkdir, readdir, readFile, rename, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  type ApiKeyEntry,
  type GlobalSnapshot,
  type NamespaceEntry,
  type OrgSnapshot,
  type ServerEntry,
  SnapshotRejected,
  verifySnapshot,
} from "@mcpgw/snapshot";
import type { Logger } from "@mcpgw/telemetry";

export interface RoutedServer {
  server: ServerEntry;
  namespace: NamespaceEntry;
  org: OrgSnapshot;
}

export interface KeyEntry {
  key: ApiKeyEntry;
  org: OrgSnapshot;
}

/** One immutable view of the configuration; a request reads a single version of it. */
export interface GatewayState {
  global: GlobalSnapshot | undefined;
  orgs: ReadonlyMap<string, OrgSnapshot>;
  servers: ReadonlyMap<string, RoutedServer>;
  /** Active API keys by the SHA-256 of their secret. */
  apiKeys: ReadonlyMap<string, KeyEntry>;
  /** Active API keys by id (a2a tokens name the key they were exchanged for). */
  apiKeysById: ReadonlyMap<string, KeyEntry>;
}

export type ApplyOutcome = "applied" | "stale" | "rejected";

const EMPTY: GatewayState = {
  global: undefined,
  orgs: new Map(),
  servers: new Map(),
  apiKeys: new Map(),
  apiKeysById: new Map(),
};

/**
 * Holds the verified snapshots of a data plane. Each accepted snapshot builds a new state that
 * is swapped in whole; a snapshot that fails verification or is not newer is ignored.
 * Accepted snapshots are cached on disk so a restart serves before the bus is reachable.
 */
export class SnapshotStore {
  private state: GatewayState = EMPTY;
  private readonly listeners = new Set<(state: GatewayState) => void>();
  private readonly writes = new Map<string, Promise<void>>();

  constructor(
    private readonly publicKey: CryptoKey,
    private readonly cacheDir: string | undefined,
    private readonly logger: Logger,
  ) {}

  get current(): GatewayState {
    return this.state;
  }

  /** Ready once token keys are known: without them no request can be authenticated. */
  get ready(): boolean {
    return this.state.global !== undefined;
  }

  onChange(listener: (state: GatewayState) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Loads every cached snapshot (each verified again: the disk is not trusted more than the bus). */
  async loadCache(): Promise<number> {
    if (!this.cacheDir) return 0;
    let files: string[];
    try {
      files = (await readdir(this.cacheDir)).filter((f) => f.endsWith(".jws"));
    } catch {
      return 0;
    }
    let loaded = 0;
    for (const file of files) {
      const jws = await readFile(join(this.cacheDir, file), "utf8");
      if ((await this.apply(file.slice(0, -4), jws, { persist: false })) === "applied") loaded++;
    }
    this.logger.info({ loaded, dir: this.cacheDir }, "snapshots loaded from disk cache");
    return loaded;
  }

  /** Verifies and, when newer than what is held, swaps in the snapshot stored under `key`. */
  async apply(key: string, jws: string, { persist = true } = {}): Promise<ApplyOutcome> {
    let snapshot: GlobalSnapshot | OrgSnapshot;
    try {
      snapshot = await verifySnapshot(jws, this.publicKey, key);
    } catch (err) {
      this.logger.warn(
        { key, reason: err instanceof SnapshotRejected ? err.message : String(err) },
        "snapshot rejected",
      );
      return "rejected";
    }
    // Checked after the await: another apply may have swapped in a newer version meanwhile.
    const held = snapshot.kind === "global" ? this.state.global : this.state.orgs.get(snapshot.org_id);
    if (held && held.version >= snapshot.version) return "stale";
    this.swap(snapshot);
    this.logger.info({ key, version: snapshot.version }, "snapshot applied");
    if (persist) this.persist(key, jws);
    return "applied";
  }

  /** Drops an org whose key was deleted from the bucket (the org was removed). */
  remove(key: string): void {
    const orgId = key.startsWith("org.") ? key.slice(4) : undefined;
    if (!orgId || !this.state.orgs.has(orgId)) return;
    const orgs = new Map(this.state.orgs);
    orgs.delete(orgId);
    this.publish({ global: this.state.global, ...index(orgs) });
    // A deleted org must not come back from the disk cache at the next start.
    const dir = this.cacheDir;
    if (dir) {
      const previous = this.writes.get(key) ?? Promise.resolve();
      this.writes.set(
        key,
        previous.then(() => unlink(join(dir, `${key}.jws`)).catch(() => {})),
      );
    }
  }

  private swap(snapshot: GlobalSnapshot | OrgSnapshot) {
    if (snapshot.kind === "global") {
      this.publish({ ...this.state, global: snapshot });
      return;
    }
    const orgs = new Map(this.state.orgs);
    orgs.set(snapshot.org_id, snapshot);
    this.publish({ global: this.state.global, ...index(orgs) });
  }

  private publish(state: GatewayState) {
    this.state = state;
    for (const listener of this.listeners) listener(state);
  }

  private persist(key: string, jws: string) {
    const dir = this.cacheDir;
    if (!dir) return;
    // Writes of one key are chained so an older write can never land after a newer one.
    const previous = this.writes.get(key) ?? Promise.resolve();
    const next = previous.then(async () => {
      // The cache holds every org's configuration: readable by this process's user only.
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const tmp = join(dir, `.${key}.${process.pid}.tmp`);
      await writeFile(tmp, jws, { mode: 0o600 });
      await rename(tmp, join(dir, `${key}.jws`));
    });
    const tracked = next.catch((err) => this.logger.warn({ err, key }, "snapshot cache write failed"));
    this.writes.set(key, tracked);
  }

  /** Waits for pending cache writes (used at shutdown and in tests). */
  async flush(): Promise<void> {
    await Promise.all(this.writes.values());
  }
}

function index(orgs: ReadonlyMap<string, OrgSnapshot>): Omit<GatewayState, "global"> {
  const servers = new Map<string, RoutedServer>();
  const apiKeys = new Map<string, KeyEntry>();
  const apiKeysById = new Map<string, KeyEntry>();
  for (const org of orgs.values()) {
    const namespaces = new Map(org.namespaces.map((n) => [n.id, n]));
    for (const server of org.servers) {
      const namespace = namespaces.get(server.namespace_id);
      if (namespace) servers.set(server.id, { server, namespace, org });
    }
    for (const key of org.api_keys) {
      apiKeys.set(key.hash, { key, org });
      apiKeysById.set(key.id, { key, org });
    }
  }
  return { orgs, servers, apiKeys, apiKeysById };
}
