import { z } from "zod";

/** Job names and payloads, shared by producers and processors. */
export const jobs = {
  /** Finds servers due for health checks and keeps one schedule per server. */
  healthSweep: { name: "health-sweep", payload: z.object({}) },
  /** MCP initialize + ping against one server's upstream. */
  healthCheck: { name: "health-check", payload: z.object({ server_id: z.uuid() }) },
} as const;

export type JobName = (typeof jobs)[keyof typeof jobs]["name"];
export type HealthCheckPayload = z.infer<typeof jobs.healthCheck.payload>;
