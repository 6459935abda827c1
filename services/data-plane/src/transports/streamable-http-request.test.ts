import type { IncomingMessage } from "node:http";
import { Readable } from "node:stream";
import { JsonRpcErrorCode, MCP_HEADERS, STATELESS_PROTOCOL_VERSION } from "@mcpgw/protocol";
import { describe, expect, it } from "vitest";
import { MAX_BATCH_MESSAGES } from "./limits.ts";
import { parseStreamableRequest } from "./streamable-http-request.ts";

/** A node request with these headers and this body. */
function request(method: string, body?: unknown, headers: Record<string, string> = {}): IncomingMessage {
  const raw = body === undefined ? [] : [Buffer.from(typeof body === "string" ? body : JSON.stringify(body))];
  return Object.assign(Readable.from(raw), {
    method,
    headers: { "content-type": "application/json", ...headers },
  }) as unknown as IncomingMessage;
}

const call = (id: number, name: string) => ({
  jsonrpc: "2.0",
  id,
  method: "tools/call",
  params: { name, arguments: {} },
});

describe("the Streamable HTTP parse stage", () => {
  it("describes a POST: first method and id, the tool, list requests to filter", async () => {
    const parsed = await parseStreamableRequest(
      request("POST", [call(1, "echo"), { jsonrpc: "2.0", id: 2, method: "tools/list" }]),
      1 << 20,
    );
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    expect(parsed.request).toMatchObject({
      method: "POST",
      rpcMethod: "tools/call",
      rpcId: 1,
      toolName: "echo",
    });
    expect([...parsed.request.listed]).toEqual([[2, "tools/list"]]);
  });

  it.each([
    ["PUT", undefined, {}, 405, "method_not_allowed"],
    ["POST", "{not json", {}, 400, "parse_error"],
    ["POST", { hello: 1 }, {}, 400, "bad_request"],
    ["POST", [], {}, 400, "bad_request"],
    [
      "POST",
      { jsonrpc: "2.0", id: 1, method: "ping" },
      { "content-type": "text/plain" },
      415,
      "unsupported_media_type",
    ],
    ["POST", "x".repeat(2048), {}, 413, "too_large"],
    ["GET", undefined, { [MCP_HEADERS.protocolVersion]: "1999-01-01" }, 400, "bad_request"],
  ] as const)("refuses %s %j (%j) with %i %s", async (method, body, headers, status, kind) => {
    const parsed = await parseStreamableRequest(request(method, body, headers), 1024);
    expect(parsed.ok).toBe(false);
    if (parsed.ok) return;
    expect(parsed.refusal.error.kind).toBe(kind);
    expect(parsed.refusal.error.status).toBe(status);
    expect(parsed.refusal.outcome.status).toBe(status);
  });

  it("an unsupported version is answered under the request's id, naming the supported ones", async () => {
    const parsed = await parseStreamableRequest(
      request(
        "POST",
        { jsonrpc: "2.0", id: 9, method: "ping" },
        { [MCP_HEADERS.protocolVersion]: "1999-01-01" },
      ),
      1 << 20,
    );
    if (parsed.ok) throw new Error("accepted an unsupported version");
    expect(parsed.refusal.id).toBe(9);
    expect(parsed.refusal.error.rpcCode).toBe(JsonRpcErrorCode.UnsupportedProtocolVersion);
    expect(parsed.refusal.error.options.data?.supported).toContain(STATELESS_PROTOCOL_VERSION);
  });

  it("a batch larger than the cap is refused before any message is looked at", async () => {
    const batch = Array.from({ length: MAX_BATCH_MESSAGES + 1 }, (_, i) => call(i, "echo"));
    const parsed = await parseStreamableRequest(request("POST", batch), 1 << 24);
    if (parsed.ok) throw new Error("accepted an oversized batch");
    expect(parsed.refusal.error.message).toMatch(/Batch must not exceed/);
  });

  it("a denied tool anywhere in the body refuses it: 200 for one message, 403 for a batch", async () => {
    const authorize = (tool: string) => ({
      allowed: tool !== "rm",
      reason: `tool ${tool} denied`,
      rule: { id: "p1" },
    });
    const one = await parseStreamableRequest(request("POST", call(3, "rm")), 1 << 20, authorize);
    if (one.ok) throw new Error("a denied tool went through");
    expect(one.refusal).toMatchObject({
      id: 3,
      status: 200,
      outcome: { status: 403, error: "denied by policy" },
    });
    expect(one.refusal.error.options.data).toEqual({ policy: { id: "p1" } });
    const batch = await parseStreamableRequest(
      request("POST", [call(1, "echo"), call(2, "rm")]),
      1 << 20,
      authorize,
    );
    if (batch.ok) throw new Error("a batch with a denied tool went through");
    expect(batch.refusal).toMatchObject({ id: 2, status: 403 });
  });

  it("2026-07-28: an Mcp-Method header that disagrees with the body is a header mismatch", async () => {
    const parsed = await parseStreamableRequest(
      request("POST", call(1, "echo"), {
        [MCP_HEADERS.protocolVersion]: STATELESS_PROTOCOL_VERSION,
        [MCP_HEADERS.method]: "tools/list",
      }),
      1 << 20,
    );
    if (parsed.ok) throw new Error("accepted mismatched routing headers");
    expect(parsed.refusal.error.rpcCode).toBe(JsonRpcErrorCode.HeaderMismatch);
  });
});
