import { evaluatePolicy, type PolicyRule } from "@mcpgw/policy";
import { describe, expect, it } from "vitest";
import { filterListResult, isFilteredList, policyTarget } from "./policy-targets.ts";

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

describe("policy targets", () => {
  it("names tools, prompts and resources for policy rules", () => {
    expect(policyTarget("tools/call", { name: "search" })).toBe("search");
    expect(policyTarget("prompts/get", { name: "summarize" })).toBe("prompt:summarize");
    expect(policyTarget("resources/read", { uri: "file:///a" })).toBe("resource:file:///a");
    expect(policyTarget("ping", {})).toBeUndefined();
  });

  it("filters every list the caller may see only part of, with one rule language", () => {
    const rules = [
      rule({
        name: "viewer",
        effect: "allow",
        principals: ["role:viewer"],
        tools: ["search", "prompt:sum*", "resource:file:///public/*"],
      }),
    ];
    const keep = (target: string) =>
      evaluatePolicy(rules, "deny", {
        principal: { role: "viewer" },
        namespace: { id: "n", slug: "n" },
        server: { id: "s", name: "s" },
        tool: target,
      }).allowed;
    expect(filterListResult("tools/list", { tools: [{ name: "search" }, { name: "delete" }] }, keep)).toEqual(
      { tools: [{ name: "search" }] },
    );
    expect(
      filterListResult(
        "prompts/list",
        { prompts: [{ name: "summarize" }, { name: "secret" }], nextCursor: "c" },
        keep,
      ),
    ).toEqual({
      prompts: [{ name: "summarize" }],
      nextCursor: "c",
    });
    expect(
      filterListResult(
        "resources/list",
        { resources: [{ uri: "file:///public/a" }, { uri: "file:///private/b" }] },
        keep,
      ),
    ).toEqual({
      resources: [{ uri: "file:///public/a" }],
    });
    expect(
      filterListResult(
        "resources/templates/list",
        { resourceTemplates: [{ uriTemplate: "file:///private/{x}" }] },
        keep,
      ),
    ).toEqual({
      resourceTemplates: [],
    });
    expect(filterListResult("tools/call", { content: [] }, keep)).toEqual({ content: [] });
    expect(isFilteredList("prompts/list")).toBe(true);
    expect(isFilteredList("tools/call")).toBe(false);
  });
});
