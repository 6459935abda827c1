import { z } from "zod";

/** Job names and payloads, shared by producers and processors. */
export const jobs = {
  /** Finds servers due for health checks and keeps one schedule per server. */
  healthSweep: { name: "health-sweep", payload: z.object({}) },
  /** MCP initialize + ping against one server's upstream. */
  healthCheck: { name: "health-check", payload: z.object({ server_id: z.uuid() }) },
  /** Data planes report which API keys were used; the worker records `last_used_at`. */
  apiKeyUsage: {
    name: "api-key-usage",
    payload: z.object({ key_ids: z.array(z.uuid()).min(1).max(10_000), used_at: z.iso.datetime() }),
  },
} as const;

export type JobName = (typeof jobs)[keyof typeof jobs]["name"];
export type HealthCheckPayload = z.infer<typeof jobs.healthCheck.payload>;
export type ApiKeyUsagePayload = z.infer<typeof jobs.apiKeyUsage.payload>;
