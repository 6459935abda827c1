import { describe, expect, it } from "vitest";
import { isErrorResponse, isJsonRpcMessage, isNotification, isRequest, isResponse } from "./json-rpc.ts";
import {
  negotiateSessionVersion,
  SESSION_PROTOCOL_VERSIONS,
  STATELESS_PROTOCOL_VERSION,
} from "./versions.ts";

describe("JSON-RPC message guards", () => {
  const request = { jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "echo" } };
  const nullId = { jsonrpc: "2.0", id: null, method: "tools/call" };
  const notification = { jsonrpc: "2.0", method: "notifications/progress" };
  const result = { jsonrpc: "2.0", id: "a", result: {} };
  const error = { jsonrpc: "2.0", id: 2, error: { code: -32601, message: "nope" } };

  it("tell the kinds apart, exactly one kind per message", () => {
    for (const [m, kind] of [
      [request, "request"],
      [nullId, "request"],
      [notification, "notification"],
      [result, "response"],
      [error, "response"],
    ] as const) {
      expect(isJsonRpcMessage(m)).toBe(true);
      const kinds = [
        isRequest(m) && "request",
        isNotification(m) && "notification",
        isResponse(m) && "response",
      ];
      expect(kinds.filter(Boolean)).toEqual([kind]);
    }
    expect(isErrorResponse(error)).toBe(true);
    expect(isErrorResponse(result)).toBe(false);
  });

  it("a request with a null id still counts as a request, so relays apply its guards", () => {
    expect(isRequest(nullId)).toBe(true);
    expect(isNotification(nullId)).toBe(false);
  });

  it("refuse envelopes that are not JSON-RPC 2.0", () => {
    for (const bad of [
      null,
      [],
      "x",
      { id: 1, method: "ping" },
      { jsonrpc: "1.0", id: 1, method: "ping" },
      { jsonrpc: "2.0", method: 3 },
      { jsonrpc: "2.0", id: 1 },
    ])
      expect(isJsonRpcMessage(bad)).toBe(false);
  });
});

describe("protocol revision negotiation", () => {
  it("answers a revision the gateway speaks with sessions as asked, anything else with the newest", () => {
    for (const v of SESSION_PROTOCOL_VERSIONS) expect(negotiateSessionVersion(v)).toBe(v);
    expect(negotiateSessionVersion("2024-11-05")).toBe("2024-11-05");
    expect(negotiateSessionVersion(STATELESS_PROTOCOL_VERSION)).toBe(SESSION_PROTOCOL_VERSIONS[0]);
    expect(negotiateSessionVersion("2099-01-01")).toBe(SESSION_PROTOCOL_VERSIONS[0]);
    expect(negotiateSessionVersion(undefined)).toBe(SESSION_PROTOCOL_VERSIONS[0]);
    expect(SESSION_PROTOCOL_VERSIONS).not.toContain(STATELESS_PROTOCOL_VERSION);
  });
});
