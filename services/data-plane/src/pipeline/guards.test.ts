import { createHash, randomUUID } from "node:crypto";
import {
  type ApiKeyEntry,
  generateSnapshotKeys,
  importSnapshotKey,
  type OrgSnapshot,
  orgKey,
  signSnapshot,
} from "@mcpgw/snapshot";
import { Counter, createLogger, createMetricsRegistry, type Registry } from "@mcpgw/telemetry";
import { beforeAll, describe, expect, it } from "vitest";
import { Authenticator } from "../auth/authenticator.ts";
import type { Principal } from "../auth/principal.ts";
import { RateLimits } from "../rate-limit/rate-limits.ts";
import { SnapshotStore } from "../snapshot/store.ts";
import { GatewayError } from "./errors.ts";
import { denied, Guards, rateLimited } from "./guards.ts";

const logger = createLogger("guards-test", "silent");

type Policy = OrgSnapshot["policies"][number];
type RateRule = OrgSnapshot["rate_limits"][number];

let signingKey: CryptoKey;
let verifyKey: CryptoKey;

beforeAll(async () => {
  const { privateJwk, publicJwk } = await generateSnapshotKeys();
  signingKey = await importSnapshotKey(JSON.stringify(privateJwk));
  verifyKey = await importSnapshotKey(JSON.stringify(publicJwk));
});

const policy = (over: Partial<Policy> & Pick<Policy, "id" | "effect">): Policy => ({
  name: over.id,
  priority: 100,
  principals: ["*"],
  namespaces: ["*"],
  servers: ["*"],
  tools: ["*"],
  enabled: true,
  ...over,
});

const rateRule = (over: Partial<RateRule> & Pick<RateRule, "id" | "limit">): RateRule => ({
  name: over.id,
  scope: "api_key",
  match: {},
  window_s: 60,
  burst: null,
  block_s: null,
  costs: {},
  ...over,
});

/**
 * One tenant of its own per test: an org with namespaces `ns1` (slug `team`) and `ns2` (slug
 * `other`), server `srv1` ("git", in ns1) and one API key whose secret the test authenticates with.
 */
async function tenant(key: Partial<ApiKeyEntry> = {}) {
  const orgId = `org_${randomUUID()}`;
  const secret = `mcpgw_${randomUUID()}`;
  const apiKey: ApiKeyEntry = {
    id: `key_${randomUUID()}`,
    hash: createHash("sha256").update(secret).digest("hex"),
    kind: "user",
    user_id: "usr_1",
    role: "operator",
    namespace_id: null,
    permissions: [],
    expires_at: null,
    ...key,
  };
  let version = 0;
  const snapshot = (over: Partial<OrgSnapshot> = {}, org: Partial<OrgSnapshot["org"]> = {}): OrgSnapshot => ({
    kind: "org",
    org_id: orgId,
    version: ++version,
    issued_at: new Date().toISOString(),
    org: {
      slug: "acme",
      plan: "free",
      active: true,
      max_sessions: 10,
      policy_default: "allow",
      platform: false,
      ...org,
    },
    namespaces: [
      { id: "ns1", slug: "team", name: "Team", tool_naming: "prefix", tool_separator: "__" },
      { id: "ns2", slug: "other", name: "Other", tool_naming: "prefix", tool_separator: "__" },
    ],
    api_keys: [apiKey],
    policies: [],
    identity_providers: [],
    rate_limits: [],
    servers: [
      {
        id: "srv1",
        namespace_id: "ns1",
        name: "git",
        transport: "streamable_http",
        enabled: true,
        endpoints: [{ url: "http://127.0.0.1:1/mcp", weight: 1 }],
        stdio: null,
        timeout_ms: 1000,
        connect_timeout_ms: 1000,
        retries: 0,
        credentials_sealed: null,
      },
    ],
    ...over,
  });

  const store = new SnapshotStore(verifyKey, undefined, logger);
  const apply = async (snap: OrgSnapshot) =>
    expect(await store.apply(orgKey(orgId), await signSnapshot(snap, signingKey))).toBe("applied");
  await apply(snapshot());

  const metrics: Registry = createMetricsRegistry("guards-test");
  const policyDenials = new Counter({
    name: "mcpgw_dp_policy_denials_total",
    help: "Requests or tool calls denied by policy",
    labelNames: ["server"] as const,
    registers: [metrics],
  });
  const authenticator = new Authenticator(store);
  const rateLimits = new RateLimits({ redis: undefined, prefix: "test", replicas: 1, logger, metrics });
  const env = { store, authenticator, rateLimits, policyDenials, label: (id: string) => `label:${id}` };
  const principal: Principal = await authenticator.authenticate({ "x-api-key": secret }, undefined);
  const guards = (target: { server: string } | { namespace: string } = { server: "srv1" }) =>
    new Guards(env, principal, target, "203.0.113.7");
  const denials = async () => (await policyDenials.get()).values.reduce((sum, v) => sum + v.value, 0);
  const deniedFor = async (server: string) =>
    (await policyDenials.get()).values.find((v) => v.labels.server === server)?.value ?? 0;
  return { orgId, apiKey, snapshot, apply, store, principal, guards, denials, deniedFor };
}

