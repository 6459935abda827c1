import { describe, expect, it } from "vitest";
import {
  allowsEveryTool,
  evaluatePolicy,
  globToRegExp,
  type PolicyRequest,
  type PolicyRule,
} from "./evaluate.ts";

const rule = (r: Partial<PolicyRule> & Pick<PolicyRule, "name" | "effect">): PolicyRule => ({
  id: r.name,
  priority: 100,
  principals: ["*"],
  namespaces: ["*"],
  servers: ["*"],
  tools: ["*"],
  enabled: true,
  ...r,
});

const req = (
  tool: string | undefined,
  role = "viewer",
  extra: Partial<PolicyRequest["principal"]> = {},
): PolicyRequest => ({
  principal: { role, user_id: "u1", ...extra },
  namespace: { id: "ns1", slug: "team" },
  server: { id: "s1", name: "github" },
  tool,
});

describe("evaluatePolicy", () => {
  it("falls back to the org default when nothing matches", () => {
    expect(evaluatePolicy([], "allow", req("x"))).toMatchObject({ allowed: true, rule: null });
    expect(evaluatePolicy([], "deny", req("x"))).toMatchObject({ allowed: false, rule: null });
  });

  it("lets a matching deny win over any allow, whatever the priorities", () => {
    const rules = [
      rule({ name: "allow-all", effect: "allow", priority: 1 }),
      rule({ name: "no-delete", effect: "deny", tools: ["delete_*"], priority: 500 }),
    ];
    expect(evaluatePolicy(rules, "deny", req("delete_repo"))).toMatchObject({
      allowed: false,
      rule: { name: "no-delete" },
    });
    expect(evaluatePolicy(rules, "deny", req("list_repos"))).toMatchObject({
      allowed: true,
      rule: { name: "allow-all" },
    });
  });

  it("matches principals by role, user, key, a2a client and identity provider", () => {
    const rules = [
      rule({ name: "viewers", effect: "allow", principals: ["role:viewer"], tools: ["read_*"] }),
      rule({ name: "key", effect: "allow", principals: ["key:k1"], tools: ["write"] }),
      rule({ name: "bot", effect: "deny", principals: ["a2a:bot*"] }),
      rule({ name: "idp", effect: "allow", principals: ["idp:okta"], tools: ["sso_tool"] }),
    ];
    expect(evaluatePolicy(rules, "deny", req("read_file")).allowed).toBe(true);
    expect(evaluatePolicy(rules, "deny", req("write")).allowed).toBe(false);
    expect(evaluatePolicy(rules, "deny", req("write", "user", { key_id: "k1" })).allowed).toBe(true);
    expect(evaluatePolicy(rules, "deny", req("read_file", "viewer", { a2a_key_id: "bot-7" })).allowed).toBe(
      false,
    );
    expect(evaluatePolicy(rules, "deny", req("sso_tool", "operator", { idp_id: "okta" })).allowed).toBe(true);
  });

  it("scopes rules to namespaces and servers by slug, name or id", () => {
    const rules = [
      rule({ name: "other-ns", effect: "deny", namespaces: ["other"] }),
      rule({ name: "gh", effect: "deny", servers: ["s1"], tools: ["admin_*"] }),
    ];
    expect(evaluatePolicy(rules, "allow", req("x")).allowed).toBe(true);
    expect(evaluatePolicy(rules, "allow", req("admin_x")).allowed).toBe(false);
  });

  it("treats server-level access as open when any tool is allowed and closed only by a deny of every tool", () => {
    const rules = [
      rule({ name: "some", effect: "allow", tools: ["echo"] }),
      rule({ name: "deny-one", effect: "deny", tools: ["rm"] }),
    ];
    expect(evaluatePolicy(rules, "deny", req(undefined)).allowed).toBe(true);
    expect(evaluatePolicy([rule({ name: "all", effect: "deny" })], "allow", req(undefined)).allowed).toBe(
      false,
    );
  });

  it("ignores disabled rules and treats glob metacharacters of other kinds literally", () => {
    expect(
      evaluatePolicy([rule({ name: "off", effect: "deny", enabled: false })], "allow", req("x")).allowed,
    ).toBe(true);
    expect(globToRegExp("a.b(c)").test("a.b(c)")).toBe(true);
    expect(globToRegExp("a.b").test("axb")).toBe(false);
    expect(globToRegExp("file_?").test("file_1")).toBe(true);
  });

  it("tells when a tool list needs no filtering", () => {
    expect(allowsEveryTool([], "allow", req(undefined))).toBe(true);
    expect(allowsEveryTool([], "deny", req(undefined))).toBe(false);
    expect(allowsEveryTool([rule({ name: "a", effect: "allow" })], "deny", req(undefined))).toBe(true);
    expect(
      allowsEveryTool([rule({ name: "d", effect: "deny", tools: ["x"] })], "allow", req(undefined)),
    ).toBe(false);
    expect(
      allowsEveryTool(
        [rule({ name: "d", effect: "deny", principals: ["role:admin"] })],
        "allow",
        req(undefined),
      ),
    ).toBe(true);
  });
});
