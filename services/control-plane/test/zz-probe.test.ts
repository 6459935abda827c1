import { NatsBus } from "@mcpgw/bus";
import { openDatabase, schema } from "@mcpgw/db";
import { Keyring } from "@mcpgw/secrets";
import { generateSnapshotKeys } from "@mcpgw/snapshot";
import { createLogger, createMetricsRegistry } from "@mcpgw/telemetry";
import { eq } from "drizzle-orm";
import { it } from "vitest";
import {
  createTestDatabase,
  deleteNatsBuckets,
  runId,
  testEnv,
} from "../../../packages/testing/src/index.ts";
import { hashPassword } from "../src/auth/passwords.ts";
import { startControlPlane } from "../src/runtime.ts";

it("probe", async () => {
  const id = runId();
  const test = await createTestDatabase();
  const database = await openDatabase(test.url, { max: 4 });
  const bus = await NatsBus.connect(testEnv.natsUrl);
  const { privateJwk } = await generateSnapshotKeys();
  const admin = { email: `admin-${id}@example.test`, password: "correct horse battery staple" };
  const cp = await startControlPlane({
    database,
    bus,
    busPrefix: `t${id}`,
    logger: createLogger("x", "error"),
    metrics: createMetricsRegistry("x"),
    masterKey: Keyring.generateKey(),
    snapshotSigningKey: JSON.stringify(privateJwk),
    jwtIssuer: "mcpgw",
    jwtAudience: "mcpgw",
    accessTokenTtlS: 60,
    allowPrivateUpstreams: false,
    publishSweepMs: 500,
    admin,
  });
  const app = cp.app;
  const req = async (
    method: string,
    path: string,
    body?: unknown,
    token?: string,
    ct = "application/json",
  ) => {
    const h: Record<string, string> = {};
    if (token) h.authorization = `Bearer ${token}`;
    if (body !== undefined) h["content-type"] = ct;
    const r = await app.request(path, {
      method,
      headers: h,
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
    const t = await r.text();
    console.log(method, path, r.status, t.slice(0, 300));
    return { status: r.status, body: t ? JSON.parse(t) : undefined };
  };
  const tok = (await req("POST", "/auth/login", admin)).body.access_token;
  // race
  const [org] = await database.db.select().from(schema.organizations);
  await database.db
    .insert(schema.users)
    .values({
      org_id: org!.id,
      email: `race-${id}@x.test`,
      password_hash: await hashPassword("right password 123"),
      role: "viewer",
    });
  const rs = await Promise.all(
    Array.from({ length: 10 }, () =>
      req("POST", "/auth/login", { email: `race-${id}@x.test`, password: "wrong wrong wrong" }),
    ),
  );
  console.log(rs.map((r) => r.status));
  console.log(
    await database.db
      .select({ f: schema.users.failed_logins, l: schema.users.locked_until })
      .from(schema.users)
      .where(eq(schema.users.email, `race-${id}@x.test`)),
  );
  await req("POST", "/auth/login", JSON.stringify(admin), undefined, "text/plain");
  await req("POST", "/auth/login", "email=a&password=b", undefined, "application/x-www-form-urlencoded");
  await req("PUT", "/auth/profile", {}, tok);
  await req("PATCH", `/api/v1/organizations/${org!.id}`, {}, tok);
  const me = (await req("GET", "/auth/profile", undefined, tok)).body;
  const u = await req("POST", "/api/v1/users", { email: `u-${id}@x.test`, role: "viewer" }, tok);
  await req("PATCH", `/api/v1/users/${u.body.id}`, {}, tok);
  await req("PATCH", `/api/v1/users/${me.id}`, { role: "admin" }, tok);
  await req("POST", "/auth/login", { email: "' OR 1=1--@x.test", password: "x" });
  await req("POST", "/auth/login", { email: "a@b.c' OR '1'='1", password: "x" });
  // deleted org token
  const o = await req(
    "POST",
    "/api/v1/organizations",
    { name: "N", slug: `n-${id}`, admin: { email: `na-${id}@x.test`, password: "new admin password" } },
    tok,
  );
  const nt = (await req("POST", "/auth/login", { email: `na-${id}@x.test`, password: "new admin password" }))
    .body.access_token;
  await req("DELETE", `/api/v1/organizations/${o.body.id}`, undefined, tok);
  await req("POST", "/api/v1/namespaces", { name: "z", slug: "z" }, nt);
  await req("POST", "/auth/api-keys", { name: "z" }, nt);
  await req("GET", "/auth/profile", undefined, nt);
  // a2a
  const k = await req("POST", "/auth/api-keys", { name: "a", kind: "a2a" }, tok);
  const at = (await req("POST", "/auth/a2a/token", { client_secret: k.body.key })).body.access_token;
  await req("GET", "/auth/profile", undefined, at);
  await req("GET", "/api/v1/api-keys", undefined, at);
  await req("POST", "/auth/logout", { refresh_token: "rt_x" }, at);
  await req("POST", "/auth/a2a/token", "", undefined, "text/plain");
  await req("POST", "/auth/logout", "not json", tok, "text/plain");
  await cp.stop();
  await bus.close();
  await database.close();
  await test.drop();
  await deleteNatsBuckets(testEnv.natsUrl, `t${id}`);
}, 60000);
