/**
 * The data plane's route table: every path it serves, in the order they are matched, each with
 * the name metrics, spans and logs use for it and the client transport it speaks. The node
 * listener (app.ts) matches here once per request and dispatches by name; nothing else parses
 * request paths.
 */

export type ClientTransport = "streamable_http" | "sse" | "websocket" | "json_rpc" | "rest";

export interface RouteSpec {
  /** Stable name: `<family>.<endpoint>`, e.g. `server.mcp`, `namespace.rpc`, `operator`. */
  name: string;
  transport: ClientTransport;
}

/** A request matched to a route, with what its path names. */
export interface RouteMatch extends RouteSpec {
  /** The server id (`server.*`) or namespace slug (`namespace.*`; undefined: the caller's default). */
  target?: string | undefined;
  /** The endpoint within the family: `mcp`, `sse`, `message`, `rpc`, `rpc/batch`, … */
  endpoint?: string | undefined;
  query?: URLSearchParams | undefined;
}

const TRANSPORT_OF: Record<string, ClientTransport> = {
  mcp: "streamable_http",
  sse: "sse",
  message: "sse",
  ws: "websocket",
  rpc: "json_rpc",
  "rpc/batch": "json_rpc",
  "rpc/introspection": "json_rpc",
  conflicts: "rest",
};

const SERVER_MCP = /^\/servers\/([^/?#]+)\/mcp(?:\?|$)/;
const SERVER_TRANSPORT = /^\/servers\/([^/?#]+)\/(sse|message|rpc|rpc\/introspection|ws)(?:\?(.*))?$/;
/** `/ns/{slug}/<endpoint>` and, for the caller's default namespace, `/<endpoint>`. */
const NAMESPACE =
  /^(?:\/ns\/([^/?#]+))?\/(mcp|sse|message|rpc|rpc\/batch|rpc\/introspection|ws|conflicts)(?:\?(.*))?$/;
const OPERATOR =
  /^\/(?:mcp\/(?:capabilities|status)|sse\/(?:status|events|broadcast)|ws\/(?:status|send|broadcast)|stdio\/(?:process|send))(?:\?|$)/;
const HEALTH = /^\/(health|ready|metrics)(?:\?|$)/;

function decodeId(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

/**
 * The route of a request path. Operator paths are matched before the default namespace's
 * (`/mcp/status` is an operator endpoint, `/mcp` the default namespace). Paths no route
 * names are `other` (answered 404 by the fallback).
 */
export function matchRoute(url: string): RouteMatch {
  const mcp = SERVER_MCP.exec(url);
  if (mcp)
    return { name: "server.mcp", transport: "streamable_http", target: decodeId(mcp[1]!), endpoint: "mcp" };
  const server = SERVER_TRANSPORT.exec(url);
  if (server) {
    const endpoint = server[2]!;
    return {
      name: `server.${endpoint}`,
      transport: TRANSPORT_OF[endpoint]!,
      target: decodeId(server[1]!),
      endpoint,
      query: new URLSearchParams(server[3] ?? ""),
    };
  }
  if (OPERATOR.test(url)) return { name: "operator", transport: "rest" };
  const ns = NAMESPACE.exec(url);
  if (ns) {
    const endpoint = ns[2]!;
    return {
      name: `namespace.${endpoint}`,
      transport: TRANSPORT_OF[endpoint]!,
      target: ns[1] === undefined ? undefined : decodeId(ns[1]),
      endpoint,
      query: new URLSearchParams(ns[3] ?? ""),
    };
  }
  const health = HEALTH.exec(url);
  if (health) return { name: health[1]!, transport: "rest" };
  if (url.startsWith("/.well-known/")) return { name: "well_known", transport: "rest" };
  return { name: "other", transport: "rest" };
}
