import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer, type Server, type Socket } from "node:net";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  eventually,
  freePort,
  login,
  type Stack,
  startStack,
  startTestUpstream,
  type TestUpstream,
} from "../../../packages/testing/src/index.ts";

const MAX_BODY = 64 * 1024;

interface RpcError {
  jsonrpc: "2.0";
  id: unknown;
  error: { code: number; message: string };
}

describe("data plane: bad input gets the right status and a JSON-RPC error, and the process stays up", () => {
  let stack: Stack;
  let api: Api;
  let upstream: TestUpstream;
  let blackhole: Server;
  let website: HttpServer;
  const sockets = new Set<Socket>();
  const ids: Record<string, string> = {};

  const mcpUrl = (name: string) => `${stack.dataPlanes[0]!.url}/servers/${ids[name]}/mcp`;

  async function post(url: string, body: string, headers: Record<string, string> = {}) {
    const res = await fetch(url, {
      method: "POST",
      headers: {
        authorization: `Bearer ${api.token}`,
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        ...headers,
      },
      body,
    });
    const text = await res.text();
    // Never a stack trace or an internal message in a response body.
    expect(text).not.toMatch(/\n\s+at |node_modules|Error:/);
    const isJson = res.headers.get("content-type")?.includes("application/json") ?? false;
    return {
      status: res.status,
      headers: res.headers,
      body: isJson && text ? (JSON.parse(text) as RpcError) : undefined,
    };
  }

  const initialize = JSON.stringify({
    jsonrpc: "2.0",
    id: 1,
    method: "initialize",
    params: {
      protocolVersion: "2025-11-25",
      capabilities: {},
      clientInfo: { name: "bad-input", version: "1" },
    },
  });

  beforeAll(async () => {
    // A TCP server that accepts connections and never answers: an upstream that hangs.
    blackhole = createServer((socket) => sockets.add(socket)).listen(0, "127.0.0.1");
    await new Promise((r) => blackhole.once("listening", r));
    const hangPort = (blackhole.address() as { port: number }).port;
    const closedPort = await freePort();
    // A web server at the wrong URL: HTML pages, a 404 for /missing and a 200 elsewhere.
    website = createHttpServer((req, res) => {
      req.resume();
      const missing = req.url?.startsWith("/missing") ?? false;
      res.writeHead(missing ? 404 : 200, { "content-type": "text/html; charset=utf-8" });
      res.end(`<!DOCTYPE html><html><body><h1>${missing ? "Not Found" : "Welcome"}</h1></body></html>`);
    }).listen(0, "127.0.0.1");
    await new Promise((r) => website.once("listening", r));
    const webPort = (website.address() as { port: number }).port;
    [stack, upstream] = await Promise.all([
      startStack({
        replicas: 1,
        env: { MCPGW_MAX_BODY_BYTES: String(MAX_BODY), MCPGW_ACCESS_TOKEN_TTL_S: "3" },
      }),
      startTestUpstream(),
    ]);
    api = await stack.api();
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", {
      name: "Bad input",
      slug: "bad-input",
    });
    for (const [name, url, timeout_ms] of [
      ["ok", upstream.url, 30_000],
      ["refused", `http://127.0.0.1:${closedPort}/mcp`, 30_000],
      ["hangs", `http://127.0.0.1:${hangPort}/mcp`, 500],
      ["html404", `http://127.0.0.1:${webPort}/missing/mcp`, 30_000],
      ["website", `http://127.0.0.1:${webPort}/`, 30_000],
    ] as const) {
      const created = await api.call<{ id: string }>("POST", "/api/v1/servers", {
        namespace_id: ns.body.id,
        name,
        transport: "streamable_http",
        url,
        timeout_ms,
      });
      expect(created.status).toBe(201);
      ids[name] = created.body.id;
    }
    await eventually(async () => (await post(mcpUrl("ok"), initialize)).status === 200, 3000);
  }, 90_000);

  afterAll(async () => {
    await Promise.all([
      stack?.stop(),
      upstream?.close(),
      new Promise((r) => {
        for (const socket of sockets) socket.destroy();
        blackhole?.close(r);
      }),
      new Promise((r) => (website ? website.close(r) : r(undefined))),
    ]);
  });

  it("answers malformed JSON with 400 and a JSON-RPC parse error", async () => {
    const res = await post(mcpUrl("ok"), '{"jsonrpc":"2.0","id":1,"method":');
    expect(res.status).toBe(400);
    expect(res.body?.error.code).toBe(-32700);
  });

  it("answers JSON that is not JSON-RPC with 400 invalid request", async () => {
    for (const body of ['{"hello":"world"}', "[]", "42", '{"jsonrpc":"1.0","id":1,"method":"x"}']) {
      const res = await post(mcpUrl("ok"), body);
      expect(res.status).toBe(400);
      expect(res.body?.error.code).toBe(-32600);
    }
  });

  it("answers a wrong content type with 415", async () => {
    const res = await post(mcpUrl("ok"), initialize, { "content-type": "text/plain" });
    expect(res.status).toBe(415);
  });

  it("answers an oversized body with 413 without reading it all", async () => {
    const big = JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "tools/call",
      params: { pad: "x".repeat(MAX_BODY) },
    });
    const res = await post(mcpUrl("ok"), big);
    expect(res.status).toBe(413);
    expect(res.body?.error.message).toContain(String(MAX_BODY));
  });

  it("answers a missing, tampered or foreign token with 401 and a WWW-Authenticate challenge", async () => {
    const missing = await post(mcpUrl("ok"), initialize, { authorization: "" });
    expect(missing.status).toBe(401);
    expect(missing.headers.get("www-authenticate")).toMatch(/^Bearer /);
    const [h, p, s] = api.token.split(".");
    const tamperedPayload = Buffer.from(
      JSON.stringify({
        ...JSON.parse(Buffer.from(p!, "base64url").toString()),
        org_id: "another-org",
        role: "admin",
      }),
    ).toString("base64url");
    const tampered = await post(mcpUrl("ok"), initialize, {
      authorization: `Bearer ${h}.${tamperedPayload}.${s}`,
    });
    expect(tampered.status).toBe(401);
    const garbage = await post(mcpUrl("ok"), initialize, { authorization: "Bearer not-a-jwt" });
    expect(garbage.status).toBe(401);
  });

  it("answers an expired token with 401", async () => {
    const short = await login(stack.cpUrl, stack.admin.email, stack.admin.password);
    const ok = await post(mcpUrl("ok"), initialize, { authorization: `Bearer ${short.token}` });
    expect(ok.status).toBe(200);
    await new Promise((r) => setTimeout(r, 4200));
    const expired = await post(mcpUrl("ok"), initialize, { authorization: `Bearer ${short.token}` });
    expect(expired.status).toBe(401);
    expect(expired.body?.error.message).toContain("expired");
    api = await login(stack.cpUrl, stack.admin.email, stack.admin.password);
  });

  it("answers an unknown or forged session with 404 so the client re-initializes", async () => {
    const ping = JSON.stringify({ jsonrpc: "2.0", id: 2, method: "ping" });
    const forged = await post(mcpUrl("ok"), ping, { "mcp-session-id": "made-up" });
    expect(forged.status).toBe(404);
    const unknownUpstream = await post(mcpUrl("ok"), ping, {
      "mcp-session-id": "g1.0.00000000-0000-0000-0000-000000000000",
    });
    expect(unknownUpstream.status).toBe(404);
    const badEndpoint = await post(mcpUrl("ok"), ping, { "mcp-session-id": "g1.7.abc" });
    expect(badEndpoint.status).toBe(404);
  });

  it("answers 404 to a session id presented by another principal (ids are bound to who opened them)", async () => {
    const init = await fetch(mcpUrl("ok"), {
      method: "POST",
      headers: {
        authorization: `Bearer ${api.token}`,
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
      },
      body: initialize,
    });
    const session = init.headers.get("mcp-session-id")!;
    await init.text();
    const ping = JSON.stringify({ jsonrpc: "2.0", id: 5, method: "ping" });
    expect((await post(mcpUrl("ok"), ping, { "mcp-session-id": session })).status).toBe(200);
    // The same user through an API key is another principal.
    const key = await api.call<{ key: string }>("POST", "/auth/api-keys", { name: "other-principal" });
    await eventually(
      async () =>
        (await post(mcpUrl("ok"), initialize, { authorization: `Bearer ${key.body.key}` })).status === 200,
      3000,
    );
    const stolen = await post(mcpUrl("ok"), ping, {
      authorization: `Bearer ${key.body.key}`,
      "mcp-session-id": session,
    });
    expect(stolen.status).toBe(404);
  });

  it("answers an unsupported protocol version with 400", async () => {
    const res = await post(mcpUrl("ok"), JSON.stringify({ jsonrpc: "2.0", id: 3, method: "ping" }), {
      "mcp-protocol-version": "1999-01-01",
    });
    expect(res.status).toBe(400);
    expect(res.body?.error.message).toContain("2025-11-25");
  });

  it("checks the 2026-07-28 routing header against the body", async () => {
    const res = await post(mcpUrl("ok"), JSON.stringify({ jsonrpc: "2.0", id: 4, method: "tools/list" }), {
      "mcp-protocol-version": "2026-07-28",
      "mcp-method": "tools/call",
    });
    expect(res.status).toBe(400);
  });

  it("answers unknown servers with 404 and methods other than GET/POST/DELETE with 405", async () => {
    const unknown = await post(
      `${stack.dataPlanes[0]!.url}/servers/00000000-0000-4000-8000-000000000000/mcp`,
      initialize,
    );
    expect(unknown.status).toBe(404);
    const put = await fetch(mcpUrl("ok"), {
      method: "PUT",
      headers: { authorization: `Bearer ${api.token}` },
    });
    expect(put.status).toBe(405);
    expect(put.headers.get("allow")).toContain("POST");
    const getWithoutSession = await fetch(mcpUrl("ok"), {
      headers: { authorization: `Bearer ${api.token}`, accept: "text/event-stream" },
    });
    expect(getWithoutSession.status).toBe(400);
  });

  it("answers an upstream that refuses connections with 502", async () => {
    const res = await post(mcpUrl("refused"), initialize);
    expect(res.status).toBe(502);
    expect(res.body?.error.code).toBe(-32050);
    expect(res.body?.id).toBe(1);
  });

  it("answers an upstream that does not answer in time with 504", async () => {
    const started = Date.now();
    const res = await post(mcpUrl("hangs"), initialize);
    expect(res.status).toBe(504);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it("answers an upstream that is not an MCP server (an HTML page) with a JSON-RPC error naming the server", async () => {
    for (const [name, upstreamStatus] of [
      ["html404", 404],
      ["website", 200],
    ] as const) {
      const res = await post(mcpUrl(name), initialize);
      expect(res.status).toBe(502);
      expect(res.body?.error.code).toBe(-32050);
      expect(res.body?.error.message).toContain(`server '${name}'`);
      expect(res.body?.error.message).toContain(`HTTP ${upstreamStatus} (text/html)`);
      expect(JSON.stringify(res.body)).not.toContain("<");
    }
    // The official SDK client sees the gateway's message, not the page.
    const client = new Client({ name: "bad-input-sdk", version: "1" });
    const transport = new StreamableHTTPClientTransport(new URL(mcpUrl("html404")), {
      requestInit: { headers: { authorization: `Bearer ${api.token}` } },
    });
    const failure = await client.connect(transport).then(
      () => undefined,
      (err: Error) => err,
    );
    await client.close().catch(() => {});
    expect(failure?.message).toContain("did not answer MCP");
    expect(failure?.message).not.toContain("<!DOCTYPE");
  });

  it("is still up and serving after all of the above", async () => {
    const health = await fetch(`${stack.dataPlanes[0]!.url}/health`);
    expect(health.status).toBe(200);
    expect((await post(mcpUrl("ok"), initialize)).status).toBe(200);
    expect(stack.dataPlanes[0]!.proc.child.exitCode).toBeNull();
    expect(stack.dataPlanes[0]!.proc.output()).not.toMatch(/unhandled|uncaught/i);
  });
});
