import type { KvBucket } from "@mcpgw/bus";
import { KvConflict } from "@mcpgw/bus";
import { type Db, schema } from "@mcpgw/db";
import { GLOBAL_KEY, orgKey, type Snapshot, signSnapshot, verifySnapshot } from "@mcpgw/snapshot";
import type { Counter, Logger } from "@mcpgw/telemetry";
import { and, eq, gt, lt, sql } from "drizzle-orm";
import type { TokenIssuer } from "../auth/token-issuer.ts";
import type { PublishTrigger } from "../context.ts";
import { compileGlobalSnapshot, compileOrgSnapshot } from "./compile.ts";

export interface PublisherDeps {
  db: Db;
  bucket: KvBucket;
  signingKey: CryptoKey;
  /** The public half of `signingKey`: values in the bucket are trusted only if it verifies them. */
  verifyKey: CryptoKey;
  tokens: TokenIssuer;
  logger: Logger;
  published?: Counter<"kind" | "outcome">;
  /** How often to sweep for versions that were committed but not yet published. */
  sweepMs: number;
}

/**
 * Ships config snapshots to the KV bucket with outbox semantics: a change bumps
 * `config_version` in its own transaction; `published_version` records what reached the
 * bucket. `notify()` publishes right after a commit, and a periodic sweep retries anything
 * still behind (failed publish, or a process that died between commit and publish).
 */
export class SnapshotPublisher implements PublishTrigger {
  private readonly pending = new Set<string>();
  private running: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: PublisherDeps) {}

  notify(orgId: string): void {
    this.pending.add(orgId);
    this.running ??= this.drain().finally(() => {
      this.running = undefined;
      if (this.pending.size > 0) this.notify([...this.pending][0]!);
    });
  }

  /** Publishes everything behind, then sweeps periodically. */
  start(): void {
    const sweep = () =>
      void this.sweep().catch((err) => this.deps.logger.warn({ err }, "snapshot sweep failed"));
    sweep();
    this.timer = setInterval(sweep, this.deps.sweepMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
  }

  /** Queues every org and the global config whose committed version is ahead of the bucket. */
  async sweep(): Promise<void> {
    const { db } = this.deps;
    const behind = await db
      .select({ id: schema.organizations.id })
      .from(schema.organizations)
      .where(gt(schema.organizations.config_version, schema.organizations.published_version));
    const [global] = await db
      .select({ id: schema.globalConfig.id })
      .from(schema.globalConfig)
      .where(gt(schema.globalConfig.config_version, schema.globalConfig.published_version));
    if (global) this.notify(GLOBAL_KEY);
    for (const org of behind) this.notify(org.id);
  }

  private async drain(): Promise<void> {
    while (this.pending.size > 0) {
      const id = [...this.pending][0]!;
      this.pending.delete(id);
      try {
        await (id === GLOBAL_KEY ? this.publishGlobal() : this.publishOrg(id));
        this.deps.published?.inc({ kind: id === GLOBAL_KEY ? "global" : "org", outcome: "ok" });
      } catch (err) {
        // Left for the sweep: published_version still lags config_version.
        this.deps.published?.inc({ kind: id === GLOBAL_KEY ? "global" : "org", outcome: "error" });
        this.deps.logger.warn({ err, key: id }, "snapshot publish failed; will retry");
      }
    }
  }

  private async publishOrg(orgId: string): Promise<void> {
    const snapshot = await compileOrgSnapshot(this.deps.db, orgId);
    if (!snapshot) {
      await this.deps.bucket.delete(orgKey(orgId));
      return;
    }
    await this.put(orgKey(orgId), snapshot);
    await this.deps.db
      .update(schema.organizations)
      .set({ published_version: snapshot.version, updated_at: sql`${schema.organizations.updated_at}` })
      .where(
        and(eq(schema.organizations.id, orgId), lt(schema.organizations.published_version, snapshot.version)),
      );
  }

  private async publishGlobal(): Promise<void> {
    const snapshot = await compileGlobalSnapshot(this.deps.db, this.deps.tokens);
    await this.put(GLOBAL_KEY, snapshot);
    await this.deps.db
      .update(schema.globalConfig)
      .set({ published_version: snapshot.version })
      .where(and(eq(schema.globalConfig.id, 1), lt(schema.globalConfig.published_version, snapshot.version)));
  }

  /**
   * Compare-and-set so that a slow publisher (another replica, an older compile) never
   * overwrites a newer version already in the bucket.
   */
  private async put(key: string, snapshot: Snapshot): Promise<void> {
    const jws = await signSnapshot(snapshot, this.deps.signingKey);
    for (let attempt = 0; attempt < 5; attempt++) {
      const current = await this.deps.bucket.get(key);
      // A value we cannot verify (tampered, foreign) is overwritten whatever version it claims.
      const currentVersion = current?.value
        ? await verifySnapshot(current.value, this.deps.verifyKey, key).then(
            (s) => s.version,
            () => undefined,
          )
        : undefined;
      if (currentVersion !== undefined && currentVersion >= snapshot.version) return;
      try {
        await this.deps.bucket.update(key, jws, current?.revision ?? 0);
        this.deps.logger.debug({ key, version: snapshot.version }, "snapshot published");
        return;
      } catch (err) {
        if (!(err instanceof KvConflict)) throw err;
      }
    }
    throw new Error(`snapshot ${key}: gave up after repeated write conflicts`);
  }
}