describe("Guards.standing", () => {
  it("lets a caller use an enabled server of its org", async () => {
    const t = await tenant();
    const g = t.guards();
    expect(g.standing()).toBeUndefined();
    expect(g.server?.server.name).toBe("git");
    expect(g.server?.namespace.slug).toBe("team");
    expect(g.allowsEverything).toBe(true);
    expect(await t.denials()).toBe(0);
  });

  it("refuses a disabled server as forbidden", async () => {
    const t = await tenant();
    const g = t.guards();
    const [server] = t.snapshot().servers;
    await t.apply(t.snapshot({ servers: [{ ...server!, enabled: false }] }));
    const err = g.standing();
    expect(err).toBeInstanceOf(GatewayError);
    expect(err?.kind).toBe("forbidden");
    expect(err?.status).toBe(403);
    expect(err?.message).toBe("server 'git' is disabled");
  });

  it("refuses a deleted server as not found, and has nothing to authorize or admit", async () => {
    const t = await tenant();
    const g = t.guards();
    expect(g.standing()).toBeUndefined();
    await t.apply(t.snapshot({ servers: [] }));
    expect(g.standing()).toMatchObject({ kind: "not_found", message: "unknown server srv1" });
    expect(g.server).toBeUndefined();
    expect(g.authorize("read")).toEqual({ allowed: false, reason: "server not found", rule: null });
    expect(g.keep("read")).toBe(false);
    expect(await g.admit({ method: "tools/call", tool: "read" })).toBeUndefined();
  });

  it("refuses an unknown server, and another org's server, as not found", async () => {
    const t = await tenant();
    expect(t.guards({ server: "srv_nope" }).standing()).toMatchObject({
      kind: "not_found",
      message: "unknown server srv_nope",
    });
    // Another tenant's org, held by the same data plane.
    const [server] = t.snapshot().servers;
    const foreign = { ...t.snapshot(), org_id: `org_${randomUUID()}`, api_keys: [] };
    foreign.servers = [{ ...server!, id: "srv_foreign" }];
    expect(await t.store.apply(orgKey(foreign.org_id), await signSnapshot(foreign, signingKey))).toBe(
      "applied",
    );
    expect(t.store.current.servers.get("srv_foreign")?.org.org_id).toBe(foreign.org_id);
    expect(t.guards({ server: "srv_foreign" }).standing()).toMatchObject({
      kind: "not_found",
      message: "unknown server srv_foreign",
    });
    expect(t.guards().standing()).toBeUndefined();
  });

  it("refuses a server of an inactive org", async () => {
    const t = await tenant();
    const g = t.guards();
    await t.apply(t.snapshot({}, { active: false }));
    expect(g.standing()).toMatchObject({ kind: "forbidden", message: "server 'git' is disabled" });
  });

  it("refuses a key scoped to another namespace, and admits one scoped to the server's", async () => {
    const scopedElsewhere = await tenant({ namespace_id: "ns2" });
    expect(scopedElsewhere.principal.namespace_id).toBe("ns2");
    expect(scopedElsewhere.guards().standing()).toMatchObject({
      kind: "forbidden",
      message: "this credential is scoped to another namespace",
    });
    const scopedHere = await tenant({ namespace_id: "ns1" });
    expect(scopedHere.guards().standing()).toBeUndefined();
  });

  it("refuses a server shut by a server-level deny policy, naming the rule, and counts the denial", async () => {
    const t = await tenant();
    const g = t.guards();
    await t.apply(
      t.snapshot({
        policies: [policy({ id: "pol_block", name: "block-git", effect: "deny", servers: ["git"] })],
      }),
    );
    const err = g.standing();
    expect(err).toMatchObject({ kind: "forbidden", message: "server 'git' denied by policy 'block-git'" });
    expect(err?.options.data).toEqual({ policy: { id: "pol_block", name: "block-git", effect: "deny" } });
    expect(err?.toJsonRpc(1).error.data).toEqual({
      policy: { id: "pol_block", name: "block-git", effect: "deny" },
    });
    expect(await t.deniedFor("label:srv1")).toBe(1);
  });

  it("does not shut a server for a deny of some of its tools only", async () => {
    const t = await tenant();
    await t.apply(t.snapshot({ policies: [policy({ id: "pol_rm", effect: "deny", tools: ["delete_*"] })] }));
    const g = t.guards();
    expect(g.standing()).toBeUndefined();
    expect(g.allowsEverything).toBe(false);
  });

  it("refuses a server the org's default denies when no policy opens it", async () => {
    const t = await tenant();
    await t.apply(t.snapshot({}, { policy_default: "deny" }));
    expect(t.guards().standing()).toMatchObject({
      kind: "forbidden",
      message: "server 'git' denied by the organization's default (no policy matched)",
    });
  });

  it("refuses an API key removed from the snapshot as revoked", async () => {
    const t = await tenant();
    const g = t.guards();
    expect(g.standing()).toBeUndefined();
    await t.apply(t.snapshot({ api_keys: [] }));
    const err = g.standing();
    expect(err).toMatchObject({ kind: "unauthorized", message: "Unauthorized: the API key was revoked" });
    expect(err?.status).toBe(401);
  });

  it("refuses an API key whose role changed", async () => {
    const t = await tenant();
    const g = t.guards();
    await t.apply(t.snapshot({ api_keys: [{ ...t.apiKey, role: "viewer" }] }));
    expect(g.standing()).toMatchObject({
      kind: "unauthorized",
      message: "Unauthorized: the API key's permissions changed; connect again",
    });
  });

  it("refuses an API key whose namespace scope changed", async () => {
    const t = await tenant();
    const g = t.guards();
    await t.apply(t.snapshot({ api_keys: [{ ...t.apiKey, namespace_id: "ns1" }] }));
    expect(g.standing()).toMatchObject({
      kind: "unauthorized",
      message: "Unauthorized: the API key's permissions changed; connect again",
    });
  });

  it("refuses an API key once it is past its expiry, checked at every call", async () => {
    const t = await tenant({ expires_at: new Date(Date.now() + 3_600_000).toISOString() });
    const g = t.guards();
    expect(g.standing()).toBeUndefined();
    await t.apply(
      t.snapshot({ api_keys: [{ ...t.apiKey, expires_at: new Date(Date.now() - 1000).toISOString() }] }),
    );
    const first = g.standing();
    expect(first).toMatchObject({ kind: "unauthorized", message: "Unauthorized: API key expired" });
    // Time-bound, so not memoized: a new error each time.
    expect(g.standing()).not.toBe(first);
  });

  it("memoizes its verdict per snapshot and re-evaluates once a new one is applied", async () => {
    const t = await tenant();
    const g = t.guards();
    await t.apply(t.snapshot({ policies: [policy({ id: "pol_block", effect: "deny" })] }));
    const first = g.standing();
    expect(first).toMatchObject({ kind: "forbidden" });
    expect(g.standing()).toBe(first);
    expect(g.standing()).toBe(first);
    // Evaluated once for this snapshot: the denial is counted once, not per check.
    expect(await t.denials()).toBe(1);

    // A newer snapshot with the same rule: evaluated again (a new error, counted again).
    await t.apply(t.snapshot({ policies: [policy({ id: "pol_block", effect: "deny" })] }));
    const second = g.standing();
    expect(second).toMatchObject({ kind: "forbidden" });
    expect(second).not.toBe(first);
    expect(g.standing()).toBe(second);
    expect(await t.denials()).toBe(2);

    // The rule removed: the caller stands again, without a new guard.
    await t.apply(t.snapshot());
    expect(g.standing()).toBeUndefined();
    expect(g.allowsEverything).toBe(true);
  });

  it("judges a long-lived guard against the snapshot held now, not the one it was made under", async () => {
    const t = await tenant();
    const g = t.guards();
    const [server] = t.snapshot().servers;
    expect(g.standing()).toBeUndefined();
    await t.apply(t.snapshot({ servers: [{ ...server!, name: "git-renamed", enabled: false }] }));
    expect(g.standing()?.message).toBe("server 'git-renamed' is disabled");
    expect(g.server?.server.name).toBe("git-renamed");
  });
});

