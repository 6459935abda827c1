import { lookup } from "node:dns/promises";
import { BlockList, isIP } from "node:net";
import { validation } from "../errors.ts";

// Addresses an upstream URL must not reach unless private upstreams are allowed: loopback,
// private, link-local (cloud metadata at 169.254.169.254), CGNAT, unique-local, unspecified.
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

function isBlocked(address: string): boolean {
  // IPv4-mapped IPv6 (::ffff:10.0.0.1) is judged by its IPv4 address. (A ::ffff:0:0/96 rule in
  // the BlockList would match every IPv4 address.)
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (mapped) return isBlocked(mapped);
  const family = isIP(address);
  return family === 4 ? blocked.check(address, "ipv4") : family === 6 ? blocked.check(address, "ipv6") : true;
}

/**
 * Rejects upstream URLs that are not plain http(s), carry credentials, or resolve to internal
 * addresses (SSRF), unless the deployment allows private upstreams.
 */
export async function assertSafeUpstreamUrl(raw: string, allowPrivate: boolean): Promise<string> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw validation(`invalid upstream URL: ${JSON.stringify(raw.slice(0, 200))}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:")
    throw validation("upstream URLs must use http or https");
  if (url.username || url.password)
    throw validation("upstream URLs must not embed credentials; use server credentials");
  if (allowPrivate) return url.toString();
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const addresses = isIP(host)
    ? [host]
    : await lookup(host, { all: true }).then(
        (r) => r.map((a) => a.address),
        () => [],
      );
  if (addresses.length === 0) throw validation(`upstream host ${host} does not resolve`);
  if (addresses.some(isBlocked)) {
    throw validation(
      `upstream host ${host} resolves to a private or internal address; set MCPGW_ALLOW_PRIVATE_UPSTREAMS=true to allow it`,
    );
  }
  return url.toString();
}
