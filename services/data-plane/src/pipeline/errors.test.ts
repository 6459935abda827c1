import {
  createServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from "node:http";
import type { AddressInfo } from "node:net";
import { JsonRpcErrorCode } from "@mcpgw/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  asGatewayError,
  closeReason,
  GATEWAY_ERRORS,
  GatewayError,
  type GatewayErrorKind,
  problemResponse,
  problemType,
  sendGatewayError,
  sendProblem,
} from "./errors.ts";

const KINDS = Object.keys(GATEWAY_ERRORS) as GatewayErrorKind[];

describe("GATEWAY_ERRORS", () => {
  it.each(KINDS)("gives %s an HTTP error status, a JSON-RPC error code and a usable close code", (kind) => {
    const { status, rpc, ws, title } = GATEWAY_ERRORS[kind];
    expect(status).toBeGreaterThanOrEqual(400);
    expect(status).toBeLessThan(600);
    // JSON-RPC 2.0 §5.1: -32768..-32000 is reserved for pre-defined and implementation errors.
    expect(Number.isInteger(rpc)).toBe(true);
    expect(rpc).toBeGreaterThanOrEqual(-32768);
    expect(rpc).toBeLessThanOrEqual(-32000);
    expect(Number.isInteger(ws)).toBe(true);
    expect((ws >= 1000 && ws <= 1015) || (ws >= 4000 && ws <= 4999)).toBe(true);
    // RFC 6455 §7.4.1: 1005, 1006 and 1015 must never be sent in a Close frame.
    expect([1005, 1006, 1015]).not.toContain(ws);
    // The application range mirrors the HTTP status (4401, 4403, …).
    if (ws >= 4000) expect(ws).toBe(4000 + status);
    expect(title).toBe(STATUS_CODES[status]);
  });

  it("names every kind with its own problem type URN", () => {
    const types = KINDS.map(problemType);
    expect(new Set(types).size).toBe(KINDS.length);
    for (const type of types) expect(type).toMatch(/^urn:mcpgw:problem:[a-z]+(-[a-z]+)*$/);
    expect(problemType("rate_limited")).toBe("urn:mcpgw:problem:rate-limited");
    expect(problemType("upstream_timeout")).toBe("urn:mcpgw:problem:upstream-timeout");
  });

  it("uses the MCP gateway codes for the refusals clients act on", () => {
    expect(GATEWAY_ERRORS.unauthorized.rpc).toBe(JsonRpcErrorCode.Unauthorized);
    expect(GATEWAY_ERRORS.forbidden.rpc).toBe(JsonRpcErrorCode.Forbidden);
    expect(GATEWAY_ERRORS.rate_limited).toMatchObject({
      status: 429,
      rpc: JsonRpcErrorCode.RateLimited,
      ws: 4429,
    });
    expect(GATEWAY_ERRORS.parse_error).toMatchObject({
      status: 400,
      rpc: JsonRpcErrorCode.ParseError,
      ws: 1007,
    });
    expect(GATEWAY_ERRORS.too_large).toMatchObject({ status: 413, ws: 1009 });
  });
});

describe("GatewayError", () => {
  it("takes status, JSON-RPC code and close code from its kind", () => {
    const err = new GatewayError("forbidden", "no");
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe("GatewayError");
    expect(err.message).toBe("no");
    expect(err.status).toBe(403);
    expect(err.rpcCode).toBe(JsonRpcErrorCode.Forbidden);
    expect(err.wsCode).toBe(4403);
  });

  it("lets a precise JSON-RPC code override the kind's default, without changing status or close code", () => {
    const err = new GatewayError("bad_request", "unsupported protocol version", {
      rpcCode: JsonRpcErrorCode.UnsupportedProtocolVersion,
    });
    expect(err.rpcCode).toBe(-32022);
    expect(err.status).toBe(400);
    expect(err.wsCode).toBe(1008);
    expect(err.toJsonRpc(1).error.code).toBe(-32022);
  });

  it("adds Retry-After to the error's own headers, without touching them", () => {
    const own = { "www-authenticate": 'Bearer realm="mcp"' };
    const err = new GatewayError("rate_limited", "slow down", { retryAfterS: 7, headers: own });
    expect(err.headers()).toEqual({ "www-authenticate": 'Bearer realm="mcp"', "retry-after": "7" });
    expect(own).toEqual({ "www-authenticate": 'Bearer realm="mcp"' });
    expect(new GatewayError("rate_limited", "now", { retryAfterS: 0 }).headers()).toEqual({
      "retry-after": "0",
    });
    expect(new GatewayError("forbidden", "no").headers()).toEqual({});
  });

  it("renders a JSON-RPC error response for the request id, with data only when there is some", () => {
    const err = new GatewayError("not_found", "unknown server srv_x", { data: { server: "srv_x" } });
    expect(err.toJsonRpc("req-1")).toEqual({
      jsonrpc: "2.0",
      id: "req-1",
      error: { code: JsonRpcErrorCode.NotFound, message: "unknown server srv_x", data: { server: "srv_x" } },
    });
    const bare = new GatewayError("internal", "internal gateway error").toJsonRpc(null);
    expect(bare).toEqual({
      jsonrpc: "2.0",
      id: null,
      error: { code: JsonRpcErrorCode.InternalError, message: "internal gateway error" },
    });
    expect("data" in bare.error).toBe(false);
  });
});

