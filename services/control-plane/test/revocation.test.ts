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
import { compileGlobalSnapshot } from "../src/publisher/compile.ts";
import { startControlPlane } from "../src/runtime.ts";

type ControlPlane = Awaited<ReturnType<typeof startControlPlane>>;

const ACCESS_TTL_S = 60;

interface Stack {
  database: DbHandle;
  drop: () => Promise<void>;
  bus: NatsBus;
  cp: ControlPlane;
  prefix: string;
}

/** A control plane of its own (as in auth.test.ts): its own database, bus prefix and admin. */
async function startStack(admin: { email: string; password: string }): Promise<Stack> {
  const test = await createTestDatabase();
  const database = await openDatabase(test.url, { max: 8 });
  const bus = await NatsBus.connect(testEnv.natsUrl);
  const prefix = `t${runId()}`;
  const { privateJwk } = await generateSnapshotKeys();
  const cp = await startControlPlane({
    database,
    bus,
    busPrefix: prefix,
    logger: createLogger("cp-revocation-test", "silent"),
    metrics: createMetricsRegistry("cp-revocation-test"),
    masterKey: Keyring.generateKey(),
    snapshotSigningKey: JSON.stringify(privateJwk),
    jwtIssuer: "mcpgw",
    jwtAudience: "mcpgw",
    accessTokenTtlS: ACCESS_TTL_S,
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
  // biome-ignore lint/suspicious/noExplicitAny: JSON bodies of many shapes
  body: any;
}

interface Session {
  access_token: string;
  refresh_token: string;
  user: { id: string; role: string };
}

const claims = (token: string) =>
  JSON.parse(Buffer.from(token.split(".")[1] ?? "", "base64url").toString()) as Record<string, unknown>;

describe("revoking access tokens on role changes and replayed refresh tokens (in-process, real Postgres and NATS)", () => {
  let stack: Stack;
  let database: DbHandle;
  const id = runId();
  const admin = { email: `admin-${id}@example.test`, password: "correct horse battery staple" };
  let adminToken = "";

  async function call(method: string, path: string, body?: unknown, token: string | null = adminToken) {
    const headers: Record<string, string> = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await stack.cp.app.request(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined } as Reply;
  }

  async function login(email: string, password: string): Promise<Session> {
    const res = await call("POST", "/auth/login", { email, password }, null);
    expect(res.status, `login of ${email}`).toBe(200);
    return res.body as Session;
  }

  async function refresh(refreshToken: string): Promise<Reply> {
    return call("POST", "/auth/refresh", { refresh_token: refreshToken }, null);
  }

  /** A user of the admin's org, with a session of their own. */
  async function userWithSession(name: string, role: string) {
    const email = `${name}-${id}@example.test`;
    const password = `${name} password long enough`;
    const created = await call("POST", "/api/v1/users", { email, password, role });
    expect(created.status).toBe(201);
    return { id: created.body.id as string, email, password, session: await login(email, password) };
  }

  const newUser = (token: string, name: string) =>
    call("POST", "/api/v1/users", { email: `${name}-${id}@example.test`, role: "admin" }, token);

  beforeAll(async () => {
    stack = await startStack(admin);
    database = stack.database;
    adminToken = (await login(admin.email, admin.password)).access_token;
  }, 60_000);

  afterAll(async () => {
    await stopStack(stack);
  });

  describe("role changes", () => {
    it("refuses an admin's earlier token with 401 once they are made a viewer", async () => {
      const demoted = await userWithSession("demoted", "admin");
      expect((await newUser(demoted.session.access_token, "made-while-admin")).status).toBe(201);

      const patched = await call("PATCH", `/api/v1/users/${demoted.id}`, { role: "viewer" });
      expect(patched.status).toBe(200);
      expect(patched.body.role).toBe("viewer");

      const replay = await newUser(demoted.session.access_token, "made-after-demotion");
      expect(replay.status).toBe(401);
      expect(replay.body.detail).toBe("token was revoked");
      expect((await call("GET", "/auth/profile", undefined, demoted.session.access_token)).status).toBe(401);
      const [made] = await database.db
        .select()
        .from(schema.users)
        .where(eq(schema.users.email, `made-after-demotion-${id}@example.test`));
      expect(made).toBeUndefined();
    });

    it("keeps the refresh token working, and it and a new login yield tokens with the new role", async () => {
      const demoted = await userWithSession("refreshed", "admin");
      expect((await call("PATCH", `/api/v1/users/${demoted.id}`, { role: "viewer" })).status).toBe(200);

      const rotated = await refresh(demoted.session.refresh_token);
      expect(rotated.status).toBe(200);
      expect(rotated.body.user.role).toBe("viewer");
      expect(claims(rotated.body.access_token).role).toBe("viewer");
      const profile = await call("GET", "/auth/profile", undefined, rotated.body.access_token);
      expect(profile.status).toBe(200);
      expect(profile.body.role).toBe("viewer");
      // The new token acts as a viewer: authenticated, but no longer allowed to make users.
      expect((await newUser(rotated.body.access_token, "made-by-viewer")).status).toBe(403);

      const fresh = await login(demoted.email, demoted.password);
      expect(fresh.user.role).toBe("viewer");
      expect(claims(fresh.access_token).role).toBe("viewer");
      expect((await call("GET", "/auth/profile", undefined, fresh.access_token)).status).toBe(200);

      // A promotion revokes too: the viewer token must not linger next to the admin one.
      expect((await call("PATCH", `/api/v1/users/${demoted.id}`, { role: "operator" })).status).toBe(200);
      expect((await call("GET", "/auth/profile", undefined, fresh.access_token)).status).toBe(401);
      const promoted = await refresh(rotated.body.refresh_token);
      expect(promoted.status).toBe(200);
      expect(claims(promoted.body.access_token).role).toBe("operator");
      expect((await call("GET", "/api/v1/users", undefined, promoted.body.access_token)).status).toBe(200);
    });

    it("leaves tokens alone when the patch does not change the role", async () => {
      const kept = await userWithSession("kept", "operator");
      const [before] = await database.db.select().from(schema.globalConfig);
      expect((await call("PATCH", `/api/v1/users/${kept.id}`, { role: "operator" })).status).toBe(200);
      expect((await call("PATCH", `/api/v1/users/${kept.id}`, { name: "Kept" })).status).toBe(200);
      expect((await call("GET", "/api/v1/users", undefined, kept.session.access_token)).status).toBe(200);
      const [after] = await database.db.select().from(schema.globalConfig);
      expect(after!.config_version).toBe(before!.config_version);
      const revoked = await database.db
        .select()
        .from(schema.revokedTokens)
        .where(eq(schema.revokedTokens.jti, `sub:${kept.id}`));
      expect(revoked).toHaveLength(0);
    });

    it("never lets a refresh racing a role change keep the old role (and never deadlocks)", async () => {
      const raced = await userWithSession("raced", "operator");
      let refreshToken = raced.session.refresh_token;
      const roles = ["viewer", "operator", "user", "viewer", "admin", "operator", "viewer", "user"];
      for (const role of roles) {
        const [patched, rotated] = await Promise.all([
          call("PATCH", `/api/v1/users/${raced.id}`, { role }),
          refresh(refreshToken),
        ]);
        expect(patched.status).toBe(200);
        expect(rotated.status).toBe(200);
        refreshToken = rotated.body.refresh_token;
        const token = rotated.body.access_token as string;
        const profile = await call("GET", "/auth/profile", undefined, token);
        // Issued before the change (then revoked by it) or after it (then with the new role).
        if (claims(token).role === role) expect(profile.status).toBe(200);
        else
          expect(profile.status, `a ${String(claims(token).role)} token after the change to ${role}`).toBe(
            401,
          );
      }
    });
  });

  describe("replayed refresh tokens", () => {
    it("refuses the access token issued with the rotated pair, and the login's first one, with 401", async () => {
      const victim = await userWithSession("replayed", "admin");
      const other = await login(victim.email, victim.password);
      const rotated = await refresh(victim.session.refresh_token);
      expect(rotated.status).toBe(200);
      const fid = claims(victim.session.access_token).fid;
      expect(fid).toEqual(expect.any(String));
      expect(claims(rotated.body.access_token).fid).toBe(fid);
      expect(claims(other.access_token).fid).not.toBe(fid);
      expect((await call("GET", "/auth/profile", undefined, rotated.body.access_token)).status).toBe(200);

      const replay = await refresh(victim.session.refresh_token);
      expect(replay.status).toBe(401);
      expect(replay.body.detail).toMatch(/already used/);

      const stolen = await newUser(rotated.body.access_token, "made-with-stolen-token");
      expect(stolen.status).toBe(401);
      expect(stolen.body.detail).toBe("token was revoked");
      expect((await call("GET", "/auth/profile", undefined, victim.session.access_token)).status).toBe(401);
      expect((await refresh(rotated.body.refresh_token)).status).toBe(401);

      // Only that login ends: another session of the same user goes on.
      expect((await call("GET", "/auth/profile", undefined, other.access_token)).status).toBe(200);
      expect((await refresh(other.refresh_token)).status).toBe(200);

      // Remembered just past the access tokens' lifetime, and shipped to data planes as a revoked id.
      const [row] = await database.db
        .select()
        .from(schema.revokedTokens)
        .where(eq(schema.revokedTokens.jti, `fam:${String(fid)}`));
      expect(row).toBeDefined();
      const remembered = (row!.expires_at.getTime() - Date.now()) / 1000;
      expect(remembered).toBeGreaterThan(ACCESS_TTL_S);
      expect(remembered).toBeLessThan(ACCESS_TTL_S + 5 * 60);
      const global = await compileGlobalSnapshot(database.db, stack.cp.tokens);
      expect(global.revoked_jti).toContain(`fam:${String(fid)}`);
    });

    it("ends every access token of the login on logout with its refresh token", async () => {
      const leaving = await userWithSession("logout", "operator");
      const rotated = await refresh(leaving.session.refresh_token);
      expect(rotated.status).toBe(200);
      const out = await call(
        "POST",
        "/auth/logout",
        { refresh_token: rotated.body.refresh_token },
        rotated.body.access_token,
      );
      expect(out.status).toBe(204);
      expect((await call("GET", "/auth/profile", undefined, leaving.session.access_token)).status).toBe(401);
      expect((await call("GET", "/auth/profile", undefined, rotated.body.access_token)).status).toBe(401);
    });

    it("issues a2a tokens without a refresh family", async () => {
      const key = await call("POST", "/api/v1/api-keys", { name: "ci-bot", kind: "a2a" });
      expect(key.status).toBe(201);
      const exchanged = await call("POST", "/auth/a2a/token", { client_secret: key.body.key }, null);
      expect(exchanged.status).toBe(200);
      expect(claims(exchanged.body.access_token).fid).toBeUndefined();
      expect((await call("GET", "/api/v1/servers", undefined, exchanged.body.access_token)).status).toBe(200);
    });
  });
});
