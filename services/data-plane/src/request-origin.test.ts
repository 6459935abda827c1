import { describe, expect, it } from "vitest";
import { originGuard } from "./request-origin.ts";

describe("originGuard (DNS-rebinding protection)", () => {
  const guard = originGuard({
    publicUrls: ["https://mcp.example.com"],
    allowedHosts: ["gw.internal:8080"],
    allowedOrigins: ["https://console.example.com"],
  });

  it("accepts loopback names, the public host and allowed hosts, with or without a port", () => {
    for (const host of [
      "localhost:8080",
      "127.0.0.1",
      "[::1]:8080",
      "mcp.example.com",
      "MCP.example.com:443",
      "gw.internal",
    ])
      expect(guard("/mcp", { host }), host).toBeUndefined();
  });

  it("refuses other hosts and rebinding origins with a reason naming the setting", () => {
    expect(guard("/servers/x/mcp", { host: "evil.example" })).toMatch(
      /Host 'evil.example'.*MCPGW_ALLOWED_HOSTS/,
    );
    expect(guard("/mcp", { host: "localhost:8080", origin: "http://evil.example" })).toMatch(
      /Origin 'http:\/\/evil.example'/,
    );
    expect(guard("/mcp", { host: "localhost", origin: "null" })).toMatch(/Origin 'null'/);
    expect(guard("/mcp", {})).toMatch(/Host ''/);
  });

  it("accepts the gateway's own origins and configured ones, and leaves probes alone", () => {
    expect(guard("/mcp", { host: "localhost", origin: "http://localhost:6274" })).toBeUndefined();
    expect(guard("/mcp", { host: "mcp.example.com", origin: "https://mcp.example.com" })).toBeUndefined();
    expect(
      guard("/mcp", { host: "mcp.example.com", origin: "https://console.example.com/" }),
    ).toBeUndefined();
    expect(guard("/health", { host: "10.1.2.3:8080" })).toBeUndefined();
    expect(guard("/metrics", { host: "10.1.2.3:8080" })).toBeUndefined();
  });

  it("can be opened up explicitly", () => {
    const open = originGuard({ publicUrls: [], allowedHosts: ["*"], allowedOrigins: ["*"] });
    expect(open("/mcp", { host: "anything", origin: "http://evil.example" })).toBeUndefined();
  });
});
