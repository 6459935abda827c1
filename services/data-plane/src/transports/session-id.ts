/**
 * Gateway session ids seal the routing decision into the id itself: which upstream endpoint
 * of the server holds the session, and the upstream's own session id. Any replica can route a
 * session's next request from the id alone, and a replica that dies loses nothing.
 * Format (visible ASCII only, per MCP §session management): `g1.<endpoint index>.<upstream id>`.
 */
export interface SessionRoute {
  endpoint: number;
  upstreamSessionId: string;
}

const PATTERN = /^g1\.(\d{1,2})\.([\x21-\x7e]{1,512})$/;

export function encodeSessionId(route: SessionRoute): string {
  return `g1.${route.endpoint}.${route.upstreamSessionId}`;
}

/** Decodes a client's session id; undefined for anything the gateway did not issue. */
export function decodeSessionId(id: string): SessionRoute | undefined {
  const m = PATTERN.exec(id);
  if (!m) return undefined;
  return { endpoint: Number(m[1]), upstreamSessionId: m[2]! };
}