describe("Guards.authorize and keep", () => {
  it("denies a tool by policy, counting the denial, and keeps it out of lists without counting", async () => {
    const t = await tenant();
    await t.apply(
      t.snapshot({
        policies: [
          policy({ id: "pol_rm", name: "no-delete", effect: "deny", servers: ["git"], tools: ["delete_*"] }),
        ],
      }),
    );
    const g = t.guards();
    expect(g.standing()).toBeUndefined();
    expect(g.allowsEverything).toBe(false);

    const refused = g.authorize("delete_repo");
    expect(refused).toEqual({
      allowed: false,
      reason: "tool 'delete_repo' on server 'git' denied by policy 'no-delete'",
      rule: { id: "pol_rm", name: "no-delete", effect: "deny" },
    });
    expect(await t.deniedFor("label:srv1")).toBe(1);
    expect(g.authorize("read_file").allowed).toBe(true);
    expect(await t.denials()).toBe(1);

    expect(g.keep("delete_repo")).toBe(false);
    expect(g.keep("delete_branch")).toBe(false);
    expect(g.keep("read_file")).toBe(true);
    expect(await t.denials()).toBe(1);
  });

  it("applies policy to prompt: and resource: targets", async () => {
    const t = await tenant();
    await t.apply(
      t.snapshot({
        policies: [
          policy({ id: "pol_p", effect: "deny", tools: ["prompt:secret*"] }),
          policy({ id: "pol_r", effect: "deny", tools: ["resource:file:///etc/*"] }),
        ],
      }),
    );
    const g = t.guards();
    expect(g.authorize("prompt:secret-plan")).toMatchObject({ allowed: false, rule: { id: "pol_p" } });
    expect(g.authorize("prompt:public").allowed).toBe(true);
    expect(g.authorize("resource:file:///etc/passwd")).toMatchObject({
      allowed: false,
      rule: { id: "pol_r" },
    });
    expect(g.keep("resource:file:///etc/shadow")).toBe(false);
    expect(g.keep("resource:file:///home/me/notes.md")).toBe(true);
    expect(g.keep("prompt:secret")).toBe(false);
    // A tool named like the prompt is another target.
    expect(g.keep("secret-plan")).toBe(true);
    expect(await t.denials()).toBe(2);
  });

  it("applies rules to the principals they name only", async () => {
    const t = await tenant();
    await t.apply(
      t.snapshot({
        policies: [policy({ id: "pol_v", effect: "deny", principals: ["role:viewer"], tools: ["write_*"] })],
      }),
    );
    const g = t.guards();
    expect(g.allowsEverything).toBe(true);
    expect(g.authorize("write_file").allowed).toBe(true);
    expect(g.keep("write_file")).toBe(true);

    await t.apply(
      t.snapshot({
        policies: [
          policy({ id: "pol_k", effect: "deny", principals: [`key:${t.apiKey.id}`], tools: ["write_*"] }),
        ],
      }),
    );
    expect(g.allowsEverything).toBe(false);
    expect(g.authorize("write_file")).toMatchObject({ allowed: false, rule: { id: "pol_k" } });
  });

  it("knows when policy allows every tool, under an allowing or a denying default", async () => {
    const open = await tenant();
    expect(open.guards().allowsEverything).toBe(true);

    const allowAll = await tenant();
    await allowAll.apply(
      allowAll.snapshot(
        { policies: [policy({ id: "pol_all", effect: "allow" })] },
        { policy_default: "deny" },
      ),
    );
    const a = allowAll.guards();
    expect(a.standing()).toBeUndefined();
    expect(a.allowsEverything).toBe(true);
    expect(a.keep("anything")).toBe(true);

    const allowSome = await tenant();
    await allowSome.apply(
      allowSome.snapshot(
        { policies: [policy({ id: "pol_read", effect: "allow", tools: ["read_*"] })] },
        { policy_default: "deny" },
      ),
    );
    const s = allowSome.guards();
    // An allow of some tools opens the server; the others stay closed by the default.
    expect(s.standing()).toBeUndefined();
    expect(s.allowsEverything).toBe(false);
    expect(s.keep("read_file")).toBe(true);
    expect(s.keep("write_file")).toBe(false);
    expect(s.authorize("write_file")).toMatchObject({ allowed: false, rule: null });
  });

  it("builds the JSON-RPC error of a denial", async () => {
    const t = await tenant();
    await t.apply(
      t.snapshot({ policies: [policy({ id: "pol_rm", name: "no-delete", effect: "deny", tools: ["rm"] })] }),
    );
    const err = denied(t.guards().authorize("rm"));
    expect(err).toBeInstanceOf(GatewayError);
    expect(err.kind).toBe("forbidden");
    expect(err.message).toBe("tool 'rm' on server 'git' denied by policy 'no-delete'");
    expect(err.toJsonRpc(5)).toEqual({
      jsonrpc: "2.0",
      id: 5,
      error: {
        code: -32003,
        message: "tool 'rm' on server 'git' denied by policy 'no-delete'",
        data: { policy: { id: "pol_rm", name: "no-delete", effect: "deny" } },
      },
    });
  });
});

