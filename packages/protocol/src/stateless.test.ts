import { describe, expect, it } from "vitest";
import { decodeHeaderValue, encodeHeaderValue } from "./stateless.ts";

describe("routing header values", () => {
  it("keeps printable ASCII and base64-encodes anything else, both ways", () => {
    expect(encodeHeaderValue("get-sum")).toBe("get-sum");
    for (const v of ["héllo", " padded ", "line\nbreak", "工具"]) {
      expect(encodeHeaderValue(v)).toMatch(/^=\?base64\?.*\?=$/);
      expect(decodeHeaderValue(encodeHeaderValue(v))).toBe(v);
    }
    expect(decodeHeaderValue("plain")).toBe("plain");
  });
});
