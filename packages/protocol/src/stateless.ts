/** `_meta` keys of the stateless 2026-07-28 revision (every request names its revision and client). */
export const STATELESS_META = {
  protocolVersion: "io.modelcontextprotocol/protocolVersion",
  clientCapabilities: "io.modelcontextprotocol/clientCapabilities",
  clientInfo: "io.modelcontextprotocol/clientInfo",
  serverInfo: "io.modelcontextprotocol/serverInfo",
  subscriptionId: "io.modelcontextprotocol/subscriptionId",
} as const;

/** The prefix of every `_meta` key the protocol itself defines. */
export const PROTOCOL_META_PREFIX = "io.modelcontextprotocol/";

/** A routing header value (`Mcp-Name`): plain printable ASCII as is, anything else `=?base64?…?=`. */
export function encodeHeaderValue(value: string): string {
  return /^[\x20-\x7e]*$/.test(value) && value.trim() === value
    ? value
    : `=?base64?${Buffer.from(value, "utf8").toString("base64")}?=`;
}

/** A routing header value, decoded from its `=?base64?…?=` form when it has one. */
export function decodeHeaderValue(value: string): string {
  const m = /^=\?base64\?(.*)\?=$/.exec(value);
  return m ? Buffer.from(m[1]!, "base64").toString("utf8") : value;
}