describe("Guards.admit", () => {
  it("admits everything when the org has no rate-limit rules", async () => {
    const t = await tenant();
    expect(await t.guards().admit({ method: "tools/call", tool: "read" })).toBeUndefined();
  });

  it("refuses after the limit of a rule with limit 2", async () => {
    const t = await tenant();
    await t.apply(t.snapshot({ rate_limits: [rateRule({ id: "rl_2", name: "two a minute", limit: 2 })] }));
    const g = t.guards();
    const first = await g.admit({ method: "tools/call", tool: "read" });
    expect(first).toMatchObject({
      allowed: true,
      retryAfterS: 0,
      rule: { id: "rl_2", name: "two a minute" },
    });
    expect(first?.headers["ratelimit-policy"]).toBe('"rl_2";q=2;w=60');
    expect(first?.headers.ratelimit).toMatch(/^"rl_2";r=1;t=\d+$/);
    expect((await g.admit({ method: "tools/call", tool: "read" }))?.allowed).toBe(true);
    const third = await g.admit({ method: "tools/call", tool: "read" });
    expect(third?.allowed).toBe(false);
    expect(third?.retryAfterS).toBeGreaterThanOrEqual(1);
    expect(third?.retryAfterS).toBeLessThanOrEqual(60);
    expect(third?.headers.ratelimit).toMatch(/^"rl_2";r=0;t=\d+$/);

    const err = rateLimited(third!);
    expect(err.kind).toBe("rate_limited");
    expect(err.status).toBe(429);
    expect(err.message).toBe(`rate limit exceeded (two a minute); retry in ${third!.retryAfterS}s`);
    expect(err.headers()).toEqual({ ...third!.headers, "retry-after": String(third!.retryAfterS) });
    expect(err.toJsonRpc(1).error).toEqual({
      code: -32029,
      message: err.message,
      data: { retry_after: third!.retryAfterS, rule: { id: "rl_2", name: "two a minute" } },
    });
  });

  it("refuses the first message under a rule with limit 0", async () => {
    const t = await tenant();
    await t.apply(
      t.snapshot({ rate_limits: [rateRule({ id: "rl_0", name: "stop", limit: 0, scope: "org" })] }),
    );
    const verdict = await t.guards().admit({ method: "initialize" });
    expect(verdict).toMatchObject({ allowed: false, rule: { id: "rl_0", name: "stop" } });
    expect(verdict?.retryAfterS).toBeGreaterThanOrEqual(1);
  });

  it("applies a rule only to the messages it matches", async () => {
    const t = await tenant();
    await t.apply(
      t.snapshot({
        rate_limits: [rateRule({ id: "rl_search", limit: 0, scope: "tool", match: { tool: "search*" } })],
      }),
    );
    const g = t.guards();
    expect(await g.admit({ method: "tools/call", tool: "read" })).toBeUndefined();
    expect(await g.admit({ method: "tools/list" })).toBeUndefined();
    expect((await g.admit({ method: "tools/call", tool: "search_code" }))?.allowed).toBe(false);
  });

  it("builds a rate-limit error without a rule name", () => {
    const err = rateLimited({ allowed: false, retryAfterS: 2, headers: {}, rule: undefined });
    expect(err.message).toBe("rate limit exceeded (limit); retry in 2s");
    expect(err.headers()).toEqual({ "retry-after": "2" });
    expect(err.options.data).toEqual({ retry_after: 2, rule: undefined });
  });
});

