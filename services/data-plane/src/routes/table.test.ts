import { describe, expect, it } from "vitest";
import { matchRoute } from "./table.ts";

describe("matchRoute: a server's endpoints", () => {
  it("routes /servers/{id}/mcp to the server's streamable HTTP endpoint", () => {
    expect(matchRoute("/servers/srv_1/mcp")).toEqual({
      name: "server.mcp",
      transport: "streamable_http",
      target: "srv_1",
      endpoint: "mcp",
    });
  });

  it("routes /servers/{id}/mcp with a query string to the same endpoint and server", () => {
    expect(matchRoute("/servers/srv_1/mcp?session=abc&x=1")).toMatchObject({
      name: "server.mcp",
      transport: "streamable_http",
      target: "srv_1",
      endpoint: "mcp",
    });
    expect(matchRoute("/servers/srv_1/mcp?")).toMatchObject({ name: "server.mcp", target: "srv_1" });
  });

  it("decodes a percent-encoded server id, and keeps one that does not decode", () => {
    expect(matchRoute("/servers/a%2Fb/mcp").target).toBe("a/b");
    expect(matchRoute("/servers/caf%C3%A9%20srv/mcp").target).toBe("café srv");
    expect(matchRoute("/servers/%E0%A4%A/mcp")).toMatchObject({ name: "server.mcp", target: "%E0%A4%A" });
    expect(matchRoute("/servers/a%2Fb/sse")).toMatchObject({ name: "server.sse", target: "a/b" });
  });

  it.each([
    ["sse", "sse"],
    ["message", "sse"],
    ["rpc", "json_rpc"],
    ["rpc/introspection", "json_rpc"],
    ["ws", "websocket"],
  ] as const)("routes /servers/{id}/%s as %s", (endpoint, transport) => {
    const route = matchRoute(`/servers/srv_9/${endpoint}`);
    expect(route).toMatchObject({ name: `server.${endpoint}`, transport, target: "srv_9", endpoint });
    expect(route.query?.toString()).toBe("");
  });

  it("carries the query of a server transport endpoint", () => {
    const route = matchRoute("/servers/srv_1/message?sessionId=3f2c-01&x=%20y");
    expect(route).toMatchObject({ name: "server.message", transport: "sse", target: "srv_1" });
    expect(route.query?.get("sessionId")).toBe("3f2c-01");
    expect(route.query?.get("x")).toBe(" y");
  });

  it.each([
    "/servers/srv_1/mcpx",
    "/servers/srv_1/mcp/extra",
    "/servers/srv_1/ssex",
    "/servers/srv_1/rpc/other",
    "/servers//mcp",
    "/servers/srv_1",
    "/servers",
    "/servers/a/b/mcp",
  ])("does not take %s for a server endpoint", (url) => {
    expect(matchRoute(url).name).toBe("other");
  });
});

describe("matchRoute: namespaces", () => {
  it.each([
    ["mcp", "streamable_http"],
    ["sse", "sse"],
    ["message", "sse"],
    ["rpc", "json_rpc"],
    ["rpc/batch", "json_rpc"],
    ["rpc/introspection", "json_rpc"],
    ["ws", "websocket"],
    ["conflicts", "rest"],
  ] as const)("routes /ns/{slug}/%s as %s", (endpoint, transport) => {
    const route = matchRoute(`/ns/team-a/${endpoint}`);
    expect(route).toMatchObject({ name: `namespace.${endpoint}`, transport, target: "team-a", endpoint });
  });

  it("decodes the slug and carries the query", () => {
    const route = matchRoute("/ns/team%20a/message?sessionId=s1");
    expect(route).toMatchObject({ name: "namespace.message", target: "team a", endpoint: "message" });
    expect(route.query?.get("sessionId")).toBe("s1");
    expect(matchRoute("/ns/team/mcp?x=1")).toMatchObject({ name: "namespace.mcp", target: "team" });
  });

  it.each([
    ["/mcp", "namespace.mcp", "streamable_http"],
    ["/mcp?x=1", "namespace.mcp", "streamable_http"],
    ["/sse", "namespace.sse", "sse"],
    ["/message?sessionId=abc", "namespace.message", "sse"],
    ["/rpc", "namespace.rpc", "json_rpc"],
    ["/rpc/batch", "namespace.rpc/batch", "json_rpc"],
    ["/rpc/introspection", "namespace.rpc/introspection", "json_rpc"],
    ["/ws", "namespace.ws", "websocket"],
    ["/conflicts", "namespace.conflicts", "rest"],
  ])("routes %s to the caller's default namespace", (url, name, transport) => {
    const route = matchRoute(url);
    expect(route).toMatchObject({ name, transport });
    expect(route.target).toBeUndefined();
  });

  it("keeps the default namespace's query", () => {
    expect(matchRoute("/message?sessionId=abc").query?.get("sessionId")).toBe("abc");
  });

  it.each(["/ns/team", "/ns/team/", "/ns/team/unknown", "/ns//mcp", "/ns/a/b/mcp", "/mcpx", "/rpc/batchx"])(
    "does not take %s for a namespace endpoint",
    (url) => {
      expect(matchRoute(url).name).toBe("other");
    },
  );
});

describe("matchRoute: operator, health and metadata paths", () => {
  it.each([
    "/mcp/status",
    "/mcp/capabilities",
    "/sse/status",
    "/sse/events",
    "/sse/broadcast",
    "/ws/send",
    "/ws/broadcast",
    "/ws/status",
    "/stdio/process",
    "/stdio/send",
    "/mcp/status?verbose=1",
    "/ws/send?sessionId=abc",
  ])("routes %s to the operator endpoints, not the default namespace", (url) => {
    const route = matchRoute(url);
    expect(route).toEqual({ name: "operator", transport: "rest" });
  });

  it.each(["/mcp/statusx", "/ws/sendall", "/stdio/processes"])(
    "does not take %s for an operator path",
    (url) => {
      expect(matchRoute(url).name).toBe("other");
    },
  );

  it.each(["health", "ready", "metrics"])("routes /%s by its own name", (name) => {
    expect(matchRoute(`/${name}`)).toEqual({ name, transport: "rest" });
    expect(matchRoute(`/${name}?probe=1`)).toEqual({ name, transport: "rest" });
    expect(matchRoute(`/${name}z`).name).toBe("other");
  });

  it.each([
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-protected-resource/servers/srv_1/mcp",
    "/.well-known/mcp.json",
  ])("routes %s to the metadata documents", (url) => {
    expect(matchRoute(url)).toEqual({ name: "well_known", transport: "rest" });
  });

  it.each([
    "",
    "/",
    "/unknown",
    "/api/v1/servers",
    "/.well-known",
    "/HEALTH",
    "//mcp",
    "/servers/srv/../mcpx",
  ])("routes the unknown path %j to other", (url) => {
    expect(matchRoute(url)).toEqual({ name: "other", transport: "rest" });
  });
});
