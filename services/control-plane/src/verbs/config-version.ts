import { schema, type Tx } from "@mcpgw/db";
import { eq, sql } from "drizzle-orm";

/** Bumps the org's config version in the change's transaction; the publisher ships it after commit. */
export async function bumpOrgVersion(tx: Tx, orgId: string): Promise<void> {
  await tx
    .update(schema.organizations)
    .set({ config_version: sql`${schema.organizations.config_version} + 1` })
    .where(eq(schema.organizations.id, orgId));
}
