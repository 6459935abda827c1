import { randomUUID } from "node:crypto";
import { type Db, schema, type Tx } from "@mcpgw/db";
import { and, eq, gt, inArray, sql } from "drizzle-orm";
import { recordAudit } from "../audit.ts";
import { type LoginThrottle, lockSeconds, tooManyAttempts } from "../auth/login-throttle.ts";
import { hashPassword, verifyPassword } from "../auth/passwords.ts";
import {
  issueRefreshToken,
  revokeRefreshFamily,
  rotateRefreshToken,
  sha256,
} from "../auth/refresh-tokens.ts";
import type { TokenIssuer, VerifiedAccess } from "../auth/token-issuer.ts";
import type { Actor, PublishTrigger, RequestMeta, Role } from "../context.ts";
import { assertChanges, forbidden, unauthorized, validation } from "../errors.ts";

export interface TokenPair {
  access_token: string;
  token_type: "Bearer";
  expires_in: number;
  refresh_token: string;
  user: { id: string; email: string; name: string; role: string; org_id: string };
}

export interface AuthDeps {
  db: Db;
  tokens: TokenIssuer;
  throttle: LoginThrottle;
  publisher: PublishTrigger;
}

type UserRow = typeof schema.users.$inferSelect;

/** An access token with the user row's current role, tied to the refresh token's family. */
async function tokenPair(
  deps: AuthDeps,
  user: UserRow,
  refresh: { token: string; familyId: string },
): Promise<TokenPair> {
  const { token, expiresIn } = await deps.tokens.issue({
    sub: user.id,
    org_id: user.org_id,
    role: user.role,
    platform_admin: user.platform_admin,
    fid: refresh.familyId,
  });
  return {
    access_token: token,
    token_type: "Bearer",
    expires_in: expiresIn,
    refresh_token: refresh.token,
    user: { id: user.id, email: user.email, name: user.name, role: user.role, org_id: user.org_id },
  };
}

/**
 * Exchanges email and password for a short-lived access token and a refresh token. Failures
 * are slowed down per client IP and per account (an exponentially growing, capped lock).
 */
export async function login(
  deps: AuthDeps,
  input: { email: string; password: string },
  meta: RequestMeta,
): Promise<TokenPair> {
  await deps.throttle.check(meta.ip);
  const [user] = await deps.db.select().from(schema.users).where(eq(schema.users.email, input.email));
  if (!user) deps.throttle.checkUnknown(input.email);
  if (user?.locked_until && user.locked_until.getTime() > Date.now()) {
    throw tooManyAttempts((user.locked_until.getTime() - Date.now()) / 1000);
  }
  const ok = await verifyPassword(user?.password_hash, input.password);
  if (!user || !ok || !user.active) {
    await deps.throttle.fail(meta.ip);
    if (!user) deps.throttle.failUnknown(input.email);
    else {
      // Incremented in SQL: concurrent guesses each count (a read-then-write would lose some).
      const [row] = await deps.db
        .update(schema.users)
        .set({ failed_logins: sql`${schema.users.failed_logins} + 1` })
        .where(eq(schema.users.id, user.id))
        .returning({ failures: schema.users.failed_logins });
      const lock = lockSeconds(row?.failures ?? 0);
      if (lock > 0) {
        await deps.db
          .update(schema.users)
          .set({
            locked_until: sql`greatest(coalesce(${schema.users.locked_until}, now()), now() + make_interval(secs => ${lock}))`,
          })
          .where(eq(schema.users.id, user.id));
      }
    }
    throw unauthorized("invalid email or password");
  }
  // The row lock orders this login with a concurrent change of the user (users.ts locks the row
  // too): the token carries the new role, or it was issued before that change revoked it.
  return deps.db.transaction(async (tx) => {
    const [current] = await tx
      .update(schema.users)
      .set({ last_login_at: new Date(), failed_logins: 0, locked_until: null })
      .where(eq(schema.users.id, user.id))
      .returning();
    if (!current?.active || current.password_hash !== user.password_hash) {
      throw unauthorized("invalid email or password");
    }
    return tokenPair(deps, current, await issueRefreshToken(tx, current.id));
  });
}

/**
 * Rotates a refresh token into a new token pair with the user's current role. A replayed token
 * revokes its whole family, and the access tokens issued from it on every replica.
 */
