import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from "node:dns";
import { BlockList, isIP } from "node:net";

// Addresses the gateway must not reach on a user's behalf unless private upstreams are allowed:
// loopback, private, link-local (cloud metadata at 169.254.169.254), CGNAT, unique-local,
// unspecified.
const blocked = new BlockList();
for (const [net, prefix] of [
  ["0.0.0.0", 8],
  ["10.0.0.0", 8],
  ["100.64.0.0", 10],
  ["127.0.0.0", 8],
  ["169.254.0.0", 16],
  ["172.16.0.0", 12],
  ["192.168.0.0", 16],
] as const) {
  blocked.addSubnet(net, prefix, "ipv4");
}
for (const [net, prefix] of [
  ["::", 128],
  ["::1", 128],
  ["fc00::", 7],
  ["fe80::", 10],
] as const) {
  blocked.addSubnet(net, prefix, "ipv6");
}

/** True for addresses in private, loopback, link-local and similar ranges (and for non-addresses). */
export function isPrivateAddress(address: string): boolean {
  // IPv4-mapped IPv6 (::ffff:10.0.0.1) is judged by its IPv4 address. (A ::ffff:0:0/96 rule in
  // the BlockList would match every IPv4 address.)
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (mapped) return isPrivateAddress(mapped);
  const family = isIP(address);
  return family === 4 ? blocked.check(address, "ipv4") : family === 6 ? blocked.check(address, "ipv6") : true;
}

type LookupCallback = (
  err: NodeJS.ErrnoException | null,
  address: string | LookupAddress[],
  family?: number,
) => void;

/**
 * A `dns.lookup` for outgoing connections that refuses private addresses: checked when the
 * connection is made, so a name that resolved to a public address at registration cannot be
 * re-pointed at an internal one later (DNS rebinding).
 */
export function publicOnlyLookup(hostname: string, options: LookupOptions, callback: LookupCallback): void {
  dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, []);
    const list = addresses as LookupAddress[];
    const denied = list.find((a) => isPrivateAddress(a.address));
    if (denied) {
      const error: NodeJS.ErrnoException = new Error(
        `${hostname} resolves to a private address; upstream refused`,
      );
      error.code = "EUPSTREAMPRIVATE";
      return callback(error, []);
    }
    if (options.all) return callback(null, list);
    const first = list[0];
    if (!first)
      return callback(Object.assign(new Error(`${hostname} did not resolve`), { code: "ENOTFOUND" }), []);
    callback(null, first.address, first.family);
  });
}
