import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  eventually,
  login,
  type Stack,
  startEverythingServer,
  startOidcIssuer,
  startStack,
} from "../../../packages/testing/src/index.ts";

// Orgs share data planes and may trust the same identity provider (a company IdP, Google):
// which org a token lands in must never depend on what another org configures.
describe("an issuer trusted by two orgs with the same namespace slug", () => {
  let stack: Stack;
  let a: Api;
  let b: Api;
  let idp: Awaited<ReturnType<typeof startOidcIssuer>>;
  let everything: Awaited<ReturnType<typeof startEverythingServer>>;
  const AUDIENCE = "https://gateway.example.test";

  const listTools = async (token: string) => {
    const res = await fetch(`${stack.dataPlanes[0]!.url}/ns/shared/rpc`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" }),
    });
    const body = (await res.json()) as { result?: { tools: Array<{ name: string }> }; error?: unknown };
    return { status: res.status, body };
  };

  beforeAll(async () => {
    [stack, idp, everything] = await Promise.all([
      startStack({ replicas: 1 }),
      startOidcIssuer(),
      startEverythingServer(),
    ]);
    const platform = await stack.api();
    for (const slug of ["idp-a", "idp-b"])
      await platform.call("POST", "/api/v1/organizations", {
        name: slug,
        slug,
        admin: { email: `${slug}@example.test`, password: "tenant admin password" },
      });
    a = await login(stack.cpUrl, "idp-a@example.test", "tenant admin password");
    b = await login(stack.cpUrl, "idp-b@example.test", "tenant admin password");
    const nsA = await a.call<{ id: string }>("POST", "/api/v1/namespaces", {
      name: "Shared",
      slug: "shared",
    });
    await a.call("POST", "/api/v1/servers", {
      namespace_id: nsA.body.id,
      name: "everything",
      transport: "streamable_http",
      url: everything.url,
    });
    const provider = { name: "Company IdP", issuer: idp.issuer, jwks_url: idp.jwksUrl, audience: AUDIENCE };
    expect((await a.call("POST", "/api/v1/identity-providers", provider)).status).toBe(201);
    const token = await idp.token("alice", AUDIENCE);
    await eventually(async () => (await listTools(token)).status === 200, 20_000).catch((err) => {
      throw new Error(`org A's IdP user could not list the namespace's tools: ${err}`);
    });
  }, 90_000);

  afterAll(async () => {
    await stack?.stop();
    await idp?.close();
    await everything?.proc.stop();
  });

  it("keeps org A's users in org A when org B takes the same slug and issuer, and refuses B A's audience", async () => {
    expect((await b.call("POST", "/api/v1/namespaces", { name: "Shared", slug: "shared" })).status).toBe(201);
    // The same issuer for the same audience would make A's and B's tokens indistinguishable.
    const copy = { name: "Same IdP", issuer: idp.issuer, jwks_url: idp.jwksUrl, audience: AUDIENCE };
    const refused = await b.call<{ detail: string }>("POST", "/api/v1/identity-providers", copy);
    expect(refused.status).toBe(409);
    expect(refused.body.detail).toContain("audience of your own");
    // The same issuer for an audience of B's own is fine, and changes nothing for A's users.
    const own = { ...copy, audience: "https://b.example.test" };
    expect((await b.call("POST", "/api/v1/identity-providers", own)).status).toBe(201);
    await new Promise((r) => setTimeout(r, 1500));
    const res = await listTools(await idp.token("alice", AUDIENCE));
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.result?.tools.some((t) => t.name.endsWith("echo"))).toBe(true);
  });

  it("lets each org's own audience pick its org when both trust the issuer", async () => {
    const forB = await idp.token("bob", "https://b.example.test");
    await eventually(async () => {
      const r = await listTools(forB);
      // B's namespace has no servers: an empty list from B, not a refusal.
      return r.status === 200 && r.body.result?.tools.length === 0;
    }, 10_000).catch((err) => {
      throw new Error(`org B's own audience did not resolve to org B: ${err}`);
    });
    const forA = await listTools(await idp.token("alice", AUDIENCE));
    expect(forA.body.result?.tools.length).toBeGreaterThan(0);
  });
});
