import { POLICY_EFFECTS, policyRuleSchema } from "@mcpgw/policy";
import { z } from "zod";
import { stdioLaunchSchema } from "./stdio-launch.ts";

export const upstreamEndpointSchema = z.object({ url: z.string(), weight: z.number().int().positive() });

export const serverEntrySchema = z.object({
  id: z.string(),
  namespace_id: z.string(),
  name: z.string(),
  transport: z.enum(["streamable_http", "sse", "stdio", "virtual"]),
  enabled: z.boolean(),
  endpoints: z.array(upstreamEndpointSchema),
  /** How a stdio server is launched (from the platform's catalog); null for other transports. */
  stdio: stdioLaunchSchema.nullable(),
  timeout_ms: z.number().int().positive(),
  connect_timeout_ms: z.number().int().positive(),
  retries: z.number().int().nonnegative(),
  credentials_sealed: z.string().nullable(),
});
export type ServerEntry = z.infer<typeof serverEntrySchema>;

export const namespaceEntrySchema = z.object({
  id: z.string(),
  slug: z.string(),
  name: z.string(),
  tool_naming: z.enum(["prefix", "none"]),
  tool_separator: z.string(),
});
export type NamespaceEntry = z.infer<typeof namespaceEntrySchema>;

const role = z.enum(["admin", "operator", "user", "viewer", "api_user"]);

export const apiKeyEntrySchema = z.object({
  id: z.string(),
  /** SHA-256 (hex) of the secret; the secret itself never leaves the control plane. */
  hash: z.string(),
  kind: z.enum(["user", "a2a"]),
  user_id: z.string().nullable(),
  /** The owner's role for user keys; `api_user` for a2a keys. */
  role,
  namespace_id: z.string().nullable(),
  permissions: z.array(z.string()),
  expires_at: z.string().nullable(),
});
export type ApiKeyEntry = z.infer<typeof apiKeyEntrySchema>;

/** Policy rules as the policy package defines them. */
export const policyEntrySchema = policyRuleSchema;

export const identityProviderEntrySchema = z.object({
  id: z.string(),
  issuer: z.string(),
  jwks_url: z.string(),
  audience: z.string(),
  role_claim: z.string(),
  role_mapping: z.record(z.string(), role),
  default_role: role,
  /** When the org registered it: an issuer trusted by several orgs resolves to the earliest. */
  registered_at: z.string().default(""),
});
export type IdentityProviderEntry = z.infer<typeof identityProviderEntrySchema>;

export const rateLimitScopes = [
  "ip",
  "user",
  "api_key",
  "org",
  "namespace",
  "server",
  "tool",
  "method",
] as const;

export const rateLimitEntrySchema = z.object({
  id: z.string(),
  name: z.string(),
  scope: z.enum(rateLimitScopes),
  /** Narrows where the rule applies: `server_id`, `namespace_id`, `tool` and `method` (globs). */
  match: z.record(z.string(), z.string()),
  // 0 admits nothing: a rule that stops the traffic it matches.
  limit: z.number().int().nonnegative(),
  window_s: z.number().int().positive(),
  burst: z.number().int().nonnegative().nullable(),
  block_s: z.number().int().nonnegative().nullable(),
  /** Points per tools/call by tool-name glob; 1 when none matches. */
  costs: z.record(z.string(), z.number().int().positive()),
});
export type RateLimitEntry = z.infer<typeof rateLimitEntrySchema>;

/** Everything the data plane needs for one organization, at one config version. */
export const orgSnapshotSchema = z.object({
  kind: z.literal("org"),
  org_id: z.string(),
  version: z.number().int().positive(),
  issued_at: z.string(),
  org: z.object({
    slug: z.string(),
    plan: z.string(),
    active: z.boolean(),
    max_sessions: z.number().int(),
    policy_default: z.enum(POLICY_EFFECTS),
    /** The platform administrators' own org (see the data plane's stdio isolation). */
    platform: z.boolean().default(false),
  }),
  namespaces: z.array(namespaceEntrySchema),
  servers: z.array(serverEntrySchema),
  api_keys: z.array(apiKeyEntrySchema),
  policies: z.array(policyEntrySchema),
  identity_providers: z.array(identityProviderEntrySchema),
  rate_limits: z.array(rateLimitEntrySchema),
});
export type OrgSnapshot = z.infer<typeof orgSnapshotSchema>;

/** What is shared by every org: token verification keys and revoked token ids. */
export const globalSnapshotSchema = z.object({
  kind: z.literal("global"),
  version: z.number().int().positive(),
  issued_at: z.string(),
  jwt: z.object({
    issuer: z.string(),
    audience: z.string(),
    keys: z.array(z.record(z.string(), z.unknown())),
  }),
  revoked_jti: z.array(z.string()),
  /** Users whose tokens issued before a time (epoch ms) are void: deactivated, deleted, new password. */
  revoked_subjects: z.record(z.string(), z.number()).default({}),
});
export type GlobalSnapshot = z.infer<typeof globalSnapshotSchema>;

export const snapshotSchema = z.discriminatedUnion("kind", [orgSnapshotSchema, globalSnapshotSchema]);
export type Snapshot = z.infer<typeof snapshotSchema>;

/** KV key of a snapshot: `global` or `org.<org id>`. */
export function snapshotKey(snapshot: Pick<Snapshot, "kind"> & { org_id?: string }): string {
  return snapshot.kind === "global" ? GLOBAL_KEY : orgKey(snapshot.org_id ?? "");
}

export const GLOBAL_KEY = "global";
export const orgKey = (orgId: string) => `org.${orgId}`;
