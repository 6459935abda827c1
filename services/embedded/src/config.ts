import { z } from "zod";

const bool = z.enum(["true", "false", "1", "0"]).transform((v) => v === "true" || v === "1");

const schema = z.object({
  MCPGW_DATA_DIR: z.string().default(".mcpgw"),
  DP_PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  CP_PORT: z.coerce.number().int().min(0).max(65535).default(8081),
  MCPGW_HOST: z.string().default("127.0.0.1"),
  MCPGW_PUBLIC_URL: z.string().url().optional(),
  MCPGW_ALLOWED_HOSTS: z.string().default(""),
  MCPGW_ALLOWED_ORIGINS: z.string().default(""),
  MCPGW_ADMIN_EMAIL: z.string().email().optional(),
  MCPGW_ADMIN_PASSWORD: z.string().min(12, "MCPGW_ADMIN_PASSWORD must be at least 12 characters").optional(),
  MCPGW_JWT_ISSUER: z.string().default("mcpgw"),
  MCPGW_JWT_AUDIENCE: z.string().default("mcpgw"),
  MCPGW_ACCESS_TOKEN_TTL_S: z.coerce.number().int().positive().default(900),
  // Embedded mode is for a laptop or a single host: upstreams on localhost are the common case.
  MCPGW_ALLOW_PRIVATE_UPSTREAMS: bool.default(true),
  MCPGW_MAX_BODY_BYTES: z.coerce
    .number()
    .int()
    .positive()
    .default(4 * 1024 * 1024),
  // Only admins register stdio servers; on a single-user install the usual launchers are allowed.
  MCPGW_STDIO_ALLOWED_COMMANDS: z.string().default("node,npx,uvx,python,python3,deno,bun"),
  // Commands come from the platform admins' catalog. On a single-user install run as that user,
  // stdio children share its identity (said at start); run as root, they get MCPGW_STDIO_USER.
  MCPGW_STDIO_USER: z.string().min(1).default("mcpgw-stdio"),
  MCPGW_STDIO_ALLOW_SHARED_IDENTITY: bool.default(true),
  MCPGW_STDIO_SANDBOX: z.enum(["none", "bwrap"]).default("none"),
  WORKER_HEALTH_SWEEP_MS: z.coerce.number().int().positive().default(5_000),
  /** `/metrics` of both planes needs `Authorization: Bearer <it>` when set (as in distributed mode). */
  MCPGW_METRICS_TOKEN: z.string().min(16, "MCPGW_METRICS_TOKEN: at least 16 characters").optional(),
});

export type EmbeddedConfig = z.infer<typeof schema>;

/** Parses the embedded gateway's environment, failing fast with a readable message. */
export function loadEmbeddedConfig(env: NodeJS.ProcessEnv = process.env): EmbeddedConfig {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join(".")}: ${i.message}`);
    throw new Error(`invalid configuration:\n${lines.join("\n")}`);
  }
  return parsed.data;
}
