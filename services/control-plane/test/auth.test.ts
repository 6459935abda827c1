import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { NatsBus } from "@mcpgw/bus";
import { type DbHandle, openDatabase, schema } from "@mcpgw/db";
import { Keyring } from "@mcpgw/secrets";
import { generateSnapshotKeys } from "@mcpgw/snapshot";
import { createLogger, createMetricsRegistry } from "@mcpgw/telemetry";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestDatabase,
  deleteNatsBuckets,
  runId,
  testEnv,
} from "../../../packages/testing/src/index.ts";
import { FREE_FAILURES, LoginThrottle, lockSeconds, MAX_LOCK_S } from "../src/auth/login-throttle.ts";
import { hashPassword } from "../src/auth/passwords.ts";
import { AppError } from "../src/errors.ts";
import { startControlPlane } from "../src/runtime.ts";

type ControlPlane = Awaited<ReturnType<typeof startControlPlane>>;
type App = ControlPlane["app"];

interface Stack {
  database: DbHandle;
  drop: () => Promise<void>;
  bus: NatsBus;
  cp: ControlPlane;
  prefix: string;
}

/** A control plane of its own: its own database, bus prefix and bootstrap admin. */
async function startStack(admin: { email: string; password: string }): Promise<Stack> {
  const test = await createTestDatabase();
  const database = await openDatabase(test.url, { max: 4 });
  const bus = await NatsBus.connect(testEnv.natsUrl);
  const prefix = `t${runId()}`;
  const { privateJwk } = await generateSnapshotKeys();
  const cp = await startControlPlane({
    database,
    bus,
    busPrefix: prefix,
    logger: createLogger("cp-auth-test", "silent"),
    metrics: createMetricsRegistry("cp-auth-test"),
    masterKey: Keyring.generateKey(),
    snapshotSigningKey: JSON.stringify(privateJwk),
    jwtIssuer: "mcpgw",
    jwtAudience: "mcpgw",
    accessTokenTtlS: 60,
    allowPrivateUpstreams: false,
    publishSweepMs: 500,
    admin,
  });
  return { database, drop: test.drop, bus, cp, prefix };
}

async function stopStack(stack: Stack | undefined): Promise<void> {
  if (!stack) return;
  await stack.cp.stop();
  await stack.bus.close();
  await stack.database.close();
  await stack.drop();
  await deleteNatsBuckets(testEnv.natsUrl, stack.prefix);
}

interface Reply {
  status: number;
  type: string | null;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: JSON bodies of many shapes
  body: any;
  text: string;
}

async function toReply(res: Response): Promise<Reply> {
  const text = await res.text();
  // Never a stack trace or an internal path in a response.
  expect(text).not.toMatch(/\n\s+at |node_modules/);
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = undefined;
  }
  return { status: res.status, type: res.headers.get("content-type"), headers: res.headers, body, text };
}

const decodeJwt = (token: string) =>
  JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString()) as Record<string, unknown>;

const PROFILE_KEYS = [
  "created_at",
  "email",
  "id",
  "last_login_at",
  "name",
  "org_id",
  "platform_admin",
  "role",
];
const USER_KEYS = [
  "active",
  "created_at",
  "email",
  "email_verified",
  "id",
  "last_login_at",
  "name",
  "org_id",
  "role",
  "updated_at",
];

describe("LoginThrottle and the account lock schedule (units)", () => {
  it("lets an IP fail up to its budget, then refuses it with a bounded retry_after, other IPs unaffected", async () => {
    const throttle = new LoginThrottle(3, 60);
    for (let i = 0; i < 3; i++) {
      await expect(throttle.check("203.0.113.7")).resolves.toBeUndefined();
      await throttle.fail("203.0.113.7");
    }
    const refused = await throttle.check("203.0.113.7").then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(refused).toBeInstanceOf(AppError);
    expect((refused as AppError).code).toBe("RateLimited");
    const retry = (refused as AppError).details?.retry_after as number;
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(60);
    await expect(throttle.check("203.0.113.8")).resolves.toBeUndefined();
    // No address (in-process requests): never limited.
    for (let i = 0; i < 10; i++) {
      await throttle.fail(undefined);
      await expect(throttle.check(undefined)).resolves.toBeUndefined();
    }
  });

  it("locks unknown emails on the same schedule as real accounts, so a 429 does not reveal an account", () => {
    const throttle = new LoginThrottle();
    for (let i = 0; i < FREE_FAILURES - 1; i++) throttle.failUnknown("Ghost@example.test");
    expect(() => throttle.checkUnknown("ghost@example.test")).not.toThrow();
    throttle.failUnknown("ghost@example.test");
    expect(() => throttle.checkUnknown("GHOST@example.test")).toThrow(AppError);
  });

  it("locks an account only from the FREE_FAILURES-th failure on, doubling and capped at MAX_LOCK_S", () => {
    expect(FREE_FAILURES).toBe(5);
    expect(lockSeconds(1)).toBe(0);
    expect(lockSeconds(FREE_FAILURES - 1)).toBe(0);
    expect(lockSeconds(FREE_FAILURES)).toBe(1);
    expect(lockSeconds(FREE_FAILURES + 1)).toBe(2);
    expect(lockSeconds(FREE_FAILURES + 3)).toBe(8);
    expect(lockSeconds(FREE_FAILURES + 40)).toBe(MAX_LOCK_S);
    expect(lockSeconds(1_000_000)).toBe(MAX_LOCK_S);
    expect(MAX_LOCK_S).toBe(15 * 60);
  });
});

