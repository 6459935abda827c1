import { describe, expect, it } from "vitest";
import { decodeSessionId, encodeSessionId } from "./session-id.ts";

const key = Buffer.from("0123456789abcdef0123456789abcdef");
const route = { endpoint: 1, upstreamSessionId: "abc.def-123" };

describe("gateway session ids", () => {
  it("round-trips routes, with or without a binding", () => {
    expect(decodeSessionId(encodeSessionId(route))).toEqual(route);
    const bound = { key, principalId: "user-1", serverId: "srv-1" };
    const id = encodeSessionId(route, bound);
    expect(id).toMatch(/^g2\.1\.[A-Za-z0-9_-]{22}\.abc\.def-123$/);
    expect(decodeSessionId(id, bound)).toEqual(route);
  });

  it("refuses a bound id presented by another principal, for another server, or tampered", () => {
    const bound = { key, principalId: "user-1", serverId: "srv-1" };
    const id = encodeSessionId(route, bound);
    expect(decodeSessionId(id, { ...bound, principalId: "user-2" })).toBeUndefined();
    expect(decodeSessionId(id, { ...bound, serverId: "srv-2" })).toBeUndefined();
    expect(decodeSessionId(id.replace("g2.1.", "g2.0."), bound)).toBeUndefined();
    expect(decodeSessionId(encodeSessionId(route), bound)).toBeUndefined();
    expect(decodeSessionId("g1.0.x\u0000", undefined)).toBeUndefined();
  });
});