export async function refresh(deps: AuthDeps, presented: string): Promise<TokenPair> {
  const result = await deps.db.transaction(async (tx) => {
    const outcome = await rotateRefreshToken(tx, presented);
    if (outcome.kind === "reused") await revokeFamily(tx, outcome.familyId, deps.tokens.ttlSeconds);
    if (outcome.kind !== "rotated") return outcome;
    // rotateRefreshToken holds a share lock on the user row: a concurrent role change waits.
    const [user] = await tx.select().from(schema.users).where(eq(schema.users.id, outcome.userId));
    if (!user?.active) throw unauthorized("user is disabled");
    return { kind: "issued", pair: await tokenPair(deps, user, outcome) } as const;
  });
  if (result.kind === "reused") {
    deps.publisher.notify("global");
    throw unauthorized("refresh token was already used; all sessions of this login are revoked");
  }
  if (result.kind === "invalid") throw unauthorized("invalid or expired refresh token");
  return result.pair;
}

/**
 * Revokes the caller's access token (data planes learn it through the global snapshot) and,
 * when given, the refresh token's family with every access token issued from it.
 */
export async function logout(
  deps: AuthDeps,
  actor: Actor,
  meta: RequestMeta,
  refreshToken?: string,
): Promise<void> {
  await deps.db.transaction(async (tx) => {
    const family = refreshToken ? await revokeRefreshFamily(tx, refreshToken, actor.user_id) : undefined;
    if (family) await revokeFamily(tx, family, deps.tokens.ttlSeconds);
    if (actor.token) await recordRevocation(tx, actor.token.jti, new Date(actor.token.exp * 1000));
    await recordAudit(
      tx,
      { actor, meta },
      { action: "auth.logout", resource_type: "user", resource_id: actor.user_id },
    );
  });
  deps.publisher.notify("global");
}

/** Revocation rows of a whole subject use this prefix: `sub:<user id>` (see `revokeSubject`). */
export const SUBJECT_PREFIX = "sub:";

/**
 * Revocation rows of a refresh family use this prefix: `fam:<family id>` (see `revokeFamily`).
 * The snapshot ships them among `revoked_jti`; data planes match them against the `fid` claim.
 */
export const FAMILY_PREFIX = "fam:";

/** Longest a revocation of a subject must be remembered: past any access token's lifetime. */
const SUBJECT_REVOCATION_S = 24 * 3600;

/** How long a family revocation outlives its tokens, for clock skew between replicas. */
const FAMILY_REVOCATION_MARGIN_S = 60;

/** Records a revocation row and bumps the global version, so data planes learn it after commit. */
async function recordRevocation(tx: Tx, jti: string, until: Date, at = new Date()): Promise<void> {
  await tx
    .insert(schema.revokedTokens)
    .values({ jti, expires_at: until, created_at: at })
    .onConflictDoUpdate({ target: schema.revokedTokens.jti, set: { expires_at: until, created_at: at } });
  await tx
    .update(schema.globalConfig)
    .set({ config_version: sql`${schema.globalConfig.config_version} + 1` });
}

/**
 * Voids every access token of a user issued until now (deactivated, deleted, new password, new
 * role): data planes learn it through the global snapshot within a second.
 */
export async function revokeSubject(tx: Tx, userId: string): Promise<void> {
  const now = new Date();
  const until = new Date(now.getTime() + SUBJECT_REVOCATION_S * 1000);
  await recordRevocation(tx, `${SUBJECT_PREFIX}${userId}`, until, now);
}

/**
 * Voids every access token issued from a refresh family (a replayed refresh token, a logout). The
 * family is dead, so no later token carries it: the row only has to outlive the tokens it voids.
 */
export async function revokeFamily(tx: Tx, familyId: string, accessTtlS: number): Promise<void> {
  const until = new Date(Date.now() + (accessTtlS + FAMILY_REVOCATION_MARGIN_S) * 1000);
  await recordRevocation(tx, `${FAMILY_PREFIX}${familyId}`, until);
}

/**
 * True when the token was revoked (logout), its refresh family was, or its subject's tokens
 * issued before now were.
 */
export async function isRevoked(
  db: Db,
  token: Pick<VerifiedAccess, "jti" | "sub" | "iat" | "fid">,
): Promise<boolean> {
  const subject = `${SUBJECT_PREFIX}${token.sub}`;
  const ids = [token.jti, subject, ...(token.fid ? [`${FAMILY_PREFIX}${token.fid}`] : [])];
  const rows = await db
    .select({ jti: schema.revokedTokens.jti, at: schema.revokedTokens.created_at })
    .from(schema.revokedTokens)
    .where(and(inArray(schema.revokedTokens.jti, ids), gt(schema.revokedTokens.expires_at, new Date())));
  // `iat` in ms (the `iat_ms` claim): a login right after a password change keeps working.
  return rows.some((r) => r.jti !== subject || r.at.getTime() > token.iat);
}

