/** MCP protocol revisions the gateway accepts, newest first. */
export const SUPPORTED_PROTOCOL_VERSIONS = [
  "2026-07-28",
  "2025-11-25",
  "2025-06-18",
  "2025-03-26",
  "2024-11-05",
] as const;

export type ProtocolVersion = (typeof SUPPORTED_PROTOCOL_VERSIONS)[number];

/** The stateless revision: no initialize, no sessions, routing headers on every request. */
export const STATELESS_PROTOCOL_VERSION = "2026-07-28";

/** The newest revision with sessions: what the gateway asks of upstreams it initializes itself. */
export const LATEST_SESSION_PROTOCOL_VERSION = "2025-11-25";

/** The revisions that open a session with `initialize`, newest first. */
export const SESSION_PROTOCOL_VERSIONS: readonly ProtocolVersion[] = SUPPORTED_PROTOCOL_VERSIONS.filter(
  (v) => v !== STATELESS_PROTOCOL_VERSION,
);

/**
 * The revision an `initialize` answer names (MCP lifecycle §version negotiation): the one the
 * client asked for when the gateway speaks it with sessions, otherwise the newest it does.
 */
export function negotiateSessionVersion(requested: unknown): string {
  return typeof requested === "string" && (SESSION_PROTOCOL_VERSIONS as readonly string[]).includes(requested)
    ? requested
    : LATEST_SESSION_PROTOCOL_VERSION;
}

/** MCP 2025-06-18 §transports: without the header a server assumes 2025-03-26. */
export const DEFAULT_PROTOCOL_VERSION = "2025-03-26";

const supported = new Set<string>(SUPPORTED_PROTOCOL_VERSIONS);

/** True when `version` is a revision the gateway speaks. */
export function isSupportedProtocolVersion(version: string): version is ProtocolVersion {
  return supported.has(version);
}

/** Header names of the Streamable HTTP transport, lower-cased as node delivers them. */
export const MCP_HEADERS = {
  sessionId: "mcp-session-id",
  protocolVersion: "mcp-protocol-version",
  method: "mcp-method",
  name: "mcp-name",
  lastEventId: "last-event-id",
} as const;
