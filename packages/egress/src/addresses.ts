import ipaddr from "ipaddr.js";

// ipaddr.js keeps the IANA special-purpose registries (RFC 6890 and successors); `range()` is
// "unicast" only for an address in none of them. Anything else (private, loopback, link-local,
// CGNAT, multicast, broadcast, 192.0.0.0/24, benchmarking 198.18.0.0/15, 240.0.0.0/4, NAT64,
// 6to4, Teredo, ...) is not a destination the gateway connects to on a user's behalf.

// Documentation ranges (RFC 5737, RFC 3849, RFC 9637) are filed under `reserved` but never
// routed, so allowing them reaches nothing; docs and tests use them as "some public address".
const documentation = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20"].map(
  (cidr) => ipaddr.parseCIDR(cidr),
);

// IANA allocates global unicast from 2000::/3 only: outside it lie the IPv4-compatible ::/96
// (`[::127.0.0.1]`), site-local fec0::/10 and other forms ipaddr.js calls plain "unicast".
const globalUnicast = ipaddr.IPv6.parseCIDR("2000::/3");

function isDocumentation(ip: ipaddr.IPv4 | ipaddr.IPv6): boolean {
  return documentation.some(([net, bits]) => net.kind() === ip.kind() && ip.match(net, bits));
}

function isPublicIPv4(ip: ipaddr.IPv4): boolean {
  return ip.range() === "unicast" || isDocumentation(ip);
}

/**
 * Reads an IP address the way connections read it. WHATWG URL is the parser every outgoing URL
 * here goes through: it reads `0x7f.1`, `127.1` and `2130706433` as 127.0.0.1 and writes IPv6
 * in plain hex (ipaddr.js alone would read `::127.0.0.1` as IPv4-mapped). Undefined for a name.
 */
function parseAddress(text: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  const bare = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  // A zone id only qualifies link-local addresses, never public ones.
  if (bare.includes("%")) return undefined;
  let url: URL;
  try {
    url = new URL(`http://${bare.includes(":") ? `[${bare}]` : bare}/`);
  } catch {
    return undefined;
  }
  // Only a host: "10.0.0.1/8" or "user@8.8.8.8" would parse, as something else.
  if (url.href !== `http://${url.host}/`) return undefined;
  const host = url.hostname;
  if (host.startsWith("[")) return ipaddr.IPv6.parse(host.slice(1, -1));
  return ipaddr.IPv4.isValidFourPartDecimal(host) ? ipaddr.IPv4.parse(host) : undefined;
}

/** True for a globally routed unicast address (any form WHATWG URL reads, bracketed or not). */
export function isPublicAddress(address: string): boolean {
  const ip = parseAddress(address);
  if (!ip) return false;
  if (ip.kind() === "ipv4") return isPublicIPv4(ip as ipaddr.IPv4);
  const v6 = ip as ipaddr.IPv6;
  // On a dual-stack socket ::ffff:a.b.c.d is a.b.c.d: judge that. The other forms that embed an
  // IPv4 address (NAT64, 6to4, Teredo, IPv4-compatible) hand the packet to a translator or relay
  // that reaches the embedded address, and no real service lives on them: refused outright.
  if (v6.isIPv4MappedAddress()) return isPublicIPv4(v6.toIPv4Address());
  return v6.match(globalUnicast) && (v6.range() === "unicast" || isDocumentation(v6));
}

/** True for addresses that are not public (private, loopback, special-purpose), and for non-addresses. */
export function isPrivateAddress(address: string): boolean {
  return !isPublicAddress(address);
}
