import { randomBytes } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { BlockList, isIP } from "node:net";

/**
 * A request another replica forwarded here is replayed on this process's own listener, so its
 * socket peer is loopback. The replay names the original peer in `FORWARDED_PEER_HEADER`, vouched
 * for by a secret that never leaves this process (a client cannot forge it).
 */
export const FORWARDED_PEER_HEADER = "x-mcpgw-forwarded-peer";
export const FORWARDED_PEER_PROOF_HEADER = "x-mcpgw-forwarded-proof";
export const forwardedPeerProof = randomBytes(24).toString("base64url");

/** The socket peer of a request, or the original peer of one replayed here from another replica. */
function peerOf(req: IncomingMessage): string {
  const named = req.headers[FORWARDED_PEER_HEADER];
  if (typeof named === "string" && req.headers[FORWARDED_PEER_PROOF_HEADER] === forwardedPeerProof)
    return named;
  return req.socket.remoteAddress ?? "unknown";
}

/** Parses `MCPGW_TRUSTED_PROXIES` ("10.0.0.0/8, 192.168.1.7") into a matcher; empty: trust nobody. */
export function trustedProxies(spec: string | undefined): BlockList | undefined {
  const entries = (spec ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  if (entries.length === 0) return undefined;
  const list = new BlockList();
  for (const entry of entries) {
    const [address, prefix] = entry.split("/");
    const family = isIP(address ?? "");
    if (!family) throw new Error(`MCPGW_TRUSTED_PROXIES: '${entry}' is not an address or CIDR range`);
    const type = family === 4 ? "ipv4" : "ipv6";
    if (prefix === undefined) list.addAddress(address!, type);
    else list.addSubnet(address!, Number(prefix), type);
  }
  return list;
}

const normalise = (ip: string) => ip.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, "");

function isTrusted(list: BlockList, ip: string): boolean {
  const family = isIP(ip);
  return family !== 0 && list.check(ip, family === 4 ? "ipv4" : "ipv6");
}

/** Addresses named by `Forwarded: for=` (RFC 7239) or `X-Forwarded-For`, nearest hop last. */
function forwardedChain(req: IncomingMessage): string[] {
  const forwarded = req.headers.forwarded;
  if (typeof forwarded === "string" && forwarded) {
    // RFC 7239: for=1.2.3.4, for="1.2.3.4:80", for="[2001:db8::1]:4711" (IPv6 always bracketed).
    return [...forwarded.matchAll(/for=("?)(\[[^\]]*\]|[^";,\s]+)(?::\d+)?\1/gi)].map((m) => {
      const value = m[2]!;
      return value.startsWith("[") ? value.slice(1, -1) : value.replace(/:\d+$/, "");
    });
  }
  const xff = req.headers["x-forwarded-for"];
  const value = Array.isArray(xff) ? xff.join(",") : xff;
  return value
    ? value
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean)
    : [];
}

/**
 * The client's address: the socket peer, unless that peer is a trusted proxy, in which case the
 * forwarded chain is walked from the nearest hop back to the first address that is not a trusted
 * proxy. A header sent by an untrusted peer is ignored, so it cannot be spoofed.
 */
export function clientIp(req: IncomingMessage, trusted: BlockList | undefined): string {
  const peer = normalise(peerOf(req));
  if (!trusted || !isTrusted(trusted, peer)) return peer;
  const chain = forwardedChain(req).map(normalise);
  for (let i = chain.length - 1; i >= 0; i--) {
    const hop = chain[i]!;
    if (!isIP(hop)) return peer;
    if (!isTrusted(trusted, hop)) return hop;
  }
  return chain[0] && isIP(chain[0]) ? chain[0] : peer;
}
