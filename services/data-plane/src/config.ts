import { hostname } from "node:os";
import { z } from "zod";

const schema = z.object({
  DP_PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  DP_HOST: z.string().default("0.0.0.0"),
  NATS_URL: z.string().min(1, "NATS_URL is required"),
  MCPGW_BUS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_-]+$/)
    .default("mcpgw"),
  MCPGW_SNAPSHOT_PUBLIC_KEY: z.string().min(1, "MCPGW_SNAPSHOT_PUBLIC_KEY is required (see `pnpm keygen`)"),
  MCPGW_DATA_DIR: z.string().default(".mcpgw"),
  MCPGW_MAX_BODY_BYTES: z.coerce
    .number()
    .int()
    .positive()
    .default(4 * 1024 * 1024),
  MCPGW_REPLICA_ID: z.string().default(hostname()),
  MCPGW_PUBLIC_URL: z.string().url().optional(),
  /** Host names clients use besides loopback and MCPGW_PUBLIC_URL's (comma-separated; `*`: any). */
  MCPGW_ALLOWED_HOSTS: z.string().default(""),
  /** Browser origins allowed besides the gateway's own names (comma-separated; `*`: any). */
  MCPGW_ALLOWED_ORIGINS: z.string().default(""),
  MCPGW_MASTER_KEY: z.string().optional(),
  MCPGW_MASTER_KEY_PREVIOUS: z.string().optional(),
  REDIS_URL: z.string().optional(),
  MCPGW_QUEUE_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_:-]+$/)
    .default("mcpgw"),
  MCPGW_RATE_LIMIT_REPLICAS: z.coerce.number().int().positive().default(1),
  MCPGW_TRUSTED_PROXIES: z.string().optional(),
  MCPGW_ALLOW_PRIVATE_UPSTREAMS: z
    .enum(["true", "false", "1", "0"])
    .transform((v) => v === "true" || v === "1")
    .default(false),
  MCPGW_STDIO_ALLOWED_COMMANDS: z.string().default(""),
  MCPGW_STDIO_MAX_PROCESSES: z.coerce.number().int().positive().default(32),
  /** Shares of the processes one org / one principal may hold (default: half / a quarter). */
  MCPGW_STDIO_MAX_PER_ORG: z.coerce.number().int().positive().optional(),
  MCPGW_STDIO_MAX_PER_PRINCIPAL: z.coerce.number().int().positive().optional(),
  /** When the data plane runs as root, stdio children run as this unprivileged user (name or uid[:gid]). */
  MCPGW_STDIO_USER: z.string().min(1).default("mcpgw-stdio"),
  /** Not root and no sandbox: run every org's stdio servers anyway (children share this identity). */
  MCPGW_STDIO_ALLOW_SHARED_IDENTITY: z
    .enum(["true", "false", "1", "0"])
    .transform((v) => v === "true" || v === "1")
    .default(false),
  MCPGW_STDIO_SANDBOX: z.enum(["none", "bwrap"]).default("none"),
  /**
   * With MCPGW_STDIO_SANDBOX=bwrap: `none` gives children a network namespace of their own (no
   * network, not even the host's loopback); `host` lets them reach what this data plane reaches.
   */
  MCPGW_STDIO_SANDBOX_NETWORK: z.enum(["none", "host"]).default("none"),
  MCPGW_STDIO_UNUSED_TIMEOUT_MS: z.coerce.number().int().positive().default(60_000),
  MCPGW_STDIO_POOL_SIZE: z.coerce.number().int().min(0).default(1),
  MCPGW_STDIO_IDLE_TIMEOUT_MS: z.coerce.number().int().positive().default(300_000),
  MCPGW_SESSION_IDLE_TIMEOUT_MS: z.coerce.number().int().positive().default(900_000),
  MCPGW_AGGREGATE_MEMBER_TIMEOUT_MS: z.coerce.number().int().positive().default(5_000),
  OTEL_EXPORTER_OTLP_ENDPOINT: z.string().optional(),
  /** `/metrics` needs `Authorization: Bearer <it>` when set. */
  MCPGW_METRICS_TOKEN: z.string().min(16, "MCPGW_METRICS_TOKEN: at least 16 characters").optional(),
  /** Label series with server ids (they name every tenant's servers to whoever scrapes). */
  MCPGW_METRICS_TENANT_LABELS: z
    .enum(["true", "false", "1", "0"])
    .transform((v) => v === "true" || v === "1")
    .default(false),
});

export type DataPlaneConfig = z.infer<typeof schema>;

/** Parses the data plane's environment once, failing fast with every problem listed. */
export function loadDataPlaneConfig(env: NodeJS.ProcessEnv = process.env): DataPlaneConfig {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join(".")}: ${i.message}`);
    throw new Error(`invalid data-plane configuration:\n${lines.join("\n")}`);
  }
  return parsed.data;
}

/** The URL this process reaches its own listener at (a wildcard bind answers on loopback). */
export function loopbackUrl(host: string, port: number): string {
  const h = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
  return `http://${h.includes(":") ? `[${h}]` : h}:${port}`;
}

/** A comma-separated setting as a list. */
export const list = (value: string): string[] =>
  value
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
