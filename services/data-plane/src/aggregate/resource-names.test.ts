import { describe, expect, it } from "vitest";
import { MAX_MATCHED_URI, templateMatcher } from "./resource-names.ts";

describe("templateMatcher", () => {
  it("matches URIs expanded from a template by its literal parts, in order", () => {
    const m = templateMatcher("test://template/{id}/data");
    expect(m.test("test://template/123/data")).toBe(true);
    expect(m.test("test://template/123/other")).toBe(false);
    expect(m.test("other://template/123/data")).toBe(false);
    expect(m.prefixLength).toBe("test://template/".length);
    expect(templateMatcher("demo://static").test("demo://static")).toBe(true);
    expect(templateMatcher("demo://static").test("demo://static/x")).toBe(false);
    expect(templateMatcher("file:///{+path}").test("file:///a/b/c.txt")).toBe(true);
    expect(templateMatcher("db://{a}-{b}-{c}").test("db://x-y-z")).toBe(true);
    expect(templateMatcher("db://{a}-{b}-{c}").test("db://x-y")).toBe(false);
  });

  it("stays linear on URIs built to make a backtracking matcher explode", () => {
    const hostile = `db://${";".repeat(4000)}/`;
    const dashes = `db://${"-".repeat(MAX_MATCHED_URI - 10)}`;
    const started = performance.now();
    for (let i = 0; i < 100; i++) {
      templateMatcher("db://{;t}").test(hostile);
      templateMatcher("db://{a}-{b}-{c}-{d}x").test(dashes);
    }
    // Generous for a loaded machine: a backtracking matcher takes minutes here, not milliseconds.
    expect(performance.now() - started).toBeLessThan(2000);
    expect(templateMatcher("db://{a}").test(`db://${"a".repeat(MAX_MATCHED_URI)}`)).toBe(false);
  });
});
