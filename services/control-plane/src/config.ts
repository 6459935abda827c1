import { z } from "zod";

const bool = z
  .enum(["true", "false", "1", "0"])
  .transform((v) => v === "true" || v === "1")
  .optional();

const schema = z.object({
  CP_PORT: z.coerce.number().int().min(0).max(65535).default(8081),
  CP_HOST: z.string().default("0.0.0.0"),
  DATABASE_URL: z.string().min(1, "DATABASE_URL is required (postgres://… or pglite://<dir>)"),
  NATS_URL: z.string().min(1, "NATS_URL is required"),
  MCPGW_BUS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_-]+$/)
    .default("mcpgw"),
  MCPGW_MASTER_KEY: z.string().min(1, "MCPGW_MASTER_KEY is required (32 bytes, base64)"),
  MCPGW_MASTER_KEY_PREVIOUS: z.string().optional(),
  MCPGW_SNAPSHOT_SIGNING_KEY: z.string().min(1, "MCPGW_SNAPSHOT_SIGNING_KEY is required (see `pnpm keygen`)"),
  MCPGW_JWT_ISSUER: z.string().default("mcpgw"),
  MCPGW_JWT_AUDIENCE: z.string().default("mcpgw"),
  MCPGW_ACCESS_TOKEN_TTL_S: z.coerce.number().int().positive().default(900),
  MCPGW_ALLOW_PRIVATE_UPSTREAMS: bool,
  MCPGW_ADMIN_EMAIL: z.string().email().optional(),
  MCPGW_ADMIN_PASSWORD: z.string().min(12).optional(),
  MCPGW_PUBLISH_SWEEP_MS: z.coerce.number().int().positive().default(2_000),
  OTEL_EXPORTER_OTLP_ENDPOINT: z.string().optional(),
  /** `/metrics` needs `Authorization: Bearer <it>` when set. */
  MCPGW_METRICS_TOKEN: z.string().min(16, "MCPGW_METRICS_TOKEN: at least 16 characters").optional(),
});

export type ControlPlaneConfig = z.infer<typeof schema>;

/** Parses the control plane's environment once, failing fast with every problem listed. */
export function loadControlPlaneConfig(env: NodeJS.ProcessEnv = process.env): ControlPlaneConfig {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join(".")}: ${i.message}`);
    throw new Error(`invalid control-plane configuration:\n${lines.join("\n")}`);
  }
  return parsed.data;
}
