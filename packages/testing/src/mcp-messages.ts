/** A 2025-11-25 `initialize` request, as raw-HTTP and WebSocket tests send it. */
export function initializeRequest(clientName: string, id = 1) {
  return {
    jsonrpc: "2.0",
    id,
    method: "initialize",
    params: {
      protocolVersion: "2025-11-25",
      capabilities: {},
      clientInfo: { name: clientName, version: "1" },
    },
  };
}

/**
 * One 2026-07-28 request as a stateless client sends it: the routing headers (`Mcp-Name` for
 * named requests) and `_meta` with the revision and the client's capabilities.
 */
export function statelessPost(
  url: string,
  headers: Record<string, string>,
  message: { id: number; method: string; params: Record<string, unknown> },
  capabilities: Record<string, unknown> = {},
): Promise<Response> {
  const { id, method, params } = message;
  return fetch(url, {
    method: "POST",
    headers: {
      ...headers,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": "2026-07-28",
      "mcp-method": method,
      ...(typeof params.name === "string" ? { "mcp-name": params.name } : {}),
    },
    body: JSON.stringify({
      jsonrpc: "2.0",
      id,
      method,
      params: {
        ...params,
        _meta: {
          "io.modelcontextprotocol/protocolVersion": "2026-07-28",
          "io.modelcontextprotocol/clientCapabilities": capabilities,
        },
      },
    }),
  });
}
