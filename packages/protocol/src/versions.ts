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
