import { describe, expect, it } from "vitest";
import { isPrivateAddress, publicOnlyLookup } from "./index.ts";

describe("egress policy", () => {
  it("tells private from public addresses, IPv4-mapped IPv6 included", () => {
    for (const a of [
      "127.0.0.1",
      "10.1.2.3",
      "169.254.169.254",
      "192.168.0.9",
      "::1",
      "fd00::1",
      "::ffff:127.0.0.1",
      "not-an-ip",
    ]) {
      expect(isPrivateAddress(a), a).toBe(true);
    }
    for (const a of ["203.0.113.10", "8.8.8.8", "2001:db8::1", "::ffff:203.0.113.10"])
      expect(isPrivateAddress(a), a).toBe(false);
  });

  it("refuses to connect to a name that resolves to a private address", async () => {
    const err = await new Promise<NodeJS.ErrnoException | null>((resolve) =>
      publicOnlyLookup("localhost", {}, (e) => resolve(e)),
    );
    expect(err?.code).toBe("EUPSTREAMPRIVATE");
  });
});
