import { z } from "zod";

const schema = z.object({
  DATABASE_URL: z.string().min(1, "DATABASE_URL is required"),
  REDIS_URL: z.string().min(1, "REDIS_URL is required"),
  NATS_URL: z.string().min(1, "NATS_URL is required"),
  MCPGW_BUS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_-]+$/)
    .default("mcpgw"),
  MCPGW_QUEUE_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_:-]+$/)
    .default("mcpgw"),
  MCPGW_MASTER_KEY: z.string().optional(),
  MCPGW_MASTER_KEY_PREVIOUS: z.string().optional(),
  WORKER_CONCURRENCY: z.coerce.number().int().positive().default(8),
  WORKER_HEALTH_SWEEP_MS: z.coerce.number().int().positive().default(5_000),
  /** Health probes may reach upstreams on private addresses (checked at each connection otherwise). */
  MCPGW_ALLOW_PRIVATE_UPSTREAMS: z
    .enum(["true", "false", "1", "0"])
    .transform((v) => v === "true" || v === "1")
    .default(false),
});

export type WorkerConfig = z.infer<typeof schema>;

/** Parses the worker's environment once, failing fast with every problem listed. */
export function loadWorkerConfig(env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join(".")}: ${i.message}`);
    throw new Error(`invalid worker configuration:\n${lines.join("\n")}`);
  }
  return parsed.data;
}
