import { describe, expect, it } from "vitest";
import { isPrivateAddress, isPublicAddress } from "./addresses.ts";

describe("isPublicAddress", () => {
  it("refuses every special-purpose IPv4 range", () => {
    for (const [range, address] of [
      ["this network 0.0.0.0/8", "0.1.2.3"],
      ["private 10.0.0.0/8", "10.1.2.3"],
      ["CGNAT 100.64.0.0/10", "100.64.0.1"],
      ["loopback 127.0.0.0/8", "127.0.0.1"],
      ["link-local 169.254.0.0/16 (cloud metadata)", "169.254.169.254"],
      ["private 172.16.0.0/12", "172.16.5.4"],
      ["IETF protocol assignments 192.0.0.0/24", "192.0.0.170"],
      ["6to4 relay anycast 192.88.99.0/24", "192.88.99.1"],
      ["private 192.168.0.0/16", "192.168.0.9"],
      ["benchmarking 198.18.0.0/15", "198.19.255.1"],
      ["multicast 224.0.0.0/4", "239.255.255.250"],
      ["reserved 240.0.0.0/4", "240.0.0.1"],
      ["broadcast", "255.255.255.255"],
    ]) {
      expect(isPublicAddress(address as string), range).toBe(false);
    }
  });

  it("refuses special-purpose IPv6 ranges and forms that embed an internal IPv4 address", () => {
    for (const [range, address] of [
      ["unspecified", "::"],
      ["loopback", "::1"],
      ["IPv4-compatible ::/96", "::127.0.0.1"],
      ["IPv4-compatible, bracketed", "[::127.0.0.1]"],
      ["IPv4-compatible, as WHATWG URL writes it", "::7f00:1"],
      ["IPv4-mapped loopback", "::ffff:127.0.0.1"],
      ["IPv4-mapped, bracketed", "[::ffff:127.0.0.1]"],
      ["IPv4-mapped metadata, hex", "::ffff:a9fe:a9fe"],
      ["IPv4-translated ::ffff:0:0:0/96", "::ffff:0:7f00:1"],
      ["NAT64 64:ff9b::/96", "64:ff9b::7f00:1"],
      ["NAT64 of a public address", "64:ff9b::8.8.8.8"],
      ["local-use NAT64 64:ff9b:1::/48", "64:ff9b:1::a00:1"],
      ["discard 100::/64", "100::1"],
      ["6to4 2002::/16", "2002:7f00:1::1"],
      ["Teredo 2001::/32", "2001:0:4136:e378:8000:63bf:3fff:fdd2"],
      ["benchmarking 2001:2::/48", "2001:2::1"],
      ["ORCHIDv2 2001:20::/28", "2001:20::1"],
      ["segment routing 5f00::/16", "5f00::1"],
      ["unique-local fc00::/7", "fd00::1"],
      ["link-local fe80::/10", "fe80::1"],
      ["link-local with a zone id", "fe80::1%eth0"],
      ["site-local fec0::/10", "fec0::1"],
      ["multicast ff00::/8", "ff02::1"],
    ]) {
      expect(isPublicAddress(address as string), range).toBe(false);
    }
  });

  it("reads the odd IPv4 forms connections accept as the address they name", () => {
    for (const address of ["0x7f.1", "127.1", "2130706433", "0177.0.0.1", "0x7f000001", "127.0.0.1."])
      expect(isPublicAddress(address), address).toBe(false);
    expect(isPublicAddress("0x8.0x8.0x8.0x8")).toBe(true);
  });

  it("treats what is not an address as not public", () => {
    for (const text of [
      "",
      "localhost",
      "example.com",
      "1.2.3.4.5",
      "::g",
      "[::1",
      "10.0.0.1/8",
      "8.8.8.8/x",
      "u@8.8.8.8",
      "8.8.8.8?",
      "8.8.8.8#",
    ])
      expect(isPublicAddress(text), text).toBe(false);
  });

  it("passes global unicast addresses, documentation ranges included", () => {
    for (const address of [
      "8.8.8.8",
      "1.1.1.1",
      "192.0.2.10",
      "198.51.100.7",
      "203.0.113.10",
      "::ffff:203.0.113.10",
      "2606:4700:4700::1111",
      "[2a00:1450:4001:82b::200e]",
      "2001:db8::1",
      "3fff::1",
    ])
      expect(isPublicAddress(address), address).toBe(true);
  });

  it("isPrivateAddress is its negation", () => {
    expect(isPrivateAddress("127.0.0.1")).toBe(true);
    expect(isPrivateAddress("203.0.113.10")).toBe(false);
  });
});
