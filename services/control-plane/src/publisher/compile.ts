import { type Db, schema } from "@mcpgw/db";
import type { GlobalSnapshot, OrgSnapshot } from "@mcpgw/snapshot";
import { and, eq, gt, inArray } from "drizzle-orm";
import type { TokenIssuer } from "../auth/token-issuer.ts";
import { SUBJECT_PREFIX } from "../verbs/auth.ts";
import { planRateLimits } from "../verbs/plans.ts";

/**
 * Reads an org's configuration at one version. Runs in a repeatable-read transaction so the
 * content and the version number come from the same database snapshot.
 */
export async function compileOrgSnapshot(db: Db, orgId: string): Promise<OrgSnapshot | null> {
  return db.transaction(
    async (tx) => {
      const [org] = await tx.select().from(schema.organizations).where(eq(schema.organizations.id, orgId));
      if (!org) return null;
      const namespaces = await tx.select().from(schema.namespaces).where(eq(schema.namespaces.org_id, orgId));
      const servers = await tx.select().from(schema.mcpServers).where(eq(schema.mcpServers.org_id, orgId));
      const entryIds = [...new Set(servers.flatMap((s) => (s.catalog_entry_id ? [s.catalog_entry_id] : [])))];
      const entries = new Map(
        (entryIds.length
          ? await tx.select().from(schema.stdioCatalog).where(inArray(schema.stdioCatalog.id, entryIds))
          : []
        ).map((e) => [e.id, e]),
      );
      const [platformAdmin] = await tx
        .select({ id: schema.users.id })
        .from(schema.users)
        .where(and(eq(schema.users.org_id, orgId), eq(schema.users.platform_admin, true)))
        .limit(1);
      const keys = await tx
        .select({ key: schema.apiKeys, owner_role: schema.users.role, owner_active: schema.users.active })
        .from(schema.apiKeys)
        .leftJoin(schema.users, eq(schema.users.id, schema.apiKeys.user_id))
        .where(and(eq(schema.apiKeys.org_id, orgId), eq(schema.apiKeys.active, true)));
      const policies = await tx.select().from(schema.policies).where(eq(schema.policies.org_id, orgId));
      const rateLimits = await tx
        .select()
        .from(schema.rateLimits)
        .where(and(eq(schema.rateLimits.org_id, orgId), eq(schema.rateLimits.enabled, true)));
      const idps = await tx
        .select()
        .from(schema.identityProviders)
        .where(and(eq(schema.identityProviders.org_id, orgId), eq(schema.identityProviders.enabled, true)));
      return {
        kind: "org",
        org_id: org.id,
        version: org.config_version,
        issued_at: new Date().toISOString(),
        org: {
          slug: org.slug,
          plan: org.plan,
          active: org.active,
          max_sessions: org.max_sessions,
          policy_default: org.policy_default,
          platform: platformAdmin !== undefined,
        },
        namespaces: namespaces.map((n) => ({
          id: n.id,
          slug: n.slug,
          name: n.name,
          tool_naming: n.tool_naming,
          tool_separator: n.tool_separator,
        })),
        servers: servers.map((s) => {
          const entry = s.catalog_entry_id ? entries.get(s.catalog_entry_id) : undefined;
          return {
            id: s.id,
            namespace_id: s.namespace_id,
            name: s.name,
            transport: s.transport,
            // A disabled catalog entry disables every server made from it.
            enabled: s.enabled && (s.transport !== "stdio" || entry?.enabled === true),
            endpoints: s.endpoints,
            stdio:
              s.transport === "stdio" && entry
                ? {
                    catalog_entry_id: entry.id,
                    command: entry.command,
                    args: entry.args,
                    env: entry.env,
                    parameters: entry.parameters,
                    values: s.parameters,
                    secrets_sealed: s.secrets_sealed,
                  }
                : null,
            timeout_ms: s.timeout_ms,
            connect_timeout_ms: s.connect_timeout_ms,
            retries: s.retries,
            credentials_sealed: s.credentials_sealed,
          };
        }),
        api_keys: keys
          // A user key lives only while its user does.
          .filter(({ key, owner_active }) => key.kind === "a2a" || owner_active === true)
          .map(({ key, owner_role }) => ({
            id: key.id,
            hash: key.hash,
            kind: key.kind,
            user_id: key.user_id,
            role: key.kind === "a2a" ? "api_user" : (owner_role ?? "viewer"),
            namespace_id: key.namespace_id,
            permissions: key.permissions,
            expires_at: key.expires_at?.toISOString() ?? null,
          })),
        policies: policies.map((p) => ({
          id: p.id,
          name: p.name,
          effect: p.effect,
          priority: p.priority,
          principals: p.principals,
          namespaces: p.namespaces,
          servers: p.servers,
          tools: p.tools,
          enabled: p.enabled,
        })),
        identity_providers: idps.map((i) => ({
          id: i.id,
          issuer: i.issuer,
          jwks_url: i.jwks_url,
          audience: i.audience,
          role_claim: i.role_claim,
          role_mapping: i.role_mapping as Record<
            string,
            "admin" | "operator" | "user" | "viewer" | "api_user"
          >,
          default_role: i.default_role,
          registered_at: i.created_at.toISOString(),
        })),
        rate_limits: [
          ...planRateLimits(org.plan),
          ...rateLimits.map((r) => ({
            id: r.id,
            name: r.name,
            scope: r.scope,
            match: r.match,
            limit: r.limit,
            window_s: r.window_s,
            burst: r.burst,
            block_s: r.block_s,
            costs: r.costs,
          })),
        ],
      } satisfies OrgSnapshot;
    },
    { isolationLevel: "repeatable read", accessMode: "read only" },
  );
}

/** The global snapshot: token verification keys and unexpired revoked token ids. */
export async function compileGlobalSnapshot(db: Db, tokens: TokenIssuer): Promise<GlobalSnapshot> {
  const [global] = await db.select().from(schema.globalConfig).where(eq(schema.globalConfig.id, 1));
  const revoked = await db
    .select({ jti: schema.revokedTokens.jti, created_at: schema.revokedTokens.created_at })
    .from(schema.revokedTokens)
    .where(gt(schema.revokedTokens.expires_at, new Date()));
  return {
    kind: "global",
    version: global?.config_version ?? 1,
    issued_at: new Date().toISOString(),
    jwt: {
      issuer: tokens.issuer,
      audience: tokens.audience,
      keys: (await tokens.publicKeys()) as Record<string, unknown>[],
    },
    revoked_jti: revoked.filter((r) => !r.jti.startsWith(SUBJECT_PREFIX)).map((r) => r.jti),
    revoked_subjects: Object.fromEntries(
      revoked
        .filter((r) => r.jti.startsWith(SUBJECT_PREFIX))
        .map((r) => [r.jti.slice(SUBJECT_PREFIX.length), r.created_at.getTime()]),
    ),
  };
}
