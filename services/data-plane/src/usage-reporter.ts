import { type JobProducer, jobs, type SessionEvent, type StdioReport } from "@mcpgw/queue";
import type { Logger } from "@mcpgw/telemetry";

/**
 * Hands the worker what it records for the data plane, in batches and off the request path:
 * which API keys authenticated requests (`last_used_at`) and MCP sessions starting and ending
 * (`mcp_sessions`). A slow or absent Redis never delays a request.
 */
export class UsageReporter {
  private keys = new Set<string>();
  private sessions: SessionEvent[] = [];
  private stdioReports = new Map<string, StdioReport>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly producer: JobProducer | undefined,
    private readonly logger: Logger,
    private readonly replicaId: string,
    flushMs = 2_000,
  ) {
    this.timer = setInterval(() => void this.flush(), flushMs);
    this.timer.unref();
  }

  keyUsed = (keyId: string): void => {
    if (this.producer) this.keys.add(keyId);
  };

  session = (event: Omit<SessionEvent, "at" | "replica">): void => {
    if (!this.producer) return;
    this.sessions.push({ ...event, replica: this.replicaId, at: new Date().toISOString() });
    if (this.sessions.length >= 1000) void this.flush();
  };

  /** This replica's word on a stdio server (the latest per server is sent). */
  stdio = (serverId: string, report: { ok: boolean; error: string | null }): void => {
    if (!this.producer) return;
    const error = report.error?.slice(0, 500) ?? null;
    this.stdioReports.set(serverId, {
      server_id: serverId,
      ok: report.ok,
      error,
      at: new Date().toISOString(),
    });
  };

  async flush(): Promise<void> {
    if (!this.producer) return;
    if (this.stdioReports.size > 0) {
      const reports = [...this.stdioReports.values()];
      this.stdioReports = new Map();
      await this.producer.enqueue(jobs.stdioReports, { replica: this.replicaId, reports }).catch((err) => {
        this.logger.warn({ err, reports: reports.length }, "could not report stdio servers");
        // Sent with the next flush, unless a newer word on the same server came meanwhile.
        for (const r of reports)
          if (!this.stdioReports.has(r.server_id)) this.stdioReports.set(r.server_id, r);
      });
    }
    if (this.sessions.length > 0) {
      const events = this.sessions;
      this.sessions = [];
      await this.producer.enqueue(jobs.sessionEvents, { events }).catch((err) => {
        this.logger.warn({ err, events: events.length }, "could not report session events");
      });
    }
    if (this.keys.size === 0) return;
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
