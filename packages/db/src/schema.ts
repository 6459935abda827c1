import { POLICY_EFFECTS } from "@mcpgw/policy";
import type { StdioParameter, StdioValue } from "@mcpgw/snapshot";
import {
  bigint,
  boolean,
  customType,
  index,
  integer,
  jsonb,
  pgEnum,
  pgTable,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from "drizzle-orm/pg-core";

/** Case-insensitive text (the citext extension) for emails and slugs. */
const citext = customType<{ data: string }>({
  dataType: () => "citext",
});

const timestamps = {
  created_at: timestamp("created_at", { withTimezone: true }).notNull().defaultNow(),
  updated_at: timestamp("updated_at", { withTimezone: true })
    .notNull()
    .defaultNow()
    .$onUpdate(() => new Date()),
};

const id = () => uuid("id").primaryKey().defaultRandom();
const orgRef = () =>
  uuid("org_id")
    .notNull()
    .references(() => organizations.id, { onDelete: "cascade" });

export const userRole = pgEnum("user_role", ["admin", "operator", "user", "viewer", "api_user"]);
export const apiKeyKind = pgEnum("api_key_kind", ["user", "a2a"]);
export const serverTransport = pgEnum("server_transport", ["streamable_http", "sse", "stdio", "virtual"]);
/** One data plane's word on a stdio server (see `mcp_servers.data_plane_reports`). */
export interface DataPlaneReport {
  ok: boolean;
  error: string | null;
  at: string;
}

export const serverStatus = pgEnum("server_status", ["unknown", "healthy", "unhealthy"]);
export const policyEffect = pgEnum("policy_effect", POLICY_EFFECTS);
export const rateLimitScope = pgEnum("rate_limit_scope", [
  "ip",
  "user",
  "api_key",
  "org",
  "namespace",
  "server",
  "tool",
  "method",
]);
export const virtualAdapter = pgEnum("virtual_adapter", ["rest", "openapi", "graphql"]);
export const toolNaming = pgEnum("tool_naming", ["prefix", "none"]);

export const organizations = pgTable("organizations", {
  id: id(),
  name: text("name").notNull(),
  slug: citext("slug").notNull().unique(),
  plan: text("plan").notNull().default("free"),
  max_servers: integer("max_servers").notNull().default(50),
  max_sessions: integer("max_sessions").notNull().default(1000),
  log_retention_days: integer("log_retention_days").notNull().default(30),
  active: boolean("active").notNull().default(true),
  /** What happens to a request no policy rule matches. */
  policy_default: policyEffect("policy_default").notNull().default("allow"),
  /** Bumped in the transaction of every config change; snapshots carry it. */
  config_version: bigint("config_version", { mode: "number" }).notNull().default(1),
  /** Highest version known to be in the KV bucket; lagging rows are the publish outbox. */
  published_version: bigint("published_version", { mode: "number" }).notNull().default(0),
  ...timestamps,
});

export const namespaces = pgTable(
  "namespaces",
  {
    id: id(),
    org_id: orgRef(),
    name: text("name").notNull(),
    slug: citext("slug").notNull(),
    description: text("description"),
    tool_naming: toolNaming("tool_naming").notNull().default("prefix"),
    tool_separator: text("tool_separator").notNull().default("__"),
    metadata: jsonb("metadata").$type<Record<string, unknown>>().notNull().default({}),
    ...timestamps,
  },
  (t) => [uniqueIndex("namespaces_org_slug_key").on(t.org_id, t.slug)],
);

export const users = pgTable(
  "users",
  {
    id: id(),
    org_id: orgRef(),
    email: citext("email").notNull().unique(),
    name: text("name").notNull().default(""),
    password_hash: text("password_hash"),
    role: userRole("role").notNull().default("user"),
    /** Platform administrators manage organizations; everyone else lives inside one org. */
    platform_admin: boolean("platform_admin").notNull().default(false),
    active: boolean("active").notNull().default(true),
    email_verified: boolean("email_verified").notNull().default(false),
    failed_logins: integer("failed_logins").notNull().default(0),
    locked_until: timestamp("locked_until", { withTimezone: true }),
    last_login_at: timestamp("last_login_at", { withTimezone: true }),
    ...timestamps,
  },
  (t) => [index("users_org_idx").on(t.org_id)],
);

export const apiKeys = pgTable(
  "api_keys",
  {
    id: id(),
    org_id: orgRef(),
    user_id: uuid("user_id").references(() => users.id, { onDelete: "cascade" }),
    namespace_id: uuid("namespace_id").references(() => namespaces.id, { onDelete: "cascade" }),
    name: text("name").notNull(),
    prefix: text("prefix").notNull().unique(),
    hash: text("hash").notNull().unique(),
    kind: apiKeyKind("kind").notNull().default("user"),
    permissions: jsonb("permissions").$type<string[]>().notNull().default([]),
    expires_at: timestamp("expires_at", { withTimezone: true }),
    last_used_at: timestamp("last_used_at", { withTimezone: true }),
    active: boolean("active").notNull().default(true),
    ...timestamps,
  },
  (t) => [index("api_keys_org_idx").on(t.org_id)],
);

export interface UpstreamEndpoint {
  url: string;
  weight: number;
}

/**
 * Launchable stdio servers, defined by platform administrators: the command, its argument
 * template and fixed environment, and the parameters an org may fill. Orgs create stdio servers
 * from an entry; they never write a command line (it would run on the data planes' hosts).
 */
export const stdioCatalog = pgTable("stdio_catalog", {
  id: id(),
  slug: citext("slug").notNull().unique(),
  name: text("name").notNull(),
  description: text("description"),
  command: text("command").notNull(),
  /** Argument template: `{{name}}` is replaced by the parameter's value. */
  args: jsonb("args").$type<string[]>().notNull().default([]),
  /** Fixed, non-secret environment of every process of this entry. */
  env: jsonb("env").$type<Record<string, string>>().notNull().default({}),
  parameters: jsonb("parameters").$type<StdioParameter[]>().notNull().default([]),
  enabled: boolean("enabled").notNull().default(true),
  ...timestamps,
});

export const mcpServers = pgTable(
  "mcp_servers",
  {
    id: id(),
    org_id: orgRef(),
    namespace_id: uuid("namespace_id")
      .notNull()
      .references(() => namespaces.id, { onDelete: "cascade" }),
    name: text("name").notNull(),
    description: text("description"),
    transport: serverTransport("transport").notNull(),
    url: text("url"),
    /** stdio servers: the catalog entry they launch, and the org's values for its parameters. */
    catalog_entry_id: uuid("catalog_entry_id").references(() => stdioCatalog.id, { onDelete: "restrict" }),
    parameters: jsonb("parameters").$type<Record<string, StdioValue>>().notNull().default({}),
    /** Secret parameter values, sealed with the master keyring (write-only). */
    secrets_sealed: text("secrets_sealed"),
    version: text("version"),
    endpoints: jsonb("endpoints").$type<UpstreamEndpoint[]>().notNull().default([]),
    timeout_ms: integer("timeout_ms").notNull().default(30_000),
    connect_timeout_ms: integer("connect_timeout_ms").notNull().default(5_000),
    retries: integer("retries").notNull().default(0),
    status: serverStatus("status").notNull().default("unknown"),
    health_check_enabled: boolean("health_check_enabled").notNull().default(true),
    health_check_interval_s: integer("health_check_interval_s").notNull().default(30),
    health_check_timeout_ms: integer("health_check_timeout_ms").notNull().default(5_000),
    last_health_check_at: timestamp("last_health_check_at", { withTimezone: true }),
    /** Why the server is unhealthy, short and safe to show (no upstream body); null while healthy. */
    last_error: text("last_error"),
    /**
     * stdio servers: what each data plane reports of running the command (refused by its
     * allowlist or isolation, crashed at start, or ran), by replica id.
     */
    data_plane_reports: jsonb("data_plane_reports")
      .$type<Record<string, DataPlaneReport>>()
      .notNull()
      .default({}),
    /** Upstream credentials, sealed with the master keyring (see @mcpgw/secrets). */
    credentials_sealed: text("credentials_sealed"),
    tags: jsonb("tags").$type<string[]>().notNull().default([]),
    metadata: jsonb("metadata").$type<Record<string, unknown>>().notNull().default({}),
    enabled: boolean("enabled").notNull().default(true),
    ...timestamps,
  },
  (t) => [
    uniqueIndex("mcp_servers_namespace_name_key").on(t.namespace_id, t.name),
    index("mcp_servers_org_idx").on(t.org_id),
  ],
);

/** Trusted external OIDC issuers of an org (tokens verified by data planes against their JWKS). */
export const identityProviders = pgTable(
  "identity_providers",
  {
    id: id(),
    org_id: orgRef(),
    name: text("name").notNull(),
    issuer: text("issuer").notNull(),
    jwks_url: text("jwks_url").notNull(),
    audience: text("audience").notNull(),
    /** Claim holding roles or groups, and how its values map to gateway roles. */
    role_claim: text("role_claim").notNull().default("roles"),
    role_mapping: jsonb("role_mapping").$type<Record<string, string>>().notNull().default({}),
    default_role: userRole("default_role").notNull().default("viewer"),
    enabled: boolean("enabled").notNull().default(true),
    ...timestamps,
  },
  (t) => [uniqueIndex("identity_providers_org_issuer_key").on(t.org_id, t.issuer)],
);

export const virtualServers = pgTable(
  "virtual_servers",
  {
    id: id(),
    org_id: orgRef(),
    namespace_id: uuid("namespace_id")
      .notNull()
      .references(() => namespaces.id, { onDelete: "cascade" }),
    name: text("name").notNull(),
    description: text("description"),
    adapter: virtualAdapter("adapter").notNull().default("rest"),
    base_url: text("base_url"),
    tools: jsonb("tools").$type<unknown[]>().notNull().default([]),
    enabled: boolean("enabled").notNull().default(true),
    ...timestamps,
  },
  (t) => [uniqueIndex("virtual_servers_namespace_name_key").on(t.namespace_id, t.name)],
);

export const mcpSessions = pgTable(
  "mcp_sessions",
  {
    id: id(),
    org_id: orgRef(),
    namespace_id: uuid("namespace_id").references(() => namespaces.id, { onDelete: "cascade" }),
    server_id: uuid("server_id").references(() => mcpServers.id, { onDelete: "set null" }),
    session_id: text("session_id").notNull().unique(),
    status: text("status").notNull().default("active"),
    transport: text("transport").notNull(),
    protocol_version: text("protocol_version"),
    client_info: jsonb("client_info").$type<Record<string, unknown>>(),
    principal: text("principal"),
    replica: text("replica"),
    process_pid: integer("process_pid"),
    process_status: text("process_status"),
    process_exit_code: integer("process_exit_code"),
    started_at: timestamp("started_at", { withTimezone: true }).notNull().defaultNow(),
    last_seen_at: timestamp("last_seen_at", { withTimezone: true }),
    ended_at: timestamp("ended_at", { withTimezone: true }),
    ...timestamps,
  },
  (t) => [index("mcp_sessions_org_ns_idx").on(t.org_id, t.namespace_id, t.started_at)],
);

export const policies = pgTable(
  "policies",
  {
    id: id(),
    org_id: orgRef(),
    name: text("name").notNull(),
    description: text("description"),
    effect: policyEffect("effect").notNull(),
    priority: integer("priority").notNull().default(100),
    /** Principal matchers: `user:<id>`, `role:<role>`, `key:<id>`, `a2a:<id>`, `*`. */
    principals: jsonb("principals").$type<string[]>().notNull().default(["*"]),
    namespaces: jsonb("namespaces").$type<string[]>().notNull().default(["*"]),
    servers: jsonb("servers").$type<string[]>().notNull().default(["*"]),
    tools: jsonb("tools").$type<string[]>().notNull().default(["*"]),
    enabled: boolean("enabled").notNull().default(true),
    ...timestamps,
  },
  (t) => [uniqueIndex("policies_org_name_key").on(t.org_id, t.name)],
);

export const rateLimits = pgTable(
  "rate_limits",
  {
    id: id(),
    org_id: orgRef(),
    name: text("name").notNull(),
    scope: rateLimitScope("scope").notNull(),
    /** Narrows the rule, e.g. `{ "server_id": "…", "tool": "search_*" }`. */
    match: jsonb("match").$type<Record<string, string>>().notNull().default({}),
    limit: integer("limit").notNull(),
    window_s: integer("window_s").notNull(),
    burst: integer("burst"),
    block_s: integer("block_s"),
    /** Points per call by tool pattern, e.g. `{ "expensive_*": 10 }`. */
    costs: jsonb("costs").$type<Record<string, number>>().notNull().default({}),
    enabled: boolean("enabled").notNull().default(true),
    ...timestamps,
  },
  (t) => [uniqueIndex("rate_limits_org_name_key").on(t.org_id, t.name)],
);

export const auditLogs = pgTable(
  "audit_logs",
  {
    id: id(),
    org_id: uuid("org_id").references(() => organizations.id, { onDelete: "cascade" }),
    actor_type: text("actor_type").notNull(),
    actor_id: text("actor_id"),
    action: text("action").notNull(),
    resource_type: text("resource_type").notNull(),
    resource_id: text("resource_id"),
    ip: text("ip"),
    request_id: text("request_id"),
    user_agent: text("user_agent"),
    /** `{ before, after }` with secrets redacted. */
    diff: jsonb("diff").$type<{ before?: unknown; after?: unknown }>().notNull().default({}),
    ...timestamps,
  },
  (t) => [
    index("audit_logs_org_created_idx").on(t.org_id, t.created_at),
    index("audit_logs_resource_idx").on(t.resource_type, t.resource_id),
  ],
);

export const logIndex = pgTable(
  "log_index",
  {
    id: id(),
    org_id: orgRef(),
    request_id: text("request_id").notNull(),
    namespace_id: uuid("namespace_id"),
    server_id: uuid("server_id"),
    principal: text("principal"),
    method: text("method"),
    tool: text("tool"),
    status: integer("status").notNull(),
    duration_ms: integer("duration_ms").notNull(),
    object_key: text("object_key").notNull(),
    line: integer("line").notNull(),
    occurred_at: timestamp("occurred_at", { withTimezone: true }).notNull(),
    ...timestamps,
  },
  (t) => [index("log_index_org_time_idx").on(t.org_id, t.occurred_at)],
);

export const logAggregates = pgTable(
  "log_aggregates",
  {
    id: id(),
    org_id: orgRef(),
    server_id: uuid("server_id"),
    hour: timestamp("hour", { withTimezone: true }).notNull(),
    requests: integer("requests").notNull().default(0),
    errors: integer("errors").notNull().default(0),
    total_duration_ms: bigint("total_duration_ms", { mode: "number" }).notNull().default(0),
    ...timestamps,
  },
  (t) => [uniqueIndex("log_aggregates_key").on(t.org_id, t.server_id, t.hour)],
);

export const healthChecks = pgTable(
  "health_checks",
  {
    id: id(),
    org_id: orgRef(),
    server_id: uuid("server_id")
      .notNull()
      .references(() => mcpServers.id, { onDelete: "cascade" }),
    status: serverStatus("status").notNull(),
    latency_ms: integer("latency_ms"),
    error: text("error"),
    checked_at: timestamp("checked_at", { withTimezone: true }).notNull().defaultNow(),
    ...timestamps,
  },
  (t) => [index("health_checks_server_time_idx").on(t.server_id, t.checked_at)],
);

export const serverStats = pgTable(
  "server_stats",
  {
    id: id(),
    org_id: orgRef(),
    server_id: uuid("server_id")
      .notNull()
      .references(() => mcpServers.id, { onDelete: "cascade" }),
    day: timestamp("day", { withTimezone: true }).notNull(),
    requests: integer("requests").notNull().default(0),
    errors: integer("errors").notNull().default(0),
    total_duration_ms: bigint("total_duration_ms", { mode: "number" }).notNull().default(0),
    ...timestamps,
  },
  (t) => [uniqueIndex("server_stats_key").on(t.server_id, t.day)],
);

export const refreshTokens = pgTable(
  "refresh_tokens",
  {
    id: id(),
    user_id: uuid("user_id")
      .notNull()
      .references(() => users.id, { onDelete: "cascade" }),
    family_id: uuid("family_id").notNull(),
    token_hash: text("token_hash").notNull().unique(),
    expires_at: timestamp("expires_at", { withTimezone: true }).notNull(),
    revoked_at: timestamp("revoked_at", { withTimezone: true }),
    replaced_by: uuid("replaced_by"),
    ...timestamps,
  },
  (t) => [index("refresh_tokens_family_idx").on(t.family_id)],
);

/** Access tokens revoked before expiry (logout); carried in the global snapshot until they expire. */
export const revokedTokens = pgTable("revoked_tokens", {
  jti: text("jti").primaryKey(),
  expires_at: timestamp("expires_at", { withTimezone: true }).notNull(),
  ...timestamps,
});

/** Keys the control plane signs access tokens with; private halves sealed at rest. */
export const signingKeys = pgTable("signing_keys", {
  kid: text("kid").primaryKey(),
  alg: text("alg").notNull(),
  public_jwk: jsonb("public_jwk").$type<Record<string, unknown>>().notNull(),
  private_jwk_sealed: text("private_jwk_sealed").notNull(),
  active: boolean("active").notNull().default(true),
  retired_at: timestamp("retired_at", { withTimezone: true }),
  ...timestamps,
});

/** One row (id = 1): the version of the global snapshot (signing keys, revocations). */
export const globalConfig = pgTable("global_config", {
  id: integer("id").primaryKey().default(1),
  config_version: bigint("config_version", { mode: "number" }).notNull().default(1),
  published_version: bigint("published_version", { mode: "number" }).notNull().default(0),
  ...timestamps,
});
