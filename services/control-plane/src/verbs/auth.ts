import { type Db, schema } from "@mcpgw/db";
import { eq } from "drizzle-orm";
import { hashPassword, verifyPassword } from "../auth/passwords.ts";
import type { TokenIssuer } from "../auth/token-issuer.ts";
import { unauthorized } from "../errors.ts";

export interface LoginResult {
  access_token: string;
  token_type: "Bearer";
  expires_in: number;
  user: { id: string; email: string; name: string; role: string; org_id: string };
}

/** Exchanges email and password for a short-lived access token. */
export async function login({
  db,
  tokens,
  email,
  password,
}: {
  db: Db;
  tokens: TokenIssuer;
  email: string;
  password: string;
}): Promise<LoginResult> {
  const [user] = await db.select().from(schema.users).where(eq(schema.users.email, email));
  const ok = await verifyPassword(user?.password_hash, password);
  if (!user || !ok || !user.active) throw unauthorized("invalid email or password");
  await db.update(schema.users).set({ last_login_at: new Date() }).where(eq(schema.users.id, user.id));
  const { token, expiresIn } = await tokens.issue({
    sub: user.id,
    org_id: user.org_id,
    role: user.role,
    platform_admin: user.platform_admin,
  });
  return {
    access_token: token,
    token_type: "Bearer",
    expires_in: expiresIn,
    user: { id: user.id, email: user.email, name: user.name, role: user.role, org_id: user.org_id },
  };
}

/**
 * First start: creates the default organization and its admin when no user exists yet.
 * Returns the generated password when none was given, so the caller can print it once.
 */
export async function bootstrapAdmin({
  db,
  email,
  password,
}: {
  db: Db;
  email?: string | undefined;
  password?: string | undefined;
}): Promise<{ email: string; password?: string } | null> {
  const [anyUser] = await db.select({ id: schema.users.id }).from(schema.users).limit(1);
  if (anyUser) return null;
  const adminEmail = email ?? "admin@mcpgw.local";
  const generated = password
    ? undefined
    : Buffer.from(crypto.getRandomValues(new Uint8Array(18))).toString("base64url");
  const passwordHash = await hashPassword(password ?? generated!);
  await db.transaction(async (tx) => {
    const [org] = await tx
      .insert(schema.organizations)
      .values({ name: "Default", slug: "default" })
      .onConflictDoNothing()
      .returning();
    const orgId =
      org?.id ??
      (await tx.select().from(schema.organizations).where(eq(schema.organizations.slug, "default")))[0]!.id;
    await tx
      .insert(schema.users)
      .values({
        org_id: orgId,
        email: adminEmail,
        name: "Administrator",
        password_hash: passwordHash,
        role: "admin",
        platform_admin: true,
      })
      .onConflictDoNothing();
    await tx.insert(schema.auditLogs).values({
      org_id: orgId,
      actor_type: "system",
      action: "user.bootstrap",
      resource_type: "user",
      resource_id: adminEmail,
      diff: { after: { email: adminEmail, role: "admin" } },
    });
  });
  return { email: adminEmail, ...(generated ? { password: generated } : {}) };
}
