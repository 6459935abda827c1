import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  eventually,
  login,
  type Stack,
  startOidcIssuer,
  startStack,
  startTestUpstream,
  type TestUpstream,
} from "../../../packages/testing/src/index.ts";

const AUDIENCE = "https://gateway.example.test/mcp";
const UPSTREAM_SECRET = "upstream-secret-value-123";

type Credential = { authorization: string } | { "x-api-key": string };

describe("identity through the data plane: JWT, API keys, a2a, external IdP, revocation, policies", () => {
  let stack: Stack;
  let api: Api;
  let upstream: TestUpstream;
  let idp: Awaited<ReturnType<typeof startOidcIssuer>>;
  let serverId: string;
  let orgId: string;
  const secrets: string[] = [UPSTREAM_SECRET];

  async function connect(credential: Credential, dp = 0) {
    const client = new Client({ name: "identity-e2e", version: "1.0.0" });
    const transport = new StreamableHTTPClientTransport(
      new URL(`${stack.dataPlanes[dp]!.url}/servers/${serverId}/mcp`),
      {
        requestInit: { headers: credential },
      },
    );
    await client.connect(transport);
    return client;
  }

  async function callAdd(credential: Credential, dp = 0) {
    const client = await connect(credential, dp);
    try {
      return (await client.callTool({ name: "add", arguments: { a: 1, b: 2 } })).content;
    } finally {
      await client.close();
    }
  }

  async function initializeStatus(credential: Credential, dp: number): Promise<number> {
    const res = await fetch(`${stack.dataPlanes[dp]!.url}/servers/${serverId}/mcp`, {
      method: "POST",
      headers: {
        ...credential,
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
      },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: {
          protocolVersion: "2025-11-25",
          capabilities: {},
          clientInfo: { name: "probe", version: "1" },
        },
      }),
    });
    await res.body?.cancel();
    return res.status;
  }

  /** Time until every replica rejects the credential with 401. */
  async function msUntilRejectedEverywhere(credential: Credential): Promise<number> {
    const started = Date.now();
    await Promise.all(
      stack.dataPlanes.map((_, dp) =>
        eventually(async () => (await initializeStatus(credential, dp)) === 401, 3000),
      ),
    );
    return Date.now() - started;
  }

  beforeAll(async () => {
    [stack, upstream, idp] = await Promise.all([
      startStack({ replicas: 2, worker: true }),
      startTestUpstream(),
      startOidcIssuer(),
    ]);
    api = await stack.api();
    const ns = await api.call<{ id: string; org_id: string }>("POST", "/api/v1/namespaces", {
      name: "Identity",
      slug: "identity",
    });
    orgId = ns.body.org_id;
    const server = await api.call<{ id: string; has_credentials: boolean }>("POST", "/api/v1/servers", {
      namespace_id: ns.body.id,
      name: "guarded",
      transport: "streamable_http",
      url: upstream.url,
      credentials: { type: "bearer", token: UPSTREAM_SECRET },
    });
    expect(server.status).toBe(201);
    expect(server.body.has_credentials).toBe(true);
    serverId = server.body.id;
    await eventually(
      async () => (await initializeStatus({ authorization: `Bearer ${api.token}` }, 1)) === 200,
      3000,
    );
  }, 90_000);

  afterAll(async () => {
    await Promise.all([stack?.stop(), upstream?.close(), idp?.close()]);
  });

  it("reaches the tool with a user JWT; the upstream gets the configured credential, never the client's token", async () => {
    upstream.received.length = 0;
    expect(await callAdd({ authorization: `Bearer ${api.token}` })).toEqual([{ type: "text", text: "3" }]);
    const auth = upstream.received.map((r) => r.headers.authorization);
    expect(auth.length).toBeGreaterThan(0);
    expect(new Set(auth)).toEqual(new Set([`Bearer ${UPSTREAM_SECRET}`]));
  });

  it("reaches the tool with a user API key (Bearer or X-API-Key) and records its use", async () => {
    const created = await api.call<{ id: string; key: string; prefix: string }>("POST", "/auth/api-keys", {
      name: "laptop",
    });
    expect(created.status).toBe(201);
    expect(created.body.key.startsWith(created.body.prefix)).toBe(true);
    secrets.push(created.body.key);
    await eventually(
      async () => (await initializeStatus({ "x-api-key": created.body.key }, 0)) === 200,
      3000,
    );
    expect(await callAdd({ authorization: `Bearer ${created.body.key}` }, 1)).toEqual([
      { type: "text", text: "3" },
    ]);
    expect(await callAdd({ "x-api-key": created.body.key }, 0)).toEqual([{ type: "text", text: "3" }]);
    const listed = await api.call<{
      items: Array<{ id: string; last_used_at: string | null; key?: string }>;
    }>("GET", "/api/v1/api-keys");
    expect(listed.body.items.find((k) => k.id === created.body.id)?.key).toBeUndefined();
    await eventually(async () => {
      const key = await api.call<{ last_used_at: string | null }>(
        "GET",
        `/api/v1/api-keys/${created.body.id}`,
      );
      return key.body.last_used_at !== null;
    }, 15_000);
  }, 30_000);

  it("rejects a revoked API key on both replicas within one second", async () => {
    const created = await api.call<{ id: string; key: string }>("POST", "/auth/api-keys", {
      name: "to-revoke",
    });
    secrets.push(created.body.key);
    await eventually(
      async () => (await initializeStatus({ "x-api-key": created.body.key }, 1)) === 200,
      3000,
    );
    expect((await api.call("DELETE", `/api/v1/api-keys/${created.body.id}`)).status).toBe(204);
    expect(await msUntilRejectedEverywhere({ "x-api-key": created.body.key })).toBeLessThan(1000);
  });

  it("exchanges an a2a key for a short-lived token that reaches the tool, and dies with its key", async () => {
    const key = await api.call<{ id: string; key: string; kind: string }>("POST", "/api/v1/api-keys", {
      name: "ci-bot",
      kind: "a2a",
    });
    expect(key.body.kind).toBe("a2a");
    secrets.push(key.body.key);
    const res = await fetch(`${stack.cpUrl}/auth/a2a/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "client_credentials", client_secret: key.body.key }).toString(),
    });
    expect(res.status).toBe(200);
    const { access_token, scope } = (await res.json()) as { access_token: string; scope: string };
    expect(scope).toBe("mcp:use");
    await eventually(
      async () => (await initializeStatus({ authorization: `Bearer ${access_token}` }, 0)) === 200,
      3000,
    );
    expect(await callAdd({ authorization: `Bearer ${access_token}` }, 1)).toEqual([
      { type: "text", text: "3" },
    ]);
    const wrong = await fetch(`${stack.cpUrl}/auth/a2a/token`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ client_secret: "mcpgw_not-a-key" }),
    });
    expect(wrong.status).toBe(401);
    await api.call("DELETE", `/api/v1/api-keys/${key.body.id}`);
    expect(await msUntilRejectedEverywhere({ authorization: `Bearer ${access_token}` })).toBeLessThan(1000);
  });

  it("accepts tokens of a trusted external issuer for this gateway's audience, and no other audience", async () => {
    const created = await api.call<{ id: string }>("POST", "/api/v1/identity-providers", {
      name: "Local IdP",
      issuer: idp.issuer,
      jwks_url: idp.jwksUrl,
      audience: AUDIENCE,
      role_claim: "groups",
      role_mapping: { "mcp-admins": "admin" },
    });
    expect(created.status).toBe(201);
    const good = await idp.token("alice", AUDIENCE, { groups: ["mcp-admins"] });
    await eventually(
      async () => (await initializeStatus({ authorization: `Bearer ${good}` }, 0)) === 200,
      3000,
    );
    expect(await callAdd({ authorization: `Bearer ${good}` }, 1)).toEqual([{ type: "text", text: "3" }]);
    const otherAudience = await idp.token("alice", "https://some-other-api.example.test", {
      groups: ["mcp-admins"],
    });
    const res = await fetch(`${stack.dataPlanes[0]!.url}/servers/${serverId}/mcp`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${otherAudience}`,
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
      },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
    });
    expect(res.status).toBe(401);
    expect(((await res.json()) as { error: { message: string } }).error.message).toContain("audience");
    const expired = await idp.token("alice", AUDIENCE, {}, -10);
    expect(await initializeStatus({ authorization: `Bearer ${expired}` }, 0)).toBe(401);
  });

  it("points unauthenticated clients at the protected-resource metadata (RFC 9728)", async () => {
    const res = await fetch(`${stack.dataPlanes[0]!.url}/servers/${serverId}/mcp`, { method: "POST" });
    expect(res.status).toBe(401);
    const challenge = res.headers.get("www-authenticate")!;
    const metadataUrl = /resource_metadata="([^"]+)"/.exec(challenge)![1]!;
    expect(metadataUrl).toContain(`/.well-known/oauth-protected-resource/servers/${serverId}/mcp`);
    const path = new URL(metadataUrl).pathname;
    const metadata = (await (await fetch(`${stack.dataPlanes[0]!.url}${path}`)).json()) as {
      resource: string;
      authorization_servers: string[];
    };
    expect(metadata.resource).toMatch(new RegExp(`/servers/${serverId}/mcp$`));
    expect(metadata.authorization_servers).toContain(idp.issuer);
  });

  it("rejects a logged-out access token on both replicas within one second", async () => {
    const session = await login(stack.cpUrl, stack.admin.email, stack.admin.password);
    await eventually(
      async () => (await initializeStatus({ authorization: `Bearer ${session.token}` }, 1)) === 200,
      3000,
    );
    expect((await session.call("POST", "/auth/logout")).status).toBe(204);
    expect(await msUntilRejectedEverywhere({ authorization: `Bearer ${session.token}` })).toBeLessThan(1000);
    expect((await session.call("GET", "/auth/profile")).status).toBe(401);
  });

  it("rejects the tokens of a deactivated user on both replicas within one second, not only at the control plane", async () => {
    const password = "soon deactivated password";
    const created = await api.call<{ id: string }>("POST", "/api/v1/users", {
      email: "leaver@identity.test",
      password,
      role: "user",
    });
    const leaver = await login(stack.cpUrl, "leaver@identity.test", password);
    await eventually(
      async () => (await initializeStatus({ authorization: `Bearer ${leaver.token}` }, 0)) === 200,
      3000,
    );
    expect(await initializeStatus({ authorization: `Bearer ${leaver.token}` }, 1)).toBe(200);
    expect((await api.call("PATCH", `/api/v1/users/${created.body.id}`, { active: false })).status).toBe(200);
    expect(await msUntilRejectedEverywhere({ authorization: `Bearer ${leaver.token}` })).toBeLessThan(1000);
    expect((await leaver.call("GET", "/auth/profile")).status).toBe(401);
  });

  describe("policies", () => {
    let viewerToken: string;

    beforeAll(async () => {
      const password = "viewer password long enough";
      const viewer = await api.call<{ id: string }>("POST", "/api/v1/users", {
        email: "viewer@identity.test",
        name: "Vi",
        password,
        role: "viewer",
      });
      expect(viewer.status).toBe(201);
      secrets.push(password);
      viewerToken = (await login(stack.cpUrl, "viewer@identity.test", password)).token;
      expect(
        (await api.call("PATCH", `/api/v1/organizations/${orgId}`, { policy_default: "deny" })).status,
      ).toBe(200);
      for (const policy of [
        { name: "admins-everything", effect: "allow", principals: ["role:admin"] },
        { name: "viewers-read-tools", effect: "allow", principals: ["role:viewer"], tools: ["echo", "add"] },
        { name: "viewers-no-add", effect: "deny", principals: ["role:viewer"], tools: ["add"], priority: 10 },
      ]) {
        expect((await api.call("POST", "/api/v1/policies", policy)).status).toBe(201);
      }
      await new Promise((r) => setTimeout(r, 500));
    });

    it("shows a viewer only the tools it may use, and denies a call with a policy error", async () => {
      const client = await eventually(() => connect({ authorization: `Bearer ${viewerToken}` }, 1), 3000);
      const { tools } = await client.listTools();
      expect(tools.map((t) => t.name)).toEqual(["echo"]);
      expect((await client.callTool({ name: "echo", arguments: { text: "hi" } })).content).toEqual([
        { type: "text", text: "hi" },
      ]);
      const denied = await client.callTool({ name: "add", arguments: { a: 1, b: 1 } }).then(
        () => undefined,
        (err: Error & { code?: number }) => err,
      );
      expect(denied?.code).toBe(-32003);
      expect(denied?.message).toContain("denied by policy 'viewers-no-add'");
      await client.close();
      const admin = await connect({ authorization: `Bearer ${api.token}` });
      expect((await admin.listTools()).tools.length).toBe(5);
      await admin.close();
    });

    it("answers the evaluate endpoint exactly as the data plane decides", async () => {
      const cases: Array<{ role: "viewer" | "admin"; token: () => string; tool: string }> = [
        { role: "viewer", token: () => viewerToken, tool: "echo" },
        { role: "viewer", token: () => viewerToken, tool: "add" },
        { role: "viewer", token: () => viewerToken, tool: "sleep" },
        { role: "admin", token: () => api.token, tool: "add" },
        { role: "admin", token: () => api.token, tool: "sleep" },
      ];
      for (const c of cases) {
        const decision = await api.call<{ allowed: boolean; rule: { name: string } | null }>(
          "POST",
          "/api/v1/policies/evaluate",
          {
            principal: { role: c.role },
            server_id: serverId,
            tool: c.tool,
          },
        );
        const client = await connect({ authorization: `Bearer ${c.token()}` });
        const args = c.tool === "echo" ? { text: "x" } : c.tool === "sleep" ? { ms: 1 } : { a: 1, b: 1 };
        const actual = await client.callTool({ name: c.tool, arguments: args }).then(
          () => true,
          (err: { code?: number }) => (err.code === -32003 ? false : Promise.reject(err)),
        );
        await client.close();
        expect({ ...c, token: undefined, allowed: actual }).toEqual({
          ...c,
          token: undefined,
          allowed: decision.body.allowed,
        });
      }
    });
  });

  it("leaves an audit row for every mutation, with no secret in any of them", async () => {
    const logs = await api.call<{ items: Array<{ action: string }>; next_cursor: string | null }>(
      "GET",
      "/api/v1/audit-logs?limit=200",
    );
    const actions = new Set(logs.body.items.map((l) => l.action));
    for (const action of [
      "namespace.create",
      "server.create",
      "api_key.create",
      "api_key.revoke",
      "identity_provider.create",
      "auth.logout",
      "user.create",
      "organization.update",
      "policy.create",
    ]) {
      expect(actions, action).toContain(action);
    }
    const text = JSON.stringify(logs.body);
    for (const secret of secrets) expect(text).not.toContain(secret);
    const filtered = await api.call<{ items: Array<{ action: string }> }>(
      "GET",
      "/api/v1/audit-logs?action=policy.create",
    );
    expect(filtered.body.items.map((l) => l.action)).toEqual([
      "policy.create",
      "policy.create",
      "policy.create",
    ]);
    const page = await api.call<{ items: unknown[]; next_cursor: string }>(
      "GET",
      "/api/v1/audit-logs?limit=2",
    );
    const next = await api.call<{ items: Array<{ id: string }> }>(
      "GET",
      `/api/v1/audit-logs?limit=2&cursor=${page.body.next_cursor}`,
    );
    expect(next.body.items).toHaveLength(2);
  });
});