describe("control-plane auth, users, organizations and API keys (in-process, real Postgres and NATS)", () => {
  let stack: Stack;
  let app: App;
  let database: DbHandle;
  const id = runId();
  const admin = { email: `admin-${id}@example.test`, password: "correct horse battery staple" };
  const operator = { email: `operator-${id}@example.test`, password: "operator long password" };
  const tokens = { admin: "", operator: "" };
  let defaultOrgId = "";
  let adminId = "";

  async function call(
    method: string,
    path: string,
    body?: unknown,
    token: string | null = tokens.admin,
    opts: { raw?: string; contentType?: string } = {},
  ): Promise<Reply> {
    const headers: Record<string, string> = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined || opts.raw !== undefined)
      headers["content-type"] = opts.contentType ?? "application/json";
    const res = await app.request(path, {
      method,
      headers,
      body: opts.raw ?? (body === undefined ? undefined : JSON.stringify(body)),
    });
    return toReply(res);
  }

  async function login(email: string, password: string) {
    const res = await call("POST", "/auth/login", { email, password }, null);
    expect(res.status).toBe(200);
    return res.body as { access_token: string; refresh_token: string; user: { id: string } };
  }

  async function userRow(email: string) {
    const [row] = await database.db.select().from(schema.users).where(eq(schema.users.email, email));
    return row;
  }

  /** A user inserted straight into the default org (so brute-force tests never touch the admin). */
  async function seedUser(email: string, password: string, role: "admin" | "operator" | "viewer" = "viewer") {
    const [row] = await database.db
      .insert(schema.users)
      .values({ org_id: defaultOrgId, email, password_hash: await hashPassword(password), role })
      .returning();
    return row!;
  }

  beforeAll(async () => {
    stack = await startStack(admin);
    app = stack.cp.app;
    database = stack.database;
    const first = await login(admin.email, admin.password);
    tokens.admin = first.access_token;
    adminId = first.user.id;
    const [defaultOrg] = await database.db
      .select()
      .from(schema.organizations)
      .where(eq(schema.organizations.slug, "default"));
    defaultOrgId = defaultOrg!.id;
    await seedUser(operator.email, operator.password, "operator");
    tokens.operator = (await login(operator.email, operator.password)).access_token;
  }, 60_000);

  afterAll(async () => {
    await stopStack(stack);
  });

  describe("tokens", () => {
    it("rotates a refresh token and revokes the family when a spent one is replayed", async () => {
      const first = await call("POST", "/auth/login", admin, null);
      expect(first.status).toBe(200);
      expect(first.body).toMatchObject({
        access_token: expect.any(String),
        refresh_token: expect.stringMatching(/^rt_/),
        token_type: "Bearer",
        expires_in: 60,
        user: { id: adminId, email: admin.email, role: "admin", org_id: defaultOrgId },
      });
      expect(JSON.stringify(first.body)).not.toMatch(/argon2|password/);

      const second = await call("POST", "/auth/refresh", { refresh_token: first.body.refresh_token }, null);
      expect(second.status).toBe(200);
      expect(second.body).toMatchObject({ token_type: "Bearer", expires_in: 60, user: { id: adminId } });
      expect(second.body.refresh_token).toMatch(/^rt_/);
      expect(second.body.refresh_token).not.toBe(first.body.refresh_token);
      expect(second.body.access_token).not.toBe(first.body.access_token);
      expect((await call("GET", "/auth/profile", undefined, second.body.access_token)).status).toBe(200);

      // Rotation keeps going with the newest token…
      const third = await call("POST", "/auth/refresh", { refresh_token: second.body.refresh_token }, null);
      expect(third.status).toBe(200);
      // …but replaying a spent one is theft: 401, and the whole family dies with it.
      const replay = await call("POST", "/auth/refresh", { refresh_token: first.body.refresh_token }, null);
      expect(replay.status).toBe(401);
      expect(replay.type).toBe("application/problem+json");
      expect(replay.body.detail).toMatch(/already used/);
      const newest = await call("POST", "/auth/refresh", { refresh_token: third.body.refresh_token }, null);
      expect(newest.status).toBe(401);

      const family = await database.db.select().from(schema.refreshTokens);
      const familyId = family.find((r) => r.replaced_by !== null && r.user_id === adminId)?.family_id;
      const members = family.filter((r) => r.family_id === familyId);
      expect(members).toHaveLength(3);
      expect(members.every((r) => r.revoked_at !== null)).toBe(true);
      // Only hashes are stored.
      expect(JSON.stringify(family)).not.toContain(first.body.refresh_token);

      const unknown = await call("POST", "/auth/refresh", { refresh_token: "rt_not-a-real-token" }, null);
      expect(unknown.status).toBe(401);
      expect(unknown.body.detail).toBe("invalid or expired refresh token");

      const malformed = await call("POST", "/auth/refresh", undefined, null, { raw: "{not json" });
      expect(malformed.status).toBe(400);
      expect(malformed.type).toBe("application/problem+json");
      expect(malformed.body).toMatchObject({ status: 400, title: "Bad Request" });
      const missing = await call("POST", "/auth/refresh", {}, null);
      expect(missing.status).toBe(400);
      expect(missing.body.errors).toEqual(
        expect.arrayContaining([expect.objectContaining({ path: "refresh_token" })]),
      );
      const wrongType = await call("POST", "/auth/refresh", { refresh_token: 42 }, null);
      expect(wrongType.status).toBe(400);
    });

    it("refuses an expired refresh token", async () => {
      const pair = await login(admin.email, admin.password);
      await database.db
        .update(schema.refreshTokens)
        .set({ expires_at: new Date(Date.now() - 1000) })
        .where(eq(schema.refreshTokens.user_id, adminId));
      const res = await call("POST", "/auth/refresh", { refresh_token: pair.refresh_token }, null);
      expect(res.status).toBe(401);
      expect(res.body.detail).toBe("invalid or expired refresh token");
    });

    it("logs out: revokes the access token used and the refresh token's family, with an audit row", async () => {
      const session = await login(admin.email, admin.password);
      const other = await login(admin.email, admin.password);
      expect((await call("GET", "/auth/profile", undefined, session.access_token)).status).toBe(200);

      const out = await call(
        "POST",
        "/auth/logout",
        { refresh_token: session.refresh_token },
        session.access_token,
      );
      expect(out.status).toBe(204);
      expect(out.text).toBe("");

      const profile = await call("GET", "/auth/profile", undefined, session.access_token);
      expect(profile.status).toBe(401);
      expect(profile.body.detail).toBe("token was revoked");
      expect(profile.headers.get("www-authenticate")).toMatch(/^Bearer/);
      expect((await call("GET", "/api/v1/users", undefined, session.access_token)).status).toBe(401);
      const refreshed = await call("POST", "/auth/refresh", { refresh_token: session.refresh_token }, null);
      expect(refreshed.status).toBe(401);

      // Only that login ends: another session of the same user and other access tokens go on.
      expect((await call("GET", "/auth/profile", undefined, other.access_token)).status).toBe(200);
      expect((await call("GET", "/auth/profile")).status).toBe(200);
      const rotated = await call("POST", "/auth/refresh", { refresh_token: other.refresh_token }, null);
      expect(rotated.status).toBe(200);

      const jti = decodeJwt(session.access_token).jti as string;
      const [revoked] = await database.db
        .select()
        .from(schema.revokedTokens)
        .where(eq(schema.revokedTokens.jti, jti));
      expect(revoked).toBeDefined();
      const audit = await database.db
        .select()
        .from(schema.auditLogs)
        .where(eq(schema.auditLogs.action, "auth.logout"));
      expect(audit).toHaveLength(1);
      expect(audit[0]).toMatchObject({ actor_id: adminId, resource_type: "user", resource_id: adminId });
      expect(audit[0]!.request_id).toBeTruthy();
      expect(JSON.stringify(audit)).not.toContain(session.refresh_token);

      // Without a token there is nothing to log out of.
      expect((await call("POST", "/auth/logout", {}, null)).status).toBe(401);
    });

    it("logging out with someone else's refresh token does not revoke it", async () => {
      const victim = await login(admin.email, admin.password);
      const attacker = await login(operator.email, operator.password);
      const out = await call(
        "POST",
        "/auth/logout",
        { refresh_token: victim.refresh_token },
        attacker.access_token,
      );
      expect(out.status).toBe(204);
      const still = await call("POST", "/auth/refresh", { refresh_token: victim.refresh_token }, null);
      expect(still.status).toBe(200);
    });
  });

  describe("brute force per account", () => {
    it("locks an account after 5 wrong passwords (429 + Retry-After even for the right one) and unlocks it later", async () => {
      const email = `locked-${id}@example.test`;
      const password = "the right password";
      await seedUser(email, password);
      const unknown = await call(
        "POST",
        "/auth/login",
        { email: `nobody-${id}@example.test`, password: "whatever it is" },
        null,
      );
      expect(unknown.status).toBe(401);
      for (let i = 1; i <= FREE_FAILURES; i++) {
        const wrong = await call("POST", "/auth/login", { email, password: `wrong password ${i}` }, null);
        expect(wrong.status).toBe(401);
        // Wrong passwords and unknown emails are indistinguishable.
        expect(wrong.body.detail).toBe(unknown.body.detail);
        expect(wrong.body.detail).toBe("invalid email or password");
      }
      const locked = await call("POST", "/auth/login", { email, password: "wrong password 6" }, null);
      expect(locked.status).toBe(429);
      expect(locked.type).toBe("application/problem+json");
      expect(locked.body).toMatchObject({ status: 429, title: "Too Many Requests" });
      const retryAfter = Number(locked.headers.get("retry-after"));
      expect(retryAfter).toBeGreaterThanOrEqual(1);
      expect(retryAfter).toBeLessThanOrEqual(MAX_LOCK_S);
      expect(locked.body.retry_after).toBe(retryAfter);
      const rightWhileLocked = await call("POST", "/auth/login", { email, password }, null);
      expect(rightWhileLocked.status).toBe(429);
      expect(rightWhileLocked.headers.get("retry-after")).toMatch(/^\d+$/);
      expect(rightWhileLocked.body.access_token).toBeUndefined();

      let row = await userRow(email);
      expect(row!.failed_logins).toBe(FREE_FAILURES);
      expect(row!.locked_until).not.toBeNull();

      // Many more failures: the lock grows but never beyond MAX_LOCK_S.
      await database.db
        .update(schema.users)
        .set({ failed_logins: 60, locked_until: null })
        .where(eq(schema.users.email, email));
      const before = Date.now();
      const wrongAgain = await call("POST", "/auth/login", { email, password: "wrong again!" }, null);
      expect(wrongAgain.status).toBe(401);
      row = await userRow(email);
      expect(row!.failed_logins).toBe(61);
      const lockMs = row!.locked_until!.getTime() - before;
      expect(lockMs).toBeGreaterThan((MAX_LOCK_S - 30) * 1000);
      expect(lockMs).toBeLessThanOrEqual((MAX_LOCK_S + 5) * 1000);
      const capped = await call("POST", "/auth/login", { email, password }, null);
      expect(capped.status).toBe(429);
      expect(Number(capped.headers.get("retry-after"))).toBeLessThanOrEqual(MAX_LOCK_S);
      expect(Number(capped.headers.get("retry-after"))).toBeGreaterThan(MAX_LOCK_S - 30);

      // Time passes (the lock expires): the right password works and clears the counters.
      await database.db
        .update(schema.users)
        .set({ locked_until: new Date(Date.now() - 1000) })
        .where(eq(schema.users.email, email));
      const ok = await call("POST", "/auth/login", { email, password }, null);
      expect(ok.status).toBe(200);
      expect(ok.body.access_token).toEqual(expect.any(String));
      row = await userRow(email);
      expect(row!.failed_logins).toBe(0);
      expect(row!.locked_until).toBeNull();
      expect(row!.last_login_at).not.toBeNull();
    });

    it("a success before the fifth failure resets the count, so failures must be consecutive to lock", async () => {
      const email = `streak-${id}@example.test`;
      const password = "the right password";
      await seedUser(email, password);
      for (let i = 0; i < FREE_FAILURES - 1; i++)
        expect((await call("POST", "/auth/login", { email, password: "nope nope" }, null)).status).toBe(401);
      expect((await userRow(email))!.failed_logins).toBe(FREE_FAILURES - 1);
      await login(email, password);
      expect((await userRow(email))!.failed_logins).toBe(0);
      for (let i = 0; i < FREE_FAILURES - 1; i++)
        expect((await call("POST", "/auth/login", { email, password: "nope nope" }, null)).status).toBe(401);
      expect((await call("POST", "/auth/login", { email, password }, null)).status).toBe(200);
    });

    it("counts concurrent wrong passwords too: 10 parallel guesses lock the account like 10 sequential ones", async () => {
      const email = `race-${id}@example.test`;
      const password = "the right password";
      await seedUser(email, password);
      const guesses = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          call("POST", "/auth/login", { email, password: `parallel guess ${i}` }, null),
        ),
      );
      for (const g of guesses) expect([401, 429]).toContain(g.status);
      const row = await userRow(email);
      // Every guess that was checked against the password must be counted.
      const checked = guesses.filter((g) => g.status === 401).length;
      expect(row!.failed_logins).toBe(checked);
      const next = await call("POST", "/auth/login", { email, password }, null);
      expect(next.status).toBe(429);
    });
  });

  describe("profile", () => {
    it("shows the caller's profile without secrets, renames, and changes the password only with the current one", async () => {
      const email = `profile-${id}@example.test`;
      const oldPassword = "profile old password";
      const newPassword = "profile new password";
      const created = await call("POST", "/api/v1/users", {
        email,
        password: oldPassword,
        role: "viewer",
        name: "Pro File",
      });
      expect(created.status).toBe(201);
      const session = await login(email, oldPassword);
      const otherSession = await login(email, oldPassword);

      const profile = await call("GET", "/auth/profile", undefined, session.access_token);
      expect(profile.status).toBe(200);
      expect(Object.keys(profile.body).sort()).toEqual(PROFILE_KEYS);
      expect(profile.body).toMatchObject({
        id: created.body.id,
        email,
        name: "Pro File",
        role: "viewer",
        platform_admin: false,
        org_id: defaultOrgId,
      });
      expect(profile.body.last_login_at).not.toBeNull();
      expect(profile.text).not.toMatch(/argon2|password_hash|failed_logins/);

      const renamed = await call("PUT", "/auth/profile", { name: "Renamed" }, session.access_token);
      expect(renamed.status).toBe(200);
      expect(renamed.body.name).toBe("Renamed");
      expect((await call("GET", "/auth/profile", undefined, session.access_token)).body.name).toBe("Renamed");

      const noCurrent = await call("PUT", "/auth/profile", { password: newPassword }, session.access_token);
      expect(noCurrent.status).toBe(400);
      expect(noCurrent.body.detail).toMatch(/current_password/);
      const wrongCurrent = await call(
        "PUT",
        "/auth/profile",
        { password: newPassword, current_password: "not my password" },
        session.access_token,
      );
      expect(wrongCurrent.status).toBe(400);
      const tooShort = await call(
        "PUT",
        "/auth/profile",
        { password: "short", current_password: oldPassword },
        session.access_token,
      );
      expect(tooShort.status).toBe(400);
      // Nothing changed so far.
      expect((await call("POST", "/auth/login", { email, password: newPassword }, null)).status).toBe(401);

      const changed = await call(
        "PUT",
        "/auth/profile",
        { password: newPassword, current_password: oldPassword },
        session.access_token,
      );
      expect(changed.status).toBe(200);
      expect(changed.text).not.toContain(newPassword);
      expect((await call("POST", "/auth/login", { email, password: oldPassword }, null)).status).toBe(401);
      const fresh = await login(email, newPassword);
      // Access tokens issued before the change are void; one issued right after works.
      expect((await call("GET", "/auth/profile", undefined, session.access_token)).status).toBe(401);
      expect(
        (await call("GET", "/auth/profile", undefined, (fresh as { access_token: string }).access_token))
          .status,
      ).toBe(200);
      // Every refresh-token family of the user ended with the change.
      for (const s of [session, otherSession]) {
        const r = await call("POST", "/auth/refresh", { refresh_token: s.refresh_token }, null);
        expect(r.status).toBe(401);
      }

      const audit = await database.db
        .select()
        .from(schema.auditLogs)
        .where(eq(schema.auditLogs.resource_id, created.body.id));
      expect(audit.map((a) => a.action)).toEqual(expect.arrayContaining(["user.update_profile"]));
      const auditText = JSON.stringify(audit);
      expect(auditText).not.toContain(oldPassword);
      expect(auditText).not.toContain(newPassword);
      expect(auditText).not.toContain("$argon2");
    });

    it("does not let a user raise their own role or platform rights through the profile", async () => {
      const escalate = await call("PUT", "/auth/profile", { role: "admin" }, tokens.operator);
      expect(escalate.status).toBe(400);
      const platform = await call("PUT", "/auth/profile", { platform_admin: true }, tokens.operator);
      expect(platform.status).toBe(400);
      const row = await userRow(operator.email);
      expect(row!.role).toBe("operator");
      expect(row!.platform_admin).toBe(false);
    });

    it("answers an empty profile update with 200 (no change) or 400, never a 500", async () => {
      const res = await call("PUT", "/auth/profile", {}, tokens.operator);
      expect([200, 400]).toContain(res.status);
    });
  });

  describe("users (admin CRUD)", () => {
    it("creates, reads, updates and deletes users with an audit row per mutation and no password anywhere", async () => {
      const email = `crud-${id}@example.test`;
      const password = "crud user password";
      const newPassword = "crud user password 2";
      const created = await call("POST", "/api/v1/users", {
        email,
        password,
        role: "operator",
        name: "Cru D",
      });
      expect(created.status).toBe(201);
      expect(Object.keys(created.body).sort()).toEqual(USER_KEYS);
      expect(created.body).toMatchObject({
        email,
        name: "Cru D",
        role: "operator",
        active: true,
        org_id: defaultOrgId,
      });
      expect(created.text).not.toMatch(/argon2|password/);
      const userId = created.body.id as string;

      const dup = await call("POST", "/api/v1/users", {
        email: email.toUpperCase(),
        password,
        role: "viewer",
      });
      expect(dup.status).toBe(409);
      expect(dup.type).toBe("application/problem+json");

      const got = await call("GET", `/api/v1/users/${userId}`);
      expect(got.status).toBe(200);
      expect(got.body).toEqual(created.body);
      const list = await call("GET", "/api/v1/users?limit=200");
      expect(list.body.items.map((u: { id: string }) => u.id)).toContain(userId);
      expect(list.text).not.toMatch(/argon2|password_hash/);

      const patched = await call("PATCH", `/api/v1/users/${userId}`, { role: "viewer" });
      expect(patched.status).toBe(200);
      expect(patched.body.role).toBe("viewer");
      const session = await login(email, password);
      const repassed = await call("PATCH", `/api/v1/users/${userId}`, { password: newPassword });
      expect(repassed.status).toBe(200);
      expect(
        (await call("POST", "/auth/refresh", { refresh_token: session.refresh_token }, null)).status,
      ).toBe(401);
      await login(email, newPassword);

      const selfRole = await call("PATCH", `/api/v1/users/${adminId}`, { role: "viewer" });
      expect(selfRole.status).toBe(400);
      const selfDeactivate = await call("PATCH", `/api/v1/users/${adminId}`, { active: false });
      expect(selfDeactivate.status).toBe(400);
      const selfDelete = await call("DELETE", `/api/v1/users/${adminId}`);
      expect(selfDelete.status).toBe(400);
      expect((await userRow(admin.email))!.role).toBe("admin");

      // Only admins manage users.
      expect(
        (await call("POST", "/api/v1/users", { email: `x-${email}`, role: "admin" }, tokens.operator)).status,
      ).toBe(403);
      expect((await call("DELETE", `/api/v1/users/${userId}`, undefined, tokens.operator)).status).toBe(403);

      expect((await call("DELETE", `/api/v1/users/${userId}`)).status).toBe(204);
      expect((await call("GET", `/api/v1/users/${userId}`)).status).toBe(404);
      expect((await call("DELETE", `/api/v1/users/${userId}`)).status).toBe(404);
      expect((await call("POST", "/auth/login", { email, password: newPassword }, null)).status).toBe(401);

      const audit = await database.db
        .select()
        .from(schema.auditLogs)
        .where(eq(schema.auditLogs.resource_id, userId));
      expect(audit.map((a) => a.action).sort()).toEqual([
        "user.create",
        "user.delete",
        "user.update",
        "user.update",
      ]);
      expect(audit.every((a) => a.actor_id === adminId && a.request_id)).toBe(true);
      const auditText = JSON.stringify(audit);
      expect(auditText).not.toContain(password);
      expect(auditText).not.toContain(newPassword);
      expect(auditText).not.toContain("$argon2");
      expect(auditText).toContain("[redacted]");
    });

    it("answers an empty user patch with 200 (no change) or 400, never a 500", async () => {
      const created = await call("POST", "/api/v1/users", {
        email: `empty-${id}@example.test`,
        role: "viewer",
      });
      expect(created.status).toBe(201);
      const res = await call("PATCH", `/api/v1/users/${created.body.id}`, {});
      expect([200, 400]).toContain(res.status);
    });

    it("a deleted user's still-valid access token gets a 4xx, never a 500", async () => {
      const email = `ghost-${id}@example.test`;
      const password = "ghost user password";
      const created = await call("POST", "/api/v1/users", { email, password, role: "operator" });
      const ghost = await login(email, password);
      expect((await call("DELETE", `/api/v1/users/${created.body.id}`)).status).toBe(204);
      expect((await call("GET", "/auth/profile", undefined, ghost.access_token)).status).toBe(401);
      const key = await call("POST", "/auth/api-keys", { name: "ghost key" }, ghost.access_token);
      expect(key.status).toBeGreaterThanOrEqual(400);
      expect(key.status).toBeLessThan(500);
    });
  });

  describe("organizations", () => {
    it("lets a platform admin create an org with its own admin, isolated from the others, and delete it", async () => {
      const orgAdmin = { email: `org-admin-${id}@example.test`, password: "org admin password" };
      const created = await call("POST", "/api/v1/organizations", {
        name: "Acme",
        slug: `acme-${id}`,
        plan: "free",
        admin: { ...orgAdmin, name: "Acme Admin" },
      });
      expect(created.status).toBe(201);
      expect(created.body).toMatchObject({ name: "Acme", slug: `acme-${id}`, plan: "free", active: true });
      expect(created.text).not.toContain(orgAdmin.password);
      const orgId = created.body.id as string;

      const dupSlug = await call("POST", "/api/v1/organizations", { name: "Again", slug: `ACME-${id}` });
      expect(dupSlug.status).toBe(409);
      const dupAdmin = await call("POST", "/api/v1/organizations", {
        name: "Taken",
        slug: `taken-${id}`,
        admin: { email: admin.email.toUpperCase(), password: "some long password" },
      });
      expect(dupAdmin.status).toBe(409);

      const theirs = await login(orgAdmin.email, orgAdmin.password);
      expect(theirs.user).toMatchObject({ org_id: orgId, role: "admin", name: "Acme Admin" });
      const profile = await call("GET", "/auth/profile", undefined, theirs.access_token);
      expect(profile.body).toMatchObject({ org_id: orgId, role: "admin", platform_admin: false });

      const mine = await call("POST", "/api/v1/namespaces", { name: "Home", slug: `home-${id}` });
      expect(mine.status).toBe(201);
      const away = await call(
        "POST",
        "/api/v1/namespaces",
        { name: "Away", slug: `away-${id}` },
        theirs.access_token,
      );
      expect(away.status).toBe(201);
      expect(away.body.org_id).toBe(orgId);
      const theirList = await call("GET", "/api/v1/namespaces?limit=200", undefined, theirs.access_token);
      expect(theirList.body.items.map((n: { id: string }) => n.id)).toEqual([away.body.id]);
      const myList = await call("GET", "/api/v1/namespaces?limit=200");
      const myIds = myList.body.items.map((n: { id: string }) => n.id);
      expect(myIds).toContain(mine.body.id);
      expect(myIds).not.toContain(away.body.id);
      expect(
        (await call("GET", `/api/v1/namespaces/${mine.body.id}`, undefined, theirs.access_token)).status,
      ).toBe(404);

      const patched = await call("PATCH", `/api/v1/organizations/${orgId}`, {
        plan: "pro",
        max_servers: 7,
      });
      expect(patched.status).toBe(200);
      expect(patched.body).toMatchObject({ id: orgId, plan: "pro", max_servers: 7 });
      expect((await call("GET", `/api/v1/organizations/${orgId}`)).body).toMatchObject({
        plan: "pro",
        max_servers: 7,
      });

      const all = await call("GET", "/api/v1/organizations?limit=200");
      expect(all.status).toBe(200);
      expect(all.body.items.map((o: { id: string }) => o.id)).toEqual(
        expect.arrayContaining([defaultOrgId, orgId]),
      );

      // An org admin is not a platform admin.
      const listAsThem = await call("GET", "/api/v1/organizations", undefined, theirs.access_token);
      expect(listAsThem.status).toBe(403);
      expect(listAsThem.type).toBe("application/problem+json");
      expect(
        (await call("GET", `/api/v1/organizations/${defaultOrgId}`, undefined, theirs.access_token)).status,
      ).toBe(404);
      expect(
        (await call("GET", `/api/v1/organizations/${orgId}`, undefined, theirs.access_token)).status,
      ).toBe(200);
      expect(
        (await call("PATCH", `/api/v1/organizations/${orgId}`, { max_servers: 100_000 }, theirs.access_token))
          .status,
      ).toBe(403);
      expect(
        (await call("DELETE", `/api/v1/organizations/${defaultOrgId}`, undefined, theirs.access_token))
          .status,
      ).toBe(403);
      // Their users API is scoped to their org.
      const theirUsers = await call("GET", "/api/v1/users?limit=200", undefined, theirs.access_token);
      expect(theirUsers.body.items.map((u: { email: string }) => u.email)).toEqual([orgAdmin.email]);
      expect((await call("GET", `/api/v1/users/${adminId}`, undefined, theirs.access_token)).status).toBe(
        404,
      );

      const own = await call("DELETE", `/api/v1/organizations/${defaultOrgId}`);
      expect(own.status).toBe(409);
      expect((await call("GET", `/api/v1/organizations/${defaultOrgId}`)).status).toBe(200);

      expect((await call("DELETE", `/api/v1/organizations/${orgId}`)).status).toBe(204);
      expect((await call("GET", `/api/v1/organizations/${orgId}`)).status).toBe(404);
      expect((await call("DELETE", `/api/v1/organizations/${orgId}`)).status).toBe(404);
      expect((await call("POST", "/auth/login", orgAdmin, null)).status).toBe(401);
      expect(await userRow(orgAdmin.email)).toBeUndefined();
      const [deletion] = await database.db
        .select()
        .from(schema.auditLogs)
        .where(eq(schema.auditLogs.action, "organization.delete"));
      expect(deletion).toMatchObject({ resource_id: orgId, org_id: defaultOrgId, actor_id: adminId });
    });

    it("answers an empty organization patch with 200 (no change) or 400, never a 500", async () => {
      const res = await call("PATCH", `/api/v1/organizations/${defaultOrgId}`, {});
      expect([200, 400]).toContain(res.status);
    });

    it("a deleted org's admin, still holding a valid access token, gets a 4xx, never a 500", async () => {
      const orgAdmin = { email: `gone-${id}@example.test`, password: "gone admin password" };
      const created = await call("POST", "/api/v1/organizations", {
        name: "Gone",
        slug: `gone-${id}`,
        admin: orgAdmin,
      });
      expect(created.status).toBe(201);
      const theirs = await login(orgAdmin.email, orgAdmin.password);
      expect((await call("DELETE", `/api/v1/organizations/${created.body.id}`)).status).toBe(204);
      const ns = await call(
        "POST",
        "/api/v1/namespaces",
        { name: "Late", slug: "late" },
        theirs.access_token,
      );
      expect(ns.status).toBeGreaterThanOrEqual(400);
      expect(ns.status).toBeLessThan(500);
    });
  });

  describe("API keys and the a2a client-credentials exchange", () => {
    it("creates user keys shown once and lists them without secrets; only admins create a2a keys", async () => {
      const created = await call("POST", "/auth/api-keys", { name: "ci key" });
      expect(created.status).toBe(201);
      const key = created.body.key as string;
      expect(key.startsWith("mcpgw_")).toBe(true);
      expect(key.length).toBeGreaterThan(40);
      expect(created.body.prefix).toBe(key.slice(0, 14));
      expect(created.body).toMatchObject({
        name: "ci key",
        kind: "user",
        user_id: adminId,
        org_id: defaultOrgId,
        permissions: ["mcp:use"],
        active: true,
        expires_at: null,
      });
      expect(created.body.hash).toBeUndefined();

      const list = await call("GET", "/api/v1/api-keys?limit=200");
      expect(list.status).toBe(200);
      const listed = list.body.items.find((k: { id: string }) => k.id === created.body.id);
      expect(listed).toMatchObject({ prefix: created.body.prefix, active: true });
      for (const item of list.body.items) {
        expect(item).not.toHaveProperty("key");
        expect(item).not.toHaveProperty("hash");
      }
      expect(list.text).not.toContain(key);
      const one = await call("GET", `/api/v1/api-keys/${created.body.id}`);
      expect(one.status).toBe(200);
      expect(one.body).not.toHaveProperty("key");
      expect(one.body).not.toHaveProperty("hash");
      expect(one.text).not.toContain(key);
      const [row] = await database.db
        .select()
        .from(schema.apiKeys)
        .where(eq(schema.apiKeys.id, created.body.id));
      expect(JSON.stringify(row)).not.toContain(key);

      const past = await call("POST", "/auth/api-keys", {
        name: "expired",
        expires_at: new Date(Date.now() - 60_000).toISOString(),
      });
      expect(past.status).toBe(400);
      expect(past.body.detail).toMatch(/expires_at/);
      const future = await call("POST", "/auth/api-keys", {
        name: "expiring",
        expires_at: new Date(Date.now() + 3_600_000).toISOString(),
      });
      expect(future.status).toBe(201);
      expect(future.body.expires_at).not.toBeNull();

      const a2aByOperator = await call(
        "POST",
        "/auth/api-keys",
        { name: "a2a", kind: "a2a" },
        tokens.operator,
      );
      expect(a2aByOperator.status).toBe(403);
      expect(a2aByOperator.type).toBe("application/problem+json");
      const opKey = await call("POST", "/auth/api-keys", { name: "operator key" }, tokens.operator);
      expect(opKey.status).toBe(201);
      // Non-admins see only their own keys.
      const opList = await call("GET", "/api/v1/api-keys?limit=200", undefined, tokens.operator);
      expect(opList.body.items.map((k: { id: string }) => k.id)).toEqual([opKey.body.id]);
      expect(
        (await call("GET", `/api/v1/api-keys/${created.body.id}`, undefined, tokens.operator)).status,
      ).toBe(404);
      expect(
        (await call("DELETE", `/api/v1/api-keys/${created.body.id}`, undefined, tokens.operator)).status,
      ).toBe(404);

      expect((await call("DELETE", `/api/v1/api-keys/${created.body.id}`)).status).toBe(204);
      const revoked = await call("GET", `/api/v1/api-keys/${created.body.id}`);
      expect(revoked.body.active).toBe(false);
      const afterList = await call("GET", "/api/v1/api-keys?limit=200");
      expect(afterList.body.items.find((k: { id: string }) => k.id === created.body.id).active).toBe(false);
      const audit = await database.db
        .select()
        .from(schema.auditLogs)
        .where(eq(schema.auditLogs.resource_id, created.body.id));
      expect(audit.map((a) => a.action).sort()).toEqual(["api_key.create", "api_key.revoke"]);
      expect(JSON.stringify(audit)).not.toContain(key);
    });

    it("exchanges an active a2a key for a scoped token and refuses user, revoked and expired keys", async () => {
      const a2a = await call("POST", "/auth/api-keys", {
        name: "robot",
        kind: "a2a",
        permissions: ["mcp:use", "tools:call"],
      });
      expect(a2a.status).toBe(201);
      expect(a2a.body).toMatchObject({ kind: "a2a", user_id: null, permissions: ["mcp:use", "tools:call"] });
      const userKey = await call("POST", "/auth/api-keys", { name: "human" });

      const exchanged = await call("POST", "/auth/a2a/token", { client_secret: a2a.body.key }, null);
      expect(exchanged.status).toBe(200);
      expect(exchanged.body).toMatchObject({
        access_token: expect.any(String),
        token_type: "Bearer",
        expires_in: 60,
        scope: "mcp:use tools:call",
      });
      expect(decodeJwt(exchanged.body.access_token)).toMatchObject({
        sub: `a2a:${a2a.body.id}`,
        org_id: defaultOrgId,
        role: "api_user",
        key_id: a2a.body.id,
        scope: "mcp:use tools:call",
      });
      expect((await call("GET", `/api/v1/api-keys/${a2a.body.id}`)).body.last_used_at).not.toBeNull();

      const form = await call("POST", "/auth/a2a/token", undefined, null, {
        raw: new URLSearchParams({
          grant_type: "client_credentials",
          client_secret: a2a.body.key,
        }).toString(),
        contentType: "application/x-www-form-urlencoded",
      });
      expect(form.status).toBe(200);
      expect(form.body.scope).toBe("mcp:use tools:call");
      const wrongGrant = await call("POST", "/auth/a2a/token", undefined, null, {
        raw: new URLSearchParams({ grant_type: "password", client_secret: a2a.body.key }).toString(),
        contentType: "application/x-www-form-urlencoded",
      });
      expect(wrongGrant.status).toBe(400);
      expect(wrongGrant.type).toBe("application/problem+json");
      expect(wrongGrant.body.detail).toMatch(/grant_type/);
      expect((await call("POST", "/auth/a2a/token", {}, null)).status).toBe(400);
      expect((await call("POST", "/auth/a2a/token", undefined, null, { raw: "{oops" })).status).toBe(400);

      const withUserKey = await call("POST", "/auth/a2a/token", { client_secret: userKey.body.key }, null);
      expect(withUserKey.status).toBe(401);
      expect(withUserKey.body.access_token).toBeUndefined();
      const unknown = await call("POST", "/auth/a2a/token", { client_secret: "mcpgw_not-a-key" }, null);
      expect(unknown.status).toBe(401);
      expect(unknown.body.detail).toBe(withUserKey.body.detail);

      expect((await call("DELETE", `/api/v1/api-keys/${a2a.body.id}`)).status).toBe(204);
      const withRevoked = await call("POST", "/auth/a2a/token", { client_secret: a2a.body.key }, null);
      expect(withRevoked.status).toBe(401);

      const expiring = await call("POST", "/auth/api-keys", { name: "robot 2", kind: "a2a" });
      expect((await call("POST", "/auth/a2a/token", { client_secret: expiring.body.key }, null)).status).toBe(
        200,
      );
      await database.db
        .update(schema.apiKeys)
        .set({ expires_at: new Date(Date.now() - 1000) })
        .where(eq(schema.apiKeys.id, expiring.body.id));
      expect((await call("POST", "/auth/a2a/token", { client_secret: expiring.body.key }, null)).status).toBe(
        401,
      );
    });
  });

  describe("bad input", () => {
    it("rejects unknown fields on every auth, user, organization and API-key body with 400", async () => {
      const cases: [string, string, unknown, string | null][] = [
        ["POST", "/auth/login", { ...admin, remember_me: true }, null],
        ["POST", "/auth/refresh", { refresh_token: "rt_x", extra: 1 }, null],
        ["POST", "/auth/logout", { refresh_token: "rt_x", everywhere: true }, tokens.operator],
        ["PUT", "/auth/profile", { name: "x", email: "new@example.test" }, tokens.operator],
        ["POST", "/auth/api-keys", { name: "k", hash: "abc" }, tokens.admin],
        ["POST", "/api/v1/api-keys", { name: "k", user_id: adminId }, tokens.admin],
        [
          "POST",
          "/api/v1/users",
          { email: `u-${id}@example.test`, role: "viewer", platform_admin: true },
          tokens.admin,
        ],
        ["PATCH", `/api/v1/users/${adminId}`, { platform_admin: true }, tokens.admin],
        ["POST", "/api/v1/organizations", { name: "O", slug: `o-${id}`, config_version: 9 }, tokens.admin],
        [
          "POST",
          "/api/v1/organizations",
          {
            name: "O",
            slug: `o2-${id}`,
            admin: { email: `o-${id}@example.test`, password: "long enough pw", role: "x" },
          },
          tokens.admin,
        ],
        [
          "PATCH",
          `/api/v1/organizations/${defaultOrgId}`,
          { admin: { email: "a@b.c", password: "x" } },
          tokens.admin,
        ],
      ];
      const unknownKeys = [
        "remember_me",
        "extra",
        "everywhere",
        "email",
        "hash",
        "user_id",
        "platform_admin",
        "platform_admin",
        "config_version",
        "role",
        "admin",
      ];
      for (const [i, [method, path, body, token]] of cases.entries()) {
        const res = await call(method, path, body, token);
        expect({ method, path, status: res.status }).toEqual({ method, path, status: 400 });
        expect(res.type).toBe("application/problem+json");
        expect(res.body.errors?.length).toBeGreaterThan(0);
        // Refused for the unknown key itself, not for something else.
        const messages = res.body.errors.map((e: { message: string }) => e.message).join(" | ");
        expect(messages).toContain(`"${unknownKeys[i]}"`);
      }
      // Nothing was created by the refused requests.
      expect(await userRow(`u-${id}@example.test`)).toBeUndefined();
      expect(await userRow(`o-${id}@example.test`)).toBeUndefined();
      expect((await userRow(admin.email))!.platform_admin).toBe(true);
      expect((await userRow(operator.email))!.email).toBe(operator.email);
    });

    it("refuses bodies over 1 MiB with 413", async () => {
      const huge = "x".repeat(1024 * 1024 + 16);
      const cases: [string, string, string | null][] = [
        ["POST", "/auth/login", null],
        ["POST", "/auth/refresh", null],
        ["POST", "/auth/a2a/token", null],
        ["PUT", "/auth/profile", tokens.operator],
        ["POST", "/api/v1/users", tokens.admin],
      ];
      for (const [method, path, token] of cases) {
        const res = await call(method, path, undefined, token, {
          raw: JSON.stringify({ email: admin.email, password: huge }),
        });
        expect({ path, status: res.status }).toEqual({ path, status: 413 });
        expect(res.type).toBe("application/problem+json");
      }
    });

    it("treats SQL-injection-shaped logins as plain bad credentials (400 or 401, never 500)", async () => {
      const before = await database.db.select().from(schema.users);
      const emails = [
        "' OR 1=1--@example.test",
        `${admin.email}' OR '1'='1`,
        "admin@example.test'; DROP TABLE users;--",
        `"; SELECT pg_sleep(5);--"@example.test`,
      ];
      for (const email of emails) {
        const res = await call("POST", "/auth/login", { email, password: "' OR '1'='1" }, null);
        expect([400, 401]).toContain(res.status);
        expect(res.body.access_token).toBeUndefined();
      }
      const pwd = await call(
        "POST",
        "/auth/login",
        { email: admin.email, password: "' OR '1'='1' --" },
        null,
      );
      expect(pwd.status).toBe(401);
      const a2a = await call("POST", "/auth/a2a/token", { client_secret: "' OR kind='a2a' --" }, null);
      expect(a2a.status).toBe(401);
      const refresh = await call("POST", "/auth/refresh", { refresh_token: "' OR 1=1 --" }, null);
      expect(refresh.status).toBe(401);
      expect(await database.db.select().from(schema.users)).toHaveLength(before.length);
      // The admin was not locked by the probe above (one failure only).
      await login(admin.email, admin.password);
    });

    it("stores and returns unicode names intact and rejects control characters", async () => {
      const name = "Zoë Ångström 李小龍 🚀";
      const profile = await call("PUT", "/auth/profile", { name }, tokens.operator);
      expect(profile.status).toBe(200);
      expect(profile.body.name).toBe(name);
      expect((await call("GET", "/auth/profile", undefined, tokens.operator)).body.name).toBe(name);
      expect((await userRow(operator.email))!.name).toBe(name);

      const user = await call("POST", "/api/v1/users", {
        email: `unicode-${id}@example.test`,
        name: "Ünïcødé 名前",
        role: "viewer",
      });
      expect(user.status).toBe(201);
      expect(user.body.name).toBe("Ünïcødé 名前");
      expect((await call("GET", `/api/v1/users/${user.body.id}`)).body.name).toBe("Ünïcødé 名前");

      const org = await call("POST", "/api/v1/organizations", {
        name: "Société Générale 株式会社",
        slug: `uni-${id}`,
      });
      expect(org.status).toBe(201);
      expect((await call("GET", `/api/v1/organizations/${org.body.id}`)).body.name).toBe(
        "Société Générale 株式会社",
      );

      const key = await call("POST", "/auth/api-keys", { name: "clé 🔑" });
      expect(key.status).toBe(201);
      expect((await call("GET", `/api/v1/api-keys/${key.body.id}`)).body.name).toBe("clé 🔑");

      const control = await call("PUT", "/auth/profile", { name: "bad\u0000name" }, tokens.operator);
      expect(control.status).toBe(400);
      expect((await userRow(operator.email))!.name).toBe(name);
    });
  });
});

