import { schema } from "@mcpgw/db";
import { and, eq } from "drizzle-orm";
import { recordAudit } from "../audit.ts";
import { hashPassword } from "../auth/passwords.ts";
import { authorize } from "../auth/permissions.ts";
import type { Role, VerbContext } from "../context.ts";
import { assertChanges, conflict, notFound, validation } from "../errors.ts";
import { revokeSubject } from "./auth.ts";
import { bumpOrgVersion } from "./config-version.ts";
import { type Page, type PageRequest, pageQuery, toPage } from "./pagination.ts";

type UserRow = typeof schema.users.$inferSelect;

export interface UserDto {
  id: string;
  org_id: string;
  email: string;
  name: string;
  role: Role;
  active: boolean;
  email_verified: boolean;
  last_login_at: string | null;
  created_at: string;
  updated_at: string;
}

/** The API shape of a user: never the password hash or lockout counters. */
export const toUserDto = (u: UserRow): UserDto => ({
  id: u.id,
  org_id: u.org_id,
  email: u.email,
  name: u.name,
  role: u.role,
  active: u.active,
  email_verified: u.email_verified,
  last_login_at: u.last_login_at?.toISOString() ?? null,
  created_at: u.created_at.toISOString(),
  updated_at: u.updated_at.toISOString(),
});

export interface UserInput {
  email: string;
  name?: string | undefined;
  password?: string | undefined;
  role: Role;
  active?: boolean | undefined;
}

const inOrg = (ctx: VerbContext, id: string) =>
  and(eq(schema.users.id, id), eq(schema.users.org_id, ctx.actor.org_id));

/** Lists the users of the actor's org. */
export async function listUsers({
  ctx,
  page,
}: {
  ctx: VerbContext;
  page: PageRequest;
}): Promise<Page<UserDto>> {
  authorize(ctx.actor, "users:read");
  const q = pageQuery(schema.users, page);
  const rows = await ctx.db
    .select()
    .from(schema.users)
    .where(and(eq(schema.users.org_id, ctx.actor.org_id), q.where))
    .orderBy(...q.orderBy)
    .limit(q.limit);
  return toPage(rows, page.limit, toUserDto);
}

/** One user of the actor's org. */
export async function getUser({ ctx, id }: { ctx: VerbContext; id: string }): Promise<UserDto> {
  authorize(ctx.actor, "users:read");
  const [row] = await ctx.db.select().from(schema.users).where(inOrg(ctx, id));
  if (!row) throw notFound("user");
  return toUserDto(row);
}

/** Creates a user in the actor's org. */
export async function createUser({ ctx, input }: { ctx: VerbContext; input: UserInput }): Promise<UserDto> {
  authorize(ctx.actor, "users:write");
  const [taken] = await ctx.db
    .select({ id: schema.users.id })
    .from(schema.users)
    .where(eq(schema.users.email, input.email));
  if (taken) throw conflict("a user with this email already exists");
  const password_hash = input.password ? await hashPassword(input.password) : null;
  const row = await ctx.db.transaction(async (tx) => {
    const [created] = await tx
      .insert(schema.users)
      .values({
        org_id: ctx.actor.org_id,
        email: input.email,
        name: input.name ?? "",
        role: input.role,
        active: input.active ?? true,
        password_hash,
      })
      .returning();
    await recordAudit(tx, ctx, {
      action: "user.create",
      resource_type: "user",
      resource_id: created!.id,
      after: created,
    });
    return created!;
  });
  return toUserDto(row);
}

/** Changes a user's name, role, activity or password. */
export async function updateUser({
  ctx,
  id,
  patch,
}: {
  ctx: VerbContext;
  id: string;
  patch: Partial<UserInput>;
}): Promise<UserDto> {
  authorize(ctx.actor, "users:write");
  assertChanges(patch);
  if (id === ctx.actor.user_id && (patch.role !== undefined || patch.active === false)) {
    throw validation("you cannot change your own role or deactivate yourself");
  }
  const { password, ...fields } = patch;
  const changes: Partial<UserRow> = { ...fields };
  if (password) changes.password_hash = await hashPassword(password);
  const { row, revoked } = await ctx.db.transaction(async (tx) => {
    const [before] = await tx.select().from(schema.users).where(inOrg(ctx, id)).for("update");
    if (!before) throw notFound("user");
    const [after] = await tx.update(schema.users).set(changes).where(inOrg(ctx, id)).returning();
    const lockedOut = patch.active === false || Boolean(password);
    // Access tokens carry the role: earlier ones must not keep it. Refresh tokens do not, so they
    // live on and yield tokens with the new role.
    const roleChanged = patch.role !== undefined && patch.role !== before.role;
    if (lockedOut || roleChanged) await revokeSubject(tx, id);
    if (lockedOut) {
      await tx
        .update(schema.refreshTokens)
        .set({ revoked_at: new Date() })
        .where(eq(schema.refreshTokens.user_id, id));
    }
    await recordAudit(tx, ctx, {
      action: "user.update",
      resource_type: "user",
      resource_id: id,
      before,
      after,
    });
    // API keys act with their user's role and activity: data planes need the change.
    await bumpOrgVersion(tx, ctx.actor.org_id);
    return { row: after!, revoked: lockedOut || roleChanged };
  });
  ctx.publisher.notify(ctx.actor.org_id);
  if (revoked) ctx.publisher.notify("global");
  return toUserDto(row);
}

/** Deletes a user (their API keys and refresh tokens go with them). */
export async function deleteUser({ ctx, id }: { ctx: VerbContext; id: string }): Promise<void> {
  authorize(ctx.actor, "users:write");
  if (id === ctx.actor.user_id) throw validation("you cannot delete yourself");
  await ctx.db.transaction(async (tx) => {
    const [before] = await tx.delete(schema.users).where(inOrg(ctx, id)).returning();
    if (!before) throw notFound("user");
    await revokeSubject(tx, id);
    await recordAudit(tx, ctx, { action: "user.delete", resource_type: "user", resource_id: id, before });
    // Their API keys leave the snapshot.
    await bumpOrgVersion(tx, ctx.actor.org_id);
  });
  ctx.publisher.notify(ctx.actor.org_id);
  ctx.publisher.notify("global");
}