describe("Guards for a namespace", () => {
  it("lets the caller use its namespace and admits every tool (members decide per server)", async () => {
    const t = await tenant();
    await t.apply(t.snapshot({ policies: [policy({ id: "pol_all", effect: "deny" })] }));
    const g = t.guards({ namespace: "ns1" });
    expect(g.standing()).toBeUndefined();
    expect(g.server).toBeUndefined();
    expect(g.namespaceEntry?.entry.slug).toBe("team");
    expect(g.namespaceEntry?.org.org_id).toBe(t.orgId);
    expect(g.authorize("delete_repo")).toEqual({ allowed: true, reason: "namespace", rule: null });
    expect(g.keep("delete_repo")).toBe(true);
    expect(await t.denials()).toBe(0);
  });

  it("fails standing once the namespace is removed", async () => {
    const t = await tenant();
    const g = t.guards({ namespace: "ns2" });
    expect(g.standing()).toBeUndefined();
    const [ns1] = t.snapshot().namespaces;
    await t.apply(t.snapshot({ namespaces: [ns1!] }));
    expect(g.standing()).toMatchObject({ kind: "not_found", message: "unknown namespace" });
    expect(g.namespaceEntry).toBeUndefined();
  });

  it("refuses a key scoped to another namespace, an inactive org, and a revoked key", async () => {
    const scoped = await tenant({ namespace_id: "ns2" });
    expect(scoped.guards({ namespace: "ns1" }).standing()).toMatchObject({
      kind: "forbidden",
      message: "this credential is scoped to another namespace",
    });
    expect(scoped.guards({ namespace: "ns2" }).standing()).toBeUndefined();

    const t = await tenant();
    const g = t.guards({ namespace: "ns1" });
    await t.apply(t.snapshot({}, { active: false }));
    expect(g.standing()).toMatchObject({ kind: "forbidden", message: "organization is disabled" });
    await t.apply(t.snapshot({ api_keys: [] }, { active: false }));
    expect(g.standing()).toMatchObject({
      kind: "unauthorized",
      message: "Unauthorized: the API key was revoked",
    });
  });
});
