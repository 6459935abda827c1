import { z } from "zod";

/** Job names and payloads, shared by producers and processors. */
export const jobs = {
  /** Finds servers due for health checks and keeps one schedule per server. */
  healthSweep: { name: "health-sweep", payload: z.object({}) },
  /** MCP initialize + ping against one server's upstream. */
  healthCheck: { name: "health-check", payload: z.object({ server_id: z.uuid() }) },
  /** Data planes report which API keys were used; the worker records `last_used_at`. */
  /** Data planes report MCP sessions starting and ending; the worker keeps `mcp_sessions`. */
  sessionEvents: {
    name: "session-events",
    payload: z.object({
      events: z
        .array(
          z.object({
            event: z.enum(["start", "end"]),
            session_id: z.string().min(1).max(600),
            org_id: z.uuid(),
            namespace_id: z.uuid().nullable(),
            server_id: z.uuid().nullable(),
            transport: z.string().max(32),
            protocol_version: z.string().max(32).nullable(),
            client_info: z.record(z.string(), z.unknown()).nullable(),
            principal: z.string().max(600),
            replica: z.string().max(200),
            process_pid: z.number().int().nullable(),
            at: z.iso.datetime(),
          }),
        )
        .min(1)
        .max(10_000),
    }),
  },
  /** Data planes report whether they can run stdio servers (allowlist, isolation, crashes at start). */
  stdioReports: {
    name: "stdio-reports",
    payload: z.object({
      replica: z.string().min(1).max(200),
      reports: z
        .array(
          z.object({
            server_id: z.uuid(),
            ok: z.boolean(),
            error: z.string().max(500).nullable(),
            at: z.iso.datetime(),
          }),
        )
        .min(1)
        .max(10_000),
    }),
  },
  apiKeyUsage: {
    name: "api-key-usage",
    payload: z.object({ key_ids: z.array(z.uuid()).min(1).max(10_000), used_at: z.iso.datetime() }),
  },
} as const;

export type JobName = (typeof jobs)[keyof typeof jobs]["name"];
export type HealthCheckPayload = z.infer<typeof jobs.healthCheck.payload>;
export type SessionEventsPayload = z.infer<typeof jobs.sessionEvents.payload>;
export type SessionEvent = SessionEventsPayload["events"][number];
export type ApiKeyUsagePayload = z.infer<typeof jobs.apiKeyUsage.payload>;
export type StdioReportsPayload = z.infer<typeof jobs.stdioReports.payload>;
export type StdioReport = StdioReportsPayload["reports"][number];