/** True while the token's user (or, for a2a tokens, its key) exists and is active. */
export async function principalStillActive(db: Db, sub: string, keyId: string | undefined): Promise<boolean> {
  if (keyId) {
    const [key] = await db
      .select({ active: schema.apiKeys.active })
      .from(schema.apiKeys)
      .where(eq(schema.apiKeys.id, keyId));
    return key?.active === true;
  }
  if (!/^[0-9a-f-]{36}$/i.test(sub)) return false;
  const [user] = await db
    .select({ active: schema.users.active })
    .from(schema.users)
    .where(eq(schema.users.id, sub));
  return user?.active === true;
}

export interface Profile {
  id: string;
  org_id: string;
  email: string;
  name: string;
  role: string;
  platform_admin: boolean;
  last_login_at: string | null;
  created_at: string;
}

const toProfile = (u: UserRow): Profile => ({
  id: u.id,
  org_id: u.org_id,
  email: u.email,
  name: u.name,
  role: u.role,
  platform_admin: u.platform_admin,
  last_login_at: u.last_login_at?.toISOString() ?? null,
  created_at: u.created_at.toISOString(),
});

/** The caller's own profile. */
export async function getProfile(db: Db, actor: Actor): Promise<Profile> {
  if (actor.user_id.startsWith("a2a:")) throw forbidden("app-to-app tokens have no user profile");
  const [user] = await db.select().from(schema.users).where(eq(schema.users.id, actor.user_id));
  if (!user) throw unauthorized("user no longer exists");
  return toProfile(user);
}

/** Changes the caller's name and/or password (the old password is required for the latter). */
export async function updateProfile(
  db: Db,
  actor: Actor,
  meta: RequestMeta,
  input: { name?: string | undefined; password?: string | undefined; current_password?: string | undefined },
  publisher?: PublishTrigger,
): Promise<Profile> {
  assertChanges(input);
  if (actor.user_id.startsWith("a2a:")) throw forbidden("app-to-app tokens have no user profile");
  const [user] = await db.select().from(schema.users).where(eq(schema.users.id, actor.user_id));
  if (!user) throw unauthorized("user no longer exists");
  const changes: Partial<UserRow> = {};
  if (input.name !== undefined) changes.name = input.name;
  if (input.password !== undefined) {
    if (!input.current_password || !(await verifyPassword(user.password_hash, input.current_password))) {
      throw validation("current_password is missing or wrong");
    }
    changes.password_hash = await hashPassword(input.password);
  }
  const updated = await db.transaction(async (tx) => {
    const [after] = await tx
      .update(schema.users)
      .set(changes)
      .where(eq(schema.users.id, user.id))
      .returning();
    if (changes.password_hash) {
      // A password change ends every refresh-token family and access token of the user.
      await tx
        .update(schema.refreshTokens)
        .set({ revoked_at: new Date() })
        .where(eq(schema.refreshTokens.user_id, user.id));
      await revokeSubject(tx, user.id);
    }
    await recordAudit(
      tx,
      { actor, meta },
      { action: "user.update_profile", resource_type: "user", resource_id: user.id, before: user, after },
    );
    return after!;
  });
  if (changes.password_hash) publisher?.notify("global");
  return toProfile(updated);
}

export interface A2aToken {
  access_token: string;
  token_type: "Bearer";
  expires_in: number;
  scope: string;
}

/** Client-credentials exchange: an active a2a key for a short-lived JWT carrying the key's scopes. */
export async function exchangeA2aKey(deps: AuthDeps, secret: string): Promise<A2aToken> {
  const [key] = await deps.db
    .select()
    .from(schema.apiKeys)
    .where(eq(schema.apiKeys.hash, sha256(secret)));
  const expired = key?.expires_at && key.expires_at.getTime() <= Date.now();
  if (key?.kind !== "a2a" || !key.active || expired) throw unauthorized("invalid client credentials");
  await deps.db.update(schema.apiKeys).set({ last_used_at: new Date() }).where(eq(schema.apiKeys.id, key.id));
  const { token, expiresIn } = await deps.tokens.issue({
    sub: `a2a:${key.id}`,
    org_id: key.org_id,
    role: "api_user" satisfies Role,
    key_id: key.id,
    namespace_id: key.namespace_id ?? undefined,
    scope: key.permissions.join(" "),
  });
  return {
    access_token: token,
    token_type: "Bearer",
    expires_in: expiresIn,
    scope: key.permissions.join(" "),
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
      .values({ name: "Default", slug: "default", plan: "enterprise" })
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
      request_id: randomUUID(),
      diff: { after: { email: adminEmail, role: "admin" } },
    });
  });
  return { email: adminEmail, ...(generated ? { password: generated } : {}) };
}
