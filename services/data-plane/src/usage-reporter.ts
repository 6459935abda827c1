import { type JobProducer, jobs } from "@mcpgw/queue";
import type { Logger } from "@mcpgw/telemetry";

/**
 * Collects which API keys authenticated requests and hands them to the worker in batches, so
 * `last_used_at` is kept without a database write (or a Redis round trip) per request.
 */
export class UsageReporter {
  private keys = new Set<string>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly producer: JobProducer | undefined,
    private readonly logger: Logger,
    flushMs = 5_000,
  ) {
    this.timer = setInterval(() => void this.flush(), flushMs);
    this.timer.unref();
  }

  keyUsed = (keyId: string): void => {
    if (this.producer) this.keys.add(keyId);
  };

  async flush(): Promise<void> {
    if (!this.producer || this.keys.size === 0) return;
    const batch = [...this.keys];
    this.keys = new Set();
    try {
      await this.producer.enqueue(jobs.apiKeyUsage, { key_ids: batch, used_at: new Date().toISOString() });
    } catch (err) {
      // Usage is best effort: a lost batch only makes last_used_at a little stale.
      this.logger.warn({ err, keys: batch.length }, "could not report API key usage");
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}
