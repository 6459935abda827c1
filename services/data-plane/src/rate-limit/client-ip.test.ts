import type { IncomingMessage } from "node:http";
import { describe, expect, it } from "vitest";
import {
  clientIp,
  FORWARDED_PEER_HEADER,
  FORWARDED_PEER_PROOF_HEADER,
  forwardedPeerProof,
  trustedProxies,
} from "./client-ip.ts";

const req = (remoteAddress: string, headers: Record<string, string> = {}) =>
  ({ socket: { remoteAddress }, headers }) as unknown as IncomingMessage;

describe("clientIp", () => {
  it("ignores forwarding headers from untrusted peers", () => {
    expect(clientIp(req("198.51.100.7", { "x-forwarded-for": "1.2.3.4" }), undefined)).toBe("198.51.100.7");
    const trusted = trustedProxies("10.0.0.0/8");
    expect(clientIp(req("198.51.100.7", { "x-forwarded-for": "1.2.3.4" }), trusted)).toBe("198.51.100.7");
  });

  it("walks X-Forwarded-For from the nearest hop past trusted proxies", () => {
    const trusted = trustedProxies("10.0.0.0/8, 192.168.1.7");
    // The client spoofs a first entry; the ingress appends the address it saw.
    expect(
      clientIp(req("10.1.2.3", { "x-forwarded-for": "6.6.6.6, 203.0.113.9, 192.168.1.7" }), trusted),
    ).toBe("203.0.113.9");
    expect(clientIp(req("::ffff:10.1.2.3", { "x-forwarded-for": "203.0.113.9" }), trusted)).toBe(
      "203.0.113.9",
    );
  });

  it("reads RFC 7239 Forwarded, and falls back to the peer on garbage", () => {
    const trusted = trustedProxies("10.0.0.0/8");
    expect(clientIp(req("10.0.0.1", { forwarded: 'for="[2001:db8::1]:4711";proto=https' }), trusted)).toBe(
      "2001:db8::1",
    );
    expect(clientIp(req("10.0.0.1", { forwarded: "for=198.51.100.17" }), trusted)).toBe("198.51.100.17");
    expect(clientIp(req("10.0.0.1", { "x-forwarded-for": "not-an-ip" }), trusted)).toBe("10.0.0.1");
  });

  it("takes the original peer of a request replayed from another replica only with this process's proof", () => {
    const replayed = {
      [FORWARDED_PEER_HEADER]: "198.51.100.20",
      [FORWARDED_PEER_PROOF_HEADER]: forwardedPeerProof,
    };
    expect(clientIp(req("127.0.0.1", replayed), undefined)).toBe("198.51.100.20");
    // A client naming a peer without the proof (or with a guessed one) is its own peer.
    expect(clientIp(req("198.51.100.7", { [FORWARDED_PEER_HEADER]: "1.1.1.1" }), undefined)).toBe(
      "198.51.100.7",
    );
    expect(
      clientIp(
        req("198.51.100.7", { [FORWARDED_PEER_HEADER]: "1.1.1.1", [FORWARDED_PEER_PROOF_HEADER]: "x" }),
        undefined,
      ),
    ).toBe("198.51.100.7");
  });

  it("rejects a malformed trusted-proxy setting at boot", () => {
    expect(() => trustedProxies("10.0.0.0/8, nonsense")).toThrow(/MCPGW_TRUSTED_PROXIES/);
    expect(trustedProxies("")).toBeUndefined();
  });
});
