import { type Db, schema } from "@mcpgw/db";
import type { GlobalSnapshot, OrgSnapshot } from "@mcpgw/snapshot";
import { eq, gt } from "drizzle-orm";
import type { TokenIssuer } from "../auth/token-issuer.ts";

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
      return {
        kind: "org",
        org_id: org.id,
        version: org.config_version,
        issued_at: new Date().toISOString(),
        org: { slug: org.slug, plan: org.plan, active: org.active, max_sessions: org.max_sessions },
        namespaces: namespaces.map((n) => ({
          id: n.id,
          slug: n.slug,
          name: n.name,
          tool_naming: n.tool_naming,
          tool_separator: n.tool_separator,
        })),
        servers: servers.map((s) => ({
          id: s.id,
          namespace_id: s.namespace_id,
          name: s.name,
          transport: s.transport,
          enabled: s.enabled,
          endpoints: s.endpoints,
          command: s.command,
          args: s.args,
          env: s.env,
          cwd: s.cwd,
          timeout_ms: s.timeout_ms,
          connect_timeout_ms: s.connect_timeout_ms,
          retries: s.retries,
          credentials_sealed: s.credentials_sealed,
        })),
      } satisfies OrgSnapshot;
    },
    { isolationLevel: "repeatable read", accessMode: "read only" },
  );
}

/** The global snapshot: token verification keys and unexpired revoked token ids. */
export async function compileGlobalSnapshot(db: Db, tokens: TokenIssuer): Promise<GlobalSnapshot> {
  const [global] = await db.select().from(schema.globalConfig).where(eq(schema.globalConfig.id, 1));
  const revoked = await db
    .select({ jti: schema.revokedTokens.jti })
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
    revoked_jti: revoked.map((r) => r.jti),
  };
}
