import { describe, expect, it } from "vitest";
import { assertSafeUpstreamUrl } from "./upstream-url.ts";

// IP literals only: no DNS lookup leaves the machine.
describe("assertSafeUpstreamUrl", () => {
  it("refuses special-purpose ranges in every form WHATWG URL reads", async () => {
    for (const url of [
      "http://[::127.0.0.1]/mcp",
      "http://[::ffff:127.0.0.1]/mcp",
      "http://[64:ff9b::a9fe:a9fe]/mcp",
      "http://[fec0::1]/mcp",
      "http://[2002:7f00:1::1]/mcp",
      "http://192.0.0.1/mcp",
      "http://198.18.0.1/mcp",
      "http://224.0.0.1/mcp",
      "http://255.255.255.255/mcp",
      "http://0x7f.1/mcp",
      "http://2130706433/mcp",
      "http://127.1/mcp",
    ]) {
      await expect(assertSafeUpstreamUrl(url, false), url).rejects.toThrow(/private or special-purpose/);
      await expect(assertSafeUpstreamUrl(url, true), url).resolves.toBeTypeOf("string");
    }
  });

  it("passes global unicast literals, documentation ranges included", async () => {
    for (const url of ["https://203.0.113.10/mcp", "https://[2001:db8::1]/jwks", "http://8.8.8.8/token"])
      await expect(assertSafeUpstreamUrl(url, false), url).resolves.toBe(new URL(url).toString());
  });
});
