import { NatsBus } from "@mcpgw/bus";
import { type DbHandle, openDatabase, schema } from "@mcpgw/db";
import { Keyring } from "@mcpgw/secrets";
import { generateSnapshotKeys } from "@mcpgw/snapshot";
import { createLogger, createMetricsRegistry } from "@mcpgw/telemetry";
import { Validator } from "@seriousme/openapi-schema-validator";
import { Ajv2020 } from "ajv/dist/2020.js";
import { and, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestDatabase,
  deleteNatsBuckets,
  runId,
  testEnv,
} from "../../../packages/testing/src/index.ts";
import { hashPassword } from "../src/auth/passwords.ts";
import { startControlPlane } from "../src/runtime.ts";

type App = Awaited<ReturnType<typeof startControlPlane>>["app"];

describe("control plane REST API (in-process, real Postgres and NATS)", () => {
  let database: DbHandle;
  let drop: () => Promise<void>;
  let bus: NatsBus;
  let cp: Awaited<ReturnType<typeof startControlPlane>>;
  let app: App;
  const id = runId();
  const admin = { email: `admin-${id}@example.test`, password: "correct horse battery staple" };
  const tokens: Record<"admin" | "viewer" | "operator" | "other", string> = {
    admin: "",
    viewer: "",
    operator: "",
    other: "",
  };

  async function call(
    method: string,
    path: string,
    body?: unknown,
    token: string | null = tokens.admin,
    raw?: string,
  ) {
    const headers: Record<string, string> = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined || raw !== undefined) headers["content-type"] = "application/json";
    const res = await app.request(path, {
      method,
      headers,
      body: raw ?? (body === undefined ? undefined : JSON.stringify(body)),
    });
    const text = await res.text();
    expect(text).not.toMatch(/\n\s+at |node_modules/);
    return {
      status: res.status,
      type: res.headers.get("content-type"),
      body: text ? JSON.parse(text) : undefined,
    };
  }

  async function loginAs(email: string, password: string) {
    const res = await call("POST", "/auth/login", { email, password }, null);
    expect(res.status).toBe(200);
    return res.body.access_token as string;
  }

  beforeAll(async () => {
    const test = await createTestDatabase();
    drop = test.drop;
    database = await openDatabase(test.url, { max: 4 });
    bus = await NatsBus.connect(testEnv.natsUrl);
    const { privateJwk } = await generateSnapshotKeys();
    cp = await startControlPlane({
      database,
      bus,
      busPrefix: `t${id}`,
      logger: createLogger("cp-test", "silent"),
      metrics: createMetricsRegistry("cp-test"),
      masterKey: Keyring.generateKey(),
      snapshotSigningKey: JSON.stringify(privateJwk),
      jwtIssuer: "mcpgw",
      jwtAudience: "mcpgw",
      accessTokenTtlS: 60,
      allowPrivateUpstreams: false,
      publishSweepMs: 500,
      admin,
    });
    app = cp.app;
    tokens.admin = await loginAs(admin.email, admin.password);
    // stdio servers are made from the platform's catalog (the bootstrap admin is a platform admin).
    const entry = await call("POST", "/api/v1/stdio-catalog", {
      slug: "node-basic",
      name: "Node server",
      command: "node",
      args: ["server.js"],
    });
    expect(entry.status, JSON.stringify(entry.body)).toBe(201);
    const tokenEntry = await call("POST", "/api/v1/stdio-catalog", {
      slug: "node-token",
      name: "Node server with a token",
      command: "node",
      args: ["server.js", "--mode={{mode}}"],
      parameters: [
        { name: "api_token", type: "string", secret: true, required: true, env: "API_TOKEN" },
        { name: "mode", type: "string", enum: ["fast", "safe"] },
      ],
    });
    expect(tokenEntry.status, JSON.stringify(tokenEntry.body)).toBe(201);
    const { db } = database;
    const [defaultOrg] = await db
      .select()
      .from(schema.organizations)
      .where(eq(schema.organizations.slug, "default"));
    const [otherOrg] = await db
      .insert(schema.organizations)
      .values({ name: "Other", slug: `other-${id}`, max_servers: 2 })
      .returning();
    const hash = await hashPassword("another long password");
    await db.insert(schema.users).values([
      { org_id: defaultOrg!.id, email: `viewer-${id}@example.test`, password_hash: hash, role: "viewer" },
      { org_id: defaultOrg!.id, email: `operator-${id}@example.test`, password_hash: hash, role: "operator" },
      { org_id: otherOrg!.id, email: `other-${id}@example.test`, password_hash: hash, role: "admin" },
    ]);
    tokens.viewer = await loginAs(`viewer-${id}@example.test`, "another long password");
    tokens.operator = await loginAs(`operator-${id}@example.test`, "another long password");
    tokens.other = await loginAs(`other-${id}@example.test`, "another long password");
  }, 60_000);

  afterAll(async () => {
    await cp?.stop();
    await bus?.close();
    await database?.close();
    await drop?.();
    await deleteNatsBuckets(testEnv.natsUrl, `t${id}`);
  });

  it("serves health, readiness, metrics, OpenAPI and docs", async () => {
    expect((await call("GET", "/health", undefined, null)).status).toBe(200);
    expect((await call("GET", "/ready", undefined, null)).status).toBe(200);
    const spec = await call("GET", "/openapi.json", undefined, null);
    expect(spec.body.openapi).toBe("3.1.0");
    expect(Object.keys(spec.body.paths)).toEqual(
      expect.arrayContaining(["/auth/login", "/api/v1/namespaces", "/api/v1/servers/{id}"]),
    );
    const docs = await app.request("/docs");
    expect(docs.status).toBe(200);
    const metrics = await app.request("/metrics");
    expect(await metrics.text()).toContain("mcpgw_cp_http_requests_total");
    const jwks = await call("GET", "/.well-known/jwks.json", undefined, null);
    expect(jwks.body.keys[0]).toMatchObject({ kty: "EC", alg: "ES256", use: "sig" });
    expect(jwks.body.keys[0].d).toBeUndefined();
  });

  it("publishes an OpenAPI document a standard validator accepts, with patterns clients can use", async () => {
    const spec = (await call("GET", "/openapi.json", undefined, null)).body as Record<string, unknown>;
    const result = await new Validator().validate(structuredClone(spec));
    expect(result.errors, JSON.stringify(result.errors)).toBeUndefined();
    expect(result.valid).toBe(true);
    // JSON Schema patterns are ECMA-262 without flags: none may carry a `/u` or `/i` suffix.
    const patterns: string[] = [];
    JSON.stringify(spec, (key, value) => {
      if (key === "pattern" && typeof value === "string") patterns.push(value);
      return value;
    });
    expect(patterns.length).toBeGreaterThan(5);
    for (const p of patterns) {
      expect(p, p).not.toMatch(/\/[a-z]+$/);
      expect(() => new RegExp(p, "u"), p).not.toThrow();
    }
    // A client generated from the document accepts what the API accepts.
    const ajv = new Ajv2020({ strict: false });
    const components = (spec.components as { schemas: Record<string, object> }).schemas;
    const accepts = (name: string, value: unknown) => {
      const validate = ajv.compile({ ...components[name], components: { schemas: components } });
      return validate(value);
    };
    expect(accepts("NamespaceInput", { name: "Ünïcødé 名前 🚀", slug: "My-Team" })).toBe(true);
    expect(accepts("NamespaceInput", { name: "bad\u0007name", slug: "my-team" })).toBe(false);
    expect(accepts("NamespaceInput", { name: "ok", slug: "-bad-" })).toBe(false);
  });

  it("logs in with a short-lived JWT and refuses wrong passwords and unknown users alike", async () => {
    const ok = await call("POST", "/auth/login", admin, null);
    expect(ok.body).toMatchObject({ token_type: "Bearer", expires_in: 60 });
    const [header] = ok.body.access_token.split(".");
    expect(JSON.parse(Buffer.from(header, "base64url").toString())).toMatchObject({
      alg: "ES256",
      kid: expect.any(String),
    });
    const wrong = await call("POST", "/auth/login", { ...admin, password: "wrong password!" }, null);
    const unknown = await call(
      "POST",
      "/auth/login",
      { email: "nobody@example.test", password: "whatever it is" },
      null,
    );
    expect(wrong.status).toBe(401);
    expect(unknown.status).toBe(401);
    expect(wrong.body.detail).toBe(unknown.body.detail);
    expect(wrong.type).toBe("application/problem+json");
  });

  it("creates, reads, updates, lists with cursors and deletes namespaces, with an audit row per mutation", async () => {
    const created = await call("POST", "/api/v1/namespaces", { name: "Payments", slug: "payments" });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ name: "Payments", slug: "payments", tool_naming: "prefix" });
    const dup = await call("POST", "/api/v1/namespaces", { name: "Again", slug: "PAYMENTS" });
    expect(dup.status).toBe(409);
    const patched = await call("PATCH", `/api/v1/namespaces/${created.body.id}`, { description: "money" });
    expect(patched.body.description).toBe("money");
    for (let i = 0; i < 3; i++)
      await call("POST", "/api/v1/namespaces", { name: `Page ${i}`, slug: `page-${i}` });
    const first = await call("GET", "/api/v1/namespaces?limit=2");
    expect(first.body.items).toHaveLength(2);
    const second = await call("GET", `/api/v1/namespaces?limit=2&cursor=${first.body.next_cursor}`);
    const third = await call("GET", `/api/v1/namespaces?limit=2&cursor=${second.body.next_cursor}`);
    const ids = [...first.body.items, ...second.body.items, ...third.body.items].map(
      (n: { id: string }) => n.id,
    );
    expect(new Set(ids).size).toBe(4);
    expect(third.body.next_cursor).toBeNull();
    expect((await call("DELETE", `/api/v1/namespaces/${created.body.id}`)).status).toBe(204);
    expect((await call("GET", `/api/v1/namespaces/${created.body.id}`)).status).toBe(404);

    const audit = await database.db
      .select()
      .from(schema.auditLogs)
      .where(eq(schema.auditLogs.resource_id, created.body.id));
    expect(audit.map((a) => a.action).sort()).toEqual([
      "namespace.create",
      "namespace.delete",
      "namespace.update",
    ]);
    expect(audit.every((a) => a.request_id && a.actor_id)).toBe(true);
  });

  it("registers servers, enables and disables them, and keeps secrets out of audit rows", async () => {
    const ns = await call("POST", "/api/v1/namespaces", { name: "Servers", slug: "servers" });
    const server = await call("POST", "/api/v1/servers", {
      namespace_id: ns.body.id,
      name: "stdio-tool",
      transport: "stdio",
      catalog_entry_id: "node-token",
      parameters: { api_token: "super-secret-value", mode: "fast" },
    });
    expect(server.status, JSON.stringify(server.body)).toBe(201);
    expect(server.body).toMatchObject({
      enabled: true,
      status: "unknown",
      has_credentials: false,
      has_secrets: true,
      parameters: { mode: "fast" },
    });
    expect(JSON.stringify(server.body)).not.toContain("super-secret-value");
    // A viewer sees the server but never its secret parameters.
    const seen = await call("GET", `/api/v1/servers/${server.body.id}`, undefined, tokens.viewer);
    expect(seen.status).toBe(200);
    expect(JSON.stringify(seen.body)).not.toContain("super-secret-value");
    const [stored] = await database.db
      .select()
      .from(schema.mcpServers)
      .where(eq(schema.mcpServers.id, server.body.id));
    expect(JSON.stringify(stored)).not.toContain("super-secret-value");
    // Merged on update: the secret stays, the plain value changes; a value off the enum is refused.
    const changed = await call("PATCH", `/api/v1/servers/${server.body.id}`, {
      parameters: { mode: "safe" },
    });
    expect(changed.body).toMatchObject({ parameters: { mode: "safe" }, has_secrets: true });
    const offEnum = await call("PATCH", `/api/v1/servers/${server.body.id}`, { parameters: { mode: "-e" } });
    expect(offEnum.status).toBe(400);
    expect(offEnum.body.detail).toContain("mode");
    const missing = await call("POST", "/api/v1/servers", {
      namespace_id: ns.body.id,
      name: "no-token",
      transport: "stdio",
      catalog_entry_id: "node-token",
    });
    expect(missing.status).toBe(400);
    expect(missing.body.detail).toContain("api_token");
    const disabled = await call("PATCH", `/api/v1/servers/${server.body.id}`, { enabled: false });
    expect(disabled.body.enabled).toBe(false);
    const list = await call("GET", `/api/v1/servers?namespace_id=${ns.body.id}`);
    expect(list.body.items.map((s: { name: string }) => s.name)).toEqual(["stdio-tool"]);
    const audit = await database.db
      .select()
      .from(schema.auditLogs)
      .where(eq(schema.auditLogs.resource_id, server.body.id));
    expect(audit.map((a) => a.action).sort()).toEqual(["server.create", "server.disable", "server.update"]);
    expect(JSON.stringify(audit)).not.toContain("super-secret-value");
    const unsafe = await call("POST", "/api/v1/stdio-catalog", {
      slug: "preloaded",
      name: "preloaded",
      command: "node",
      env: { NODE_OPTIONS: "--require /tmp/evil.js" },
    });
    expect(unsafe.status).toBe(400);
    expect(unsafe.body.detail).toContain("NODE_OPTIONS");
  });

  it("bumps the org's config version per change and publishes it (outbox drained)", async () => {
    const [before] = await database.db
      .select()
      .from(schema.organizations)
      .where(eq(schema.organizations.slug, "default"));
    await call("POST", "/api/v1/namespaces", { name: "Versioned", slug: "versioned" });
    await expect
      .poll(async () => {
        const [org] = await database.db
          .select()
          .from(schema.organizations)
          .where(eq(schema.organizations.id, before!.id));
        return org!.published_version;
      })
      .toBe(before!.config_version + 1);
    // A version committed without any notify (a crash before publishing) is found by the sweep.
    await database.db
      .update(schema.organizations)
      .set({ config_version: before!.config_version + 5 })
      .where(eq(schema.organizations.id, before!.id));
    await expect
      .poll(
        async () => {
          const [org] = await database.db
            .select()
            .from(schema.organizations)
            .where(eq(schema.organizations.id, before!.id));
          return org!.published_version;
        },
        { timeout: 5000 },
      )
      .toBe(before!.config_version + 5);
  });

  it("rejects upstream URLs that point at internal addresses or embed credentials", async () => {
    const ns = await call("POST", "/api/v1/namespaces", { name: "SSRF", slug: "ssrf" });
    for (const url of [
      "http://127.0.0.1:8080/mcp",
      "http://169.254.169.254/latest/meta-data",
      "http://[::1]/mcp",
      "http://[::ffff:127.0.0.1]/mcp",
      "http://0.0.0.0/mcp",
      "http://10.1.2.3/mcp",
      "http://localhost:9000/mcp",
      "file:///etc/passwd",
      "http://user:pass@example.com/mcp",
      "not a url",
    ]) {
      const res = await call("POST", "/api/v1/servers", {
        namespace_id: ns.body.id,
        name: "x",
        transport: "streamable_http",
        url,
      });
      expect(res.status, url).toBe(400);
      expect(res.type).toBe("application/problem+json");
    }
    // Public addresses pass (an IP literal: no DNS needed in the test).
    const ok = await call("POST", "/api/v1/servers", {
      namespace_id: ns.body.id,
      name: "public",
      transport: "streamable_http",
      url: "https://203.0.113.10/mcp",
    });
    expect(ok.status).toBe(201);
  });

  it("answers bad input with a clear 4xx problem and stores nothing half-way", async () => {
    const before = await database.db.select().from(schema.namespaces);
    const malformed = await call(
      "POST",
      "/api/v1/namespaces",
      undefined,
      tokens.admin,
      '{"name": "x", "slug": ',
    );
    expect(malformed.status).toBe(400);
    expect(malformed.type).toBe("application/problem+json");
    const unknownField = await call("POST", "/api/v1/namespaces", { name: "A", slug: "a", owner: "me" });
    expect(unknownField.status).toBe(400);
    expect(unknownField.body.errors).toBeDefined();
    const injection = await call("POST", "/api/v1/namespaces", {
      name: "x'); DROP TABLE namespaces;--",
      slug: "a'; drop table x;--",
    });
    expect(injection.status).toBe(400);
    const control = await call("POST", "/api/v1/namespaces", { name: "bad\u0000name", slug: "ok-slug" });
    expect(control.status).toBe(400);
    const oversized = await call("POST", "/api/v1/namespaces", {
      name: "big",
      slug: "big",
      metadata: { pad: "x".repeat(2 * 1024 * 1024) },
    });
    expect(oversized.status).toBe(413);
    const badId = await call("GET", "/api/v1/namespaces/not-a-uuid");
    expect(badId.status).toBe(400);
    const badCursor = await call("GET", "/api/v1/namespaces?cursor=garbage");
    expect(badCursor.status).toBe(400);
    const noNamespace = await call("POST", "/api/v1/servers", {
      namespace_id: "00000000-0000-4000-8000-000000000000",
      name: "x",
      transport: "stdio",
      catalog_entry_id: "node-basic",
    });
    expect(noNamespace.status).toBe(404);
    const unicode = await call("POST", "/api/v1/namespaces", { name: "Ünïcødé 名前 🚀", slug: "unicode" });
    expect(unicode.status).toBe(201);
    expect(unicode.body.name).toBe("Ünïcødé 名前 🚀");
    const after = await database.db.select().from(schema.namespaces);
    expect(after.length).toBe(before.length + 1);
    expect((await call("GET", "/api/v1/nope")).status).toBe(404);
  });

  describe("security on every route", () => {
    // Every authenticated route: {ns}, {srv}, {usr}, {key}, {pol}, {idp}, {org} are filled with
    // resources of the admin's org; the other org's admin must get 404 for each of them.
    const routes: Array<[string, string, unknown?]> = [
      ["GET", "/api/v1/namespaces"],
      ["POST", "/api/v1/namespaces", { name: "S", slug: "sec" }],
      ["GET", "/api/v1/namespaces/{ns}"],
      ["PATCH", "/api/v1/namespaces/{ns}", { description: "x" }],
      ["DELETE", "/api/v1/namespaces/{ns}"],
      ["GET", "/api/v1/servers"],
      [
        "POST",
        "/api/v1/servers",
        { namespace_id: "{ns}", name: "s", transport: "stdio", catalog_entry_id: "node-basic" },
      ],
      ["GET", "/api/v1/servers/{srv}"],
      ["PATCH", "/api/v1/servers/{srv}", { enabled: false }],
      ["DELETE", "/api/v1/servers/{srv}"],
      ["GET", "/api/v1/users"],
      ["POST", "/api/v1/users", { email: "new-user@example.test", role: "viewer" }],
      ["GET", "/api/v1/users/{usr}"],
      ["PATCH", "/api/v1/users/{usr}", { name: "Renamed" }],
      ["DELETE", "/api/v1/users/{usr}"],
      ["GET", "/api/v1/api-keys"],
      ["POST", "/api/v1/api-keys", { name: "k", kind: "a2a" }],
      ["GET", "/api/v1/api-keys/{key}"],
      ["DELETE", "/api/v1/api-keys/{key}"],
      ["GET", "/api/v1/policies"],
      ["POST", "/api/v1/policies", { name: "p", effect: "deny" }],
      ["POST", "/api/v1/policies/evaluate", { principal: { role: "viewer" }, server_id: "{srv}", tool: "x" }],
      ["GET", "/api/v1/policies/{pol}"],
      ["PATCH", "/api/v1/policies/{pol}", { priority: 5 }],
      ["DELETE", "/api/v1/policies/{pol}"],
      ["GET", "/api/v1/identity-providers"],
      [
        "POST",
        "/api/v1/identity-providers",
        {
          name: "i",
          issuer: "https://idp.example.com",
          jwks_url: "https://idp.example.com/jwks",
          audience: "a",
        },
      ],
      ["GET", "/api/v1/identity-providers/{idp}"],
      ["PATCH", "/api/v1/identity-providers/{idp}", { name: "renamed" }],
      ["DELETE", "/api/v1/identity-providers/{idp}"],
      ["GET", "/api/v1/audit-logs"],
      ["GET", "/api/v1/rate-limits"],
      ["POST", "/api/v1/rate-limits", { name: "r", scope: "org", limit: 10, window_s: 60 }],
      ["GET", "/api/v1/rate-limits/{rl}"],
      ["PATCH", "/api/v1/rate-limits/{rl}", { limit: 5 }],
      ["DELETE", "/api/v1/rate-limits/{rl}"],
      ["GET", "/api/v1/organizations"],
      ["POST", "/api/v1/organizations", { name: "New org", slug: "new-org" }],
      ["GET", "/api/v1/organizations/{org}"],
      ["PATCH", "/api/v1/organizations/{org}", { plan: "pro" }],
      ["DELETE", "/api/v1/organizations/{org}"],
      ["GET", "/api/v1/stdio-catalog"],
      ["POST", "/api/v1/stdio-catalog", { slug: "sec-entry", name: "S", command: "node" }],
      ["GET", "/api/v1/stdio-catalog/{cat}"],
      ["PATCH", "/api/v1/stdio-catalog/{cat}", { name: "renamed" }],
      ["DELETE", "/api/v1/stdio-catalog/{cat}"],
      ["GET", "/auth/profile"],
      ["PUT", "/auth/profile", { name: "Me" }],
      ["POST", "/auth/api-keys", { name: "mine" }],
      ["POST", "/auth/logout"],
    ];
    // Reads a viewer may do; every other route needs more than a viewer has.
    const viewerAllowed = new Set([
      "GET /api/v1/namespaces",
      "GET /api/v1/namespaces/{ns}",
      "GET /api/v1/servers",
      "GET /api/v1/servers/{srv}",
      "GET /api/v1/api-keys",
      "GET /api/v1/organizations/{org}",
      // The platform's stdio catalog is readable by whoever may read servers.
      "GET /api/v1/stdio-catalog",
      "GET /api/v1/stdio-catalog/{cat}",
      "GET /auth/profile",
      "PUT /auth/profile",
      "POST /auth/api-keys",
      "POST /auth/logout",
      // Keys of others are invisible to non-admins: 404, checked below.
      "GET /api/v1/api-keys/{key}",
      "DELETE /api/v1/api-keys/{key}",
    ]);
    const ids: Record<string, string> = {};
    const fill = (v: unknown) =>
      JSON.parse(
        JSON.stringify(v ?? null).replace(
          /\{(ns|srv|usr|key|pol|idp|org|rl|cat)\}/g,
          (_m, k: string) => ids[k]!,
        ),
      ) ?? undefined;
    let ns: string;

    beforeAll(async () => {
      ns = (await call("POST", "/api/v1/namespaces", { name: "Secured", slug: "secured" })).body.id;
      ids.ns = ns;
      ids.srv = (
        await call("POST", "/api/v1/servers", {
          namespace_id: ns,
          name: "secured",
          transport: "stdio",
          catalog_entry_id: "node-basic",
        })
      ).body.id;
      ids.usr = (
        await call("POST", "/api/v1/users", { email: `target-${id}@example.test`, role: "user" })
      ).body.id;
      ids.key = (await call("POST", "/api/v1/api-keys", { name: "target", kind: "a2a" })).body.id;
      ids.pol = (await call("POST", "/api/v1/policies", { name: "target", effect: "allow" })).body.id;
      ids.idp = (
        await call("POST", "/api/v1/identity-providers", {
          name: "t",
          issuer: "https://t.example.com",
          jwks_url: "https://203.0.113.10/jwks",
          audience: "a",
        })
      ).body.id;
      ids.rl = (
        await call("POST", "/api/v1/rate-limits", {
          name: "target",
          scope: "server",
          match: { server_id: ids.srv },
          limit: 5,
          window_s: 60,
        })
      ).body.id;
      ids.org = (
        await call("POST", "/api/v1/organizations", { name: "Target org", slug: `target-${id}` })
      ).body.id;
      // An entry no server uses (deleting it answers 204 rather than 409).
      ids.cat = (
        await call("POST", "/api/v1/stdio-catalog", { slug: `target-${id}`, name: "Target", command: "node" })
      ).body.id;
      for (const [k, v] of Object.entries(ids)) expect(v, k).toBeDefined();
    });

    it.each(routes)(
      "%s %s: 401 without a token, with an expired or a tampered one",
      async (method, path, body) => {
        expect((await call(method, fill(path), fill(body), null)).status).toBe(401);
        const [h, p, s] = tokens.admin.split(".");
        const claims = JSON.parse(Buffer.from(p!, "base64url").toString());
        const tampered = `${h}.${Buffer.from(JSON.stringify({ ...claims, role: "admin", sub: "someone-else" })).toString("base64url")}.${s}`;
        expect((await call(method, fill(path), fill(body), tampered)).status).toBe(401);
        const expired = `${h}.${Buffer.from(JSON.stringify({ ...claims, exp: 1 })).toString("base64url")}.${s}`;
        expect((await call(method, fill(path), fill(body), expired)).status).toBe(401);
      },
    );

    it.each(routes.filter(([m, p]) => !viewerAllowed.has(`${m} ${p}`) && p !== "/auth/logout"))(
      "%s %s: 403 for a viewer",
      async (method, path, body) => {
        expect((await call(method, fill(path), fill(body), tokens.viewer)).status).toBe(403);
      },
    );

    it.each(routes.filter(([, p, b]) => /{(ns|srv|usr|key|pol|idp|rl)}/.test(p + JSON.stringify(b ?? ""))))(
      "%s %s: 404 for another org's resource",
      async (method, path, body) => {
        expect((await call(method, fill(path), fill(body), tokens.other)).status).toBe(404);
      },
    );

    it("hides other users' API keys from non-admins", async () => {
      expect((await call("GET", `/api/v1/api-keys/${ids.key}`, undefined, tokens.viewer)).status).toBe(404);
      expect((await call("DELETE", `/api/v1/api-keys/${ids.key}`, undefined, tokens.viewer)).status).toBe(
        404,
      );
      const own = await call("POST", "/auth/api-keys", { name: "viewer's own" }, tokens.viewer);
      expect(own.status).toBe(201);
      const listed = await call("GET", "/api/v1/api-keys", undefined, tokens.viewer);
      expect(listed.body.items.map((k: { id: string }) => k.id)).toEqual([own.body.id]);
    });

    it("keeps organizations to platform administrators: other org admins get 403, or 404 for another org", async () => {
      expect((await call("GET", "/api/v1/organizations", undefined, tokens.other)).status).toBe(403);
      expect((await call("GET", `/api/v1/organizations/${ids.org}`, undefined, tokens.other)).status).toBe(
        404,
      );
      expect(
        (await call("PATCH", `/api/v1/organizations/${ids.org}`, { plan: "x" }, tokens.other)).status,
      ).toBe(403);
    });

    it("refuses an org admin's interpreter one-liner: commands come only from the platform's catalog", async () => {
      const otherNs = (
        await call("POST", "/api/v1/namespaces", { name: "Shell", slug: "shell" }, tokens.other)
      ).body.id;
      const oneLiner = await call(
        "POST",
        "/api/v1/servers",
        {
          namespace_id: otherNs,
          name: "pwn",
          transport: "stdio",
          command: "node",
          args: ["-e", "require('fs').readFileSync('/proc/' + process.ppid + '/environ')"],
        },
        tokens.other,
      );
      expect(oneLiner.status).toBe(400);
      const noEntry = await call(
        "POST",
        "/api/v1/servers",
        { namespace_id: otherNs, name: "pwn", transport: "stdio" },
        tokens.other,
      );
      expect(noEntry.status).toBe(400);
      expect(noEntry.body.detail).toContain("catalog entry");
      const entry = { slug: "mine", name: "mine", command: "node", args: ["-e", "1"] };
      expect((await call("POST", "/api/v1/stdio-catalog", entry, tokens.other)).status).toBe(403);
      const [basic] = await database.db
        .select()
        .from(schema.stdioCatalog)
        .where(eq(schema.stdioCatalog.slug, "node-basic"));
      expect(
        (await call("PATCH", `/api/v1/stdio-catalog/${basic!.id}`, { args: ["-e", "1"] }, tokens.other))
          .status,
      ).toBe(403);
      expect(
        (await call("DELETE", `/api/v1/stdio-catalog/${basic!.id}`, undefined, tokens.other)).status,
      ).toBe(403);
      // Org admins read the catalog to choose from it.
      expect((await call("GET", "/api/v1/stdio-catalog", undefined, tokens.other)).status).toBe(200);
      const rows = await database.db
        .select()
        .from(schema.mcpServers)
        .where(eq(schema.mcpServers.namespace_id, otherNs));
      expect(rows).toHaveLength(0);
    });

    it("keeps a catalog entry that servers use, and republishes their orgs when it changes", async () => {
      const [basic] = await database.db
        .select()
        .from(schema.stdioCatalog)
        .where(eq(schema.stdioCatalog.slug, "node-basic"));
      expect((await call("DELETE", `/api/v1/stdio-catalog/${basic!.id}`)).status).toBe(409);
      const [before] = await database.db
        .select()
        .from(schema.organizations)
        .where(eq(schema.organizations.slug, "default"));
      const changed = await call("PATCH", `/api/v1/stdio-catalog/${basic!.id}`, {
        args: ["server.js", "--v2"],
      });
      expect(changed.status).toBe(200);
      const [after] = await database.db
        .select()
        .from(schema.organizations)
        .where(eq(schema.organizations.slug, "default"));
      expect(after!.config_version).toBeGreaterThan(before!.config_version);
      const bad = await call("PATCH", `/api/v1/stdio-catalog/${basic!.id}`, { args: ["{{undeclared}}"] });
      expect(bad.status).toBe(400);
      expect(bad.body.detail).toContain("undeclared");
    });

    it("lets only admins register stdio commands", async () => {
      const res = await call(
        "POST",
        "/api/v1/servers",
        { namespace_id: ns, name: "op", transport: "stdio", catalog_entry_id: "node-basic" },
        tokens.operator,
      );
      expect(res.status).toBe(403);
      const rows = await database.db
        .select()
        .from(schema.mcpServers)
        .where(and(eq(schema.mcpServers.namespace_id, ns), eq(schema.mcpServers.name, "op")));
      expect(rows).toHaveLength(0);
    });

    it("enforces the plan's server limit", async () => {
      const otherNs = (
        await call("POST", "/api/v1/namespaces", { name: "Other NS", slug: "other-ns" }, tokens.other)
      ).body.id;
      for (const name of ["a", "b"]) {
        expect(
          (
            await call(
              "POST",
              "/api/v1/servers",
              { namespace_id: otherNs, name, transport: "stdio", catalog_entry_id: "node-basic" },
              tokens.other,
            )
          ).status,
        ).toBe(201);
      }
      const over = await call(
        "POST",
        "/api/v1/servers",
        { namespace_id: otherNs, name: "c", transport: "stdio", catalog_entry_id: "node-basic" },
        tokens.other,
      );
      expect(over.status).toBe(409);
      expect(over.body.detail).toContain("at most 2");
    });
  });
});
