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
): Promise<{ token: string; id: string }> {
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
  return { token, id: row!.id };
}

export type RotateOutcome =
  | { kind: "rotated"; userId: string; token: string }
  | { kind: "invalid" }
  | { kind: "reused" };

/**
 * Rotates a refresh token: the presented one is spent and a new one of the same family issued.
 * Presenting a spent token again means it leaked: the whole family is revoked.
 */
export async function rotateRefreshToken(db: Db, presented: string): Promise<RotateOutcome> {
  return db.transaction(async (tx) => {
    const [row] = await tx
      .select()
      .from(schema.refreshTokens)
      .where(eq(schema.refreshTokens.token_hash, sha256(presented)))
      .for("update");
    if (!row || row.expires_at.getTime() <= Date.now()) return { kind: "invalid" } as const;
    if (row.revoked_at) {
      await tx
        .update(schema.refreshTokens)
        .set({ revoked_at: sql`coalesce(${schema.refreshTokens.revoked_at}, now())` })
        .where(eq(schema.refreshTokens.family_id, row.family_id));
      return { kind: "reused" } as const;
    }
    const next = await issueRefreshToken(tx, row.user_id, row.family_id);
    await tx
      .update(schema.refreshTokens)
      .set({ revoked_at: new Date(), replaced_by: next.id })
      .where(eq(schema.refreshTokens.id, row.id));
    return { kind: "rotated", userId: row.user_id, token: next.token } as const;
  });
}

/** Revokes the family of a refresh token (logout). */
export async function revokeRefreshFamily(db: Db | Tx, presented: string, userId: string): Promise<void> {
  const [row] = await db
    .select({ family: schema.refreshTokens.family_id })
    .from(schema.refreshTokens)
    .where(
      and(eq(schema.refreshTokens.token_hash, sha256(presented)), eq(schema.refreshTokens.user_id, userId)),
    );
  if (!row) return;
  await db
    .update(schema.refreshTokens)
    .set({ revoked_at: new Date() })
    .where(and(eq(schema.refreshTokens.family_id, row.family), isNull(schema.refreshTokens.revoked_at)));
}
