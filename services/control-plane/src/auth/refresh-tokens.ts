import { createHash, randomBytes, randomUUID } from "node:crypto";
import { type Db, schema, type Tx } from "@mcpgw/db";
import { and, eq, isNull, sql } from "drizzle-orm";

const REFRESH_TTL_MS = 30 * 24 * 3600 * 1000;

export const sha256 = (value: string) => createHash("sha256").update(value).digest("hex");

/** Issues a refresh token in `family` (a new family at login), stored only as its hash. */
export async function issueRefreshToken(
  db: Db | Tx,
  userId: string,
  familyId: string = randomUUID(),
): Promise<{ token: string; id: string; familyId: string }> {
  const token = `rt_${randomBytes(32).toString("base64url")}`;
  const [row] = await db
    .insert(schema.refreshTokens)
    .values({
      user_id: userId,
      family_id: familyId,
      token_hash: sha256(token),
      expires_at: new Date(Date.now() + REFRESH_TTL_MS),
    })
    .returning({ id: schema.refreshTokens.id });
  return { token, id: row!.id, familyId };
}

export type RotateOutcome =
  | { kind: "rotated"; userId: string; token: string; familyId: string }
  | { kind: "invalid" }
  | { kind: "reused"; familyId: string };

/**
 * Rotates a refresh token: the presented one is spent and a new one of the same family issued.
 * Presenting a spent token again means it leaked: the whole family is revoked (the caller voids
 * the family's access tokens in the same transaction). Call it in the transaction that issues
 * the access token.
 */
export async function rotateRefreshToken(tx: Tx, presented: string): Promise<RotateOutcome> {
  const hash = eq(schema.refreshTokens.token_hash, sha256(presented));
  const [owner] = await tx
    .select({ userId: schema.refreshTokens.user_id })
    .from(schema.refreshTokens)
    .where(hash);
  if (!owner) return { kind: "invalid" };
  // The owner's row first, in the order users.ts locks (user, then refresh tokens), so a refresh
  // and a change of the user never deadlock; held until commit, it makes a role change wait for
  // the token issued here (revoking it) or this token wait for the new role.
  await tx
    .select({ id: schema.users.id })
    .from(schema.users)
    .where(eq(schema.users.id, owner.userId))
    .for("share");
  const [row] = await tx.select().from(schema.refreshTokens).where(hash).for("update");
  if (!row || row.expires_at.getTime() <= Date.now()) return { kind: "invalid" };
  if (row.revoked_at) {
    await tx
      .update(schema.refreshTokens)
      .set({ revoked_at: sql`coalesce(${schema.refreshTokens.revoked_at}, now())` })
      .where(eq(schema.refreshTokens.family_id, row.family_id));
    return { kind: "reused", familyId: row.family_id };
  }
  const next = await issueRefreshToken(tx, row.user_id, row.family_id);
  await tx
    .update(schema.refreshTokens)
    .set({ revoked_at: new Date(), replaced_by: next.id })
    .where(eq(schema.refreshTokens.id, row.id));
  return { kind: "rotated", userId: row.user_id, token: next.token, familyId: row.family_id };
}

/** Revokes the family of the user's refresh token (logout); returns the family, if it is theirs. */
export async function revokeRefreshFamily(
  db: Db | Tx,
  presented: string,
  userId: string,
): Promise<string | undefined> {
  const [row] = await db
    .select({ family: schema.refreshTokens.family_id })
    .from(schema.refreshTokens)
    .where(
      and(eq(schema.refreshTokens.token_hash, sha256(presented)), eq(schema.refreshTokens.user_id, userId)),
    );
  if (!row) return undefined;
  await db
    .update(schema.refreshTokens)
    .set({ revoked_at: new Date() })
    .where(and(eq(schema.refreshTokens.family_id, row.family), isNull(schema.refreshTokens.revoked_at)));
  return row.family;
}
