import { createHmac, timingSafeEqual } from "node:crypto";

/**
 * Gateway session ids seal the routing decision into the id itself: which upstream endpoint
 * of the server holds the session, and the upstream's own session id. Any replica can route a
 * session's next request from the id alone, and a replica that dies loses nothing.
 *
 * With a binding key (every replica derives the same one from the master key) the id also
 * carries a MAC over the principal and server it was issued to, so a session id seen by someone
 * else (a session list, a log) is useless to them:
 * `g2.<endpoint>.<mac>.<upstream id>`; without one, `g1.<endpoint>.<upstream id>`.
 * Visible ASCII only, per MCP §session management.
 */
export interface SessionRoute {
  endpoint: number;
  upstreamSessionId: string;
}

/** Who a session id is issued to. */
export interface SessionBinding {
  key: Buffer;
  principalId: string;
  serverId: string;
}

const UNBOUND = /^g1\.(\d{1,2})\.([\x21-\x7e]{1,512})$/;
const BOUND = /^g2\.(\d{1,2})\.([A-Za-z0-9_-]{22})\.([\x21-\x7e]{1,512})$/;

/**
 * MACs computed lately, per binding key: every request of a session carries the same id and
 * every answer the same upstream id, so each is computed once per session, not per request.
 * Bounded (cleared when full); ids that fail verification cost a recompute, never a wrong answer.
 */
const recentMacs = new WeakMap<Buffer, Map<string, string>>();
const MAX_RECENT_MACS = 10_000;

function mac(b: SessionBinding, route: SessionRoute, remember: boolean): string {
  const input = `${b.principalId}\n${b.serverId}\n${route.endpoint}\n${route.upstreamSessionId}`;
  let recent = recentMacs.get(b.key);
  if (!recent) {
    recent = new Map();
    recentMacs.set(b.key, recent);
  }
  let tag = recent.get(input);
  if (tag === undefined) {
    tag = createHmac("sha256", b.key).update(input).digest("base64url").slice(0, 22);
    if (remember) {
      if (recent.size >= MAX_RECENT_MACS) recent.clear();
      recent.set(input, tag);
    }
  }
  return tag;
}

/** The id a client gets for a session. */
export function encodeSessionId(route: SessionRoute, binding?: SessionBinding): string {
  return binding
    ? `g2.${route.endpoint}.${mac(binding, route, true)}.${route.upstreamSessionId}`
    : `g1.${route.endpoint}.${route.upstreamSessionId}`;
}

/** Decodes a client's session id; undefined for anything not issued by the gateway to this caller. */
export function decodeSessionId(id: string, binding?: SessionBinding): SessionRoute | undefined {
  if (!binding) {
    const m = UNBOUND.exec(id);
    return m ? { endpoint: Number(m[1]), upstreamSessionId: m[2]! } : undefined;
  }
  const m = BOUND.exec(id);
  if (!m) return undefined;
  const route = { endpoint: Number(m[1]), upstreamSessionId: m[3]! };
  // Verifying does not fill the cache (a forged id must not evict real ones); answers do.
  const expected = Buffer.from(mac(binding, route, false));
  const given = Buffer.from(m[2]!);
  return expected.length === given.length && timingSafeEqual(expected, given) ? route : undefined;
}