describe("per-IP login limiter (real HTTP on loopback, its own control plane)", () => {
  let stack: Stack | undefined;
  let server: ReturnType<typeof serve> | undefined;
  let base = "";
  const admin = { email: `ip-admin-${runId()}@example.test`, password: "ip admin long password" };

  beforeAll(async () => {
    stack = await startStack(admin);
    const app = stack.cp.app;
    await new Promise<void>((resolve) => {
      server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, () => resolve());
    });
    base = `http://127.0.0.1:${(server!.address() as AddressInfo).port}`;
  }, 60_000);

  afterAll(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await stopStack(stack);
  });

  const post = async (path: string, body: unknown) =>
    toReply(
      await fetch(`${base}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      }),
    );

  it("allows 30 failed login attempts per IP in 5 minutes, then answers 429 with Retry-After, even for the right password", async () => {
    // Successful logins do not use up the budget.
    for (let i = 0; i < 3; i++) expect((await post("/auth/login", admin)).status).toBe(200);
    // Spread over unknown accounts so the per-account lock is not what answers.
    for (let i = 1; i <= 30; i++) {
      const res = await post("/auth/login", {
        email: `nobody-${i}@example.test`,
        password: "wrong password",
      });
      expect({ attempt: i, status: res.status }).toEqual({ attempt: i, status: 401 });
    }
    const over = await post("/auth/login", { email: "nobody-31@example.test", password: "wrong password" });
    expect(over.status).toBe(429);
    expect(over.type).toBe("application/problem+json");
    expect(over.body).toMatchObject({ status: 429, title: "Too Many Requests" });
    const retryAfter = Number(over.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(300);
    expect(retryAfter).toBeGreaterThan(200);

    const right = await post("/auth/login", admin);
    expect(right.status).toBe(429);
    expect(right.body.access_token).toBeUndefined();
    expect(right.headers.get("retry-after")).toMatch(/^\d+$/);
    // The a2a exchange shares the per-IP budget (it is a credential check too).
    const a2a = await post("/auth/a2a/token", { client_secret: "mcpgw_guess" });
    expect(a2a.status).toBe(429);
    // The account itself was not locked by the IP limiter.
    const [row] = await stack!.database.db
      .select()
      .from(schema.users)
      .where(eq(schema.users.email, admin.email));
    expect(row!.failed_logins).toBe(0);
    expect(row!.locked_until).toBeNull();
  });
});