describe("asGatewayError", () => {
  it("passes a gateway error through as it is", () => {
    const err = new GatewayError("forbidden", "no");
    expect(asGatewayError(err)).toBe(err);
  });

  it.each([
    ["an Error", new Error("secret detail: postgres://user:pw@db/prod")],
    ["a TypeError", new TypeError("secret detail")],
    ["a string", "secret detail"],
    ["an object", { message: "secret detail", status: 403 }],
    ["undefined", undefined],
  ])("turns %s into an internal error that leaks nothing", (_what, thrown) => {
    const err = asGatewayError(thrown);
    expect(err).toBeInstanceOf(GatewayError);
    expect(err.kind).toBe("internal");
    expect(err.status).toBe(500);
    expect(err.message).toBe("internal gateway error");
    expect(err.options).toEqual({});
    expect(JSON.stringify(err.toJsonRpc(1))).not.toContain("secret");
    expect(JSON.stringify(err.headers())).not.toContain("secret");
  });
});

describe("sending errors over HTTP", () => {
  let server: Server;
  let base: string;
  let handler: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.end();

  beforeAll(async () => {
    server = createServer((req, res) => handler(req, res));
    server.listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  it("sendGatewayError answers with the kind's status and a JSON-RPC body as application/json", async () => {
    handler = (_req, res) =>
      sendGatewayError(
        res,
        new GatewayError("unauthorized", "Unauthorized: invalid API key", {
          headers: { "www-authenticate": 'Bearer resource_metadata="x"' },
        }),
        7,
      );
    const res = await fetch(`${base}/servers/srv/mcp`);
    expect(res.status).toBe(401);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(res.headers.get("www-authenticate")).toBe('Bearer resource_metadata="x"');
    expect(res.headers.get("retry-after")).toBeNull();
    const text = await res.text();
    expect(res.headers.get("content-length")).toBe(String(Buffer.byteLength(text)));
    expect(JSON.parse(text)).toEqual({
      jsonrpc: "2.0",
      id: 7,
      error: { code: JsonRpcErrorCode.Unauthorized, message: "Unauthorized: invalid API key" },
    });
  });

  it("sendGatewayError sends Retry-After, a null id by default, and an explicit status when given", async () => {
    handler = (_req, res) =>
      sendGatewayError(
        res,
        new GatewayError("rate_limited", "rate limit exceeded — réessayez", {
          retryAfterS: 3,
          data: { retry_after: 3 },
        }),
      );
    const limited = await fetch(`${base}/mcp`);
    expect(limited.status).toBe(429);
    expect(limited.headers.get("retry-after")).toBe("3");
    const text = await limited.text();
    // Multi-byte characters: content-length counts bytes, not characters.
    expect(limited.headers.get("content-length")).toBe(String(Buffer.byteLength(text)));
    expect(JSON.parse(text)).toEqual({
      jsonrpc: "2.0",
      id: null,
      error: {
        code: JsonRpcErrorCode.RateLimited,
        message: "rate limit exceeded — réessayez",
        data: { retry_after: 3 },
      },
    });

    handler = (_req, res) => sendGatewayError(res, new GatewayError("forbidden", "no"), "a", 200);
    const ok = await fetch(`${base}/mcp`);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({ id: "a", error: { code: JsonRpcErrorCode.Forbidden } });
  });

  it("sendProblem answers with RFC 9457 problem+json", async () => {
    handler = (req, res) =>
      sendProblem(
        res,
        new GatewayError("rate_limited", "too many broadcasts", {
          retryAfterS: 5,
          data: { rule: "rl_1" },
          headers: { ratelimit: '"rl_1";r=0;t=5' },
        }),
        req.url ?? "",
        "req-42",
      );
    const res = await fetch(`${base}/sse/broadcast`);
    expect(res.status).toBe(429);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect(res.headers.get("retry-after")).toBe("5");
    expect(res.headers.get("ratelimit")).toBe('"rl_1";r=0;t=5');
    expect(await res.json()).toEqual({
      type: "urn:mcpgw:problem:rate-limited",
      title: "Too Many Requests",
      status: 429,
      detail: "too many broadcasts",
      instance: "/sse/broadcast",
      request_id: "req-42",
      rule: "rl_1",
      retry_after: 5,
    });
  });

  it("sendProblem leaves out the instance and request id it was not given", async () => {
    handler = (_req, res) => sendProblem(res, new GatewayError("not_found", "no such session"), "");
    const res = await fetch(`${base}/ws/send`);
    expect(res.status).toBe(404);
    expect(res.headers.get("retry-after")).toBeNull();
    expect(await res.json()).toEqual({
      type: "urn:mcpgw:problem:not-found",
      title: "Not Found",
      status: 404,
      detail: "no such session",
    });
  });

  it.each([
    [
      "sendGatewayError",
      (res: ServerResponse) => sendGatewayError(res, new GatewayError("internal", "late")),
    ],
    ["sendProblem", (res: ServerResponse) => sendProblem(res, new GatewayError("internal", "late"), "/x")],
  ])("%s destroys the socket once the response headers are out", async (_name, send) => {
    let sentAfter: string | undefined;
    handler = (_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write("data: first\n\n", () => {
        send(res);
        sentAfter = `${res.statusCode} ${res.destroyed}`;
      });
    };
    const res = await fetch(`${base}/servers/srv/sse`);
    expect(res.status).toBe(200);
    // The stream is cut, not finished: reading it to the end fails.
    await expect(res.text()).rejects.toThrow();
    expect(sentAfter).toBe("200 true");
  });
});

describe("problemResponse", () => {
  it("builds a problem+json Response with the error's headers", async () => {
    const res = problemResponse(
      new GatewayError("unavailable", "draining", { retryAfterS: 10, data: { replica: "dp-1" } }),
      "req-9",
      "/ready",
    );
    expect(res.status).toBe(503);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect(res.headers.get("retry-after")).toBe("10");
    expect(await res.json()).toEqual({
      type: "urn:mcpgw:problem:unavailable",
      title: "Service Unavailable",
      status: 503,
      detail: "draining",
      instance: "/ready",
      request_id: "req-9",
      replica: "dp-1",
      retry_after: 10,
    });
  });

  it("leaves out request id and instance when not given", async () => {
    const res = problemResponse(new GatewayError("forbidden", "no"));
    expect(res.headers.get("retry-after")).toBeNull();
    expect(await res.json()).toEqual({
      type: "urn:mcpgw:problem:forbidden",
      title: "Forbidden",
      status: 403,
      detail: "no",
    });
  });
});

describe("closeReason", () => {
  it("never leaves half of a surrogate pair at the cut", () => {
    const out = closeReason(`${"a".repeat(120)}😀b`);
    expect(Buffer.byteLength(out)).toBeLessThanOrEqual(123);
    expect(Buffer.from(out, "utf8").toString("utf8")).toBe(out);
    expect(out).toBe("a".repeat(120));
  });

  it("keeps a reason that fits in 123 bytes as it is", () => {
    expect(closeReason("")).toBe("");
    expect(closeReason("server 'git' is disabled")).toBe("server 'git' is disabled");
    const exact = "x".repeat(123);
    expect(closeReason(exact)).toBe(exact);
  });

  it("cuts a long ASCII reason to 123 bytes", () => {
    const out = closeReason("y".repeat(500));
    expect(out).toBe("y".repeat(123));
  });

  it.each([
    ["two-byte", "é"],
    ["three-byte", "€"],
  ])("cuts a reason of %s characters on a character boundary, within 123 bytes", (_what, char) => {
    const message = `${"a".repeat(3)}${char.repeat(100)}`;
    const out = closeReason(message);
    expect(Buffer.byteLength(out)).toBeLessThanOrEqual(123);
    // As long as possible: one more character would not fit.
    expect(Buffer.byteLength(message.slice(0, out.length + 1))).toBeGreaterThan(123);
    expect(message.startsWith(out)).toBe(true);
    expect(Buffer.from(out, "utf8").toString("utf8")).toBe(out);
  });

  it("drops a four-byte character that does not fit whole", () => {
    const out = closeReason(`${"a".repeat(121)}😀`);
    expect(out).toBe("a".repeat(121));
  });
});
