import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  request,
  type Server,
  type ServerResponse,
} from "node:http";
import type { AddressInfo, Socket } from "node:net";
import type { Duplex } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import {
  createLogger,
  createMetricsRegistry,
  currentRequestId,
  type Logger,
  type Registry,
} from "@mcpgw/telemetry";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { matchRoute } from "../routes/table.ts";
import { asGatewayError, GatewayError, sendGatewayError } from "./errors.ts";
import { inRequestContext, Observer, requestIdOf } from "./observe.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const REQUESTS = "mcpgw_dp_http_requests_total";
const DURATION = "mcpgw_dp_http_request_duration_seconds";

type Handler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

/** The samples of one metric whose labels include `labels` (the registry adds `service`). */
async function samples(registry: Registry, name: string, labels: Record<string, string>, suffix = "") {
  const metric = registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  const { values } = await metric.get();
  return values.filter(
    (v) =>
      ((v as { metricName?: string }).metricName ?? name) === `${name}${suffix}` &&
      Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want),
  );
}

const total = async (registry: Registry, name: string, labels: Record<string, string>, suffix = "") =>
  (await samples(registry, name, labels, suffix)).reduce((sum, v) => sum + v.value, 0);

/** A deferred, to learn from the server side that a response has closed. */
function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** A raw node client request (arrays of header values, aborts); resolves with the response. */
function rawGet(base: string, path: string, headers: IncomingHttpHeaders | Record<string, string[]>) {
  const url = new URL(path, base);
  const req = request({ host: url.hostname, port: url.port, path, headers: headers as IncomingHttpHeaders });
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    req.once("response", resolve);
    req.once("error", reject);
  });
  // Tests that abort the request never read the response.
  response.catch(() => {});
  req.end();
  return { req, response };
}

/** The pino destination of a logger made by createLogger, to read the lines it writes. */
function captureLines(logger: Logger): string[] {
  const sym = Object.getOwnPropertySymbols(logger).find((s) => s.description === "pino.stream");
  if (!sym) throw new Error("pino changed: no stream symbol on the logger");
  const stream = (logger as unknown as Record<symbol, { write: (line: string) => boolean }>)[sym]!;
  const lines: string[] = [];
  vi.spyOn(stream, "write").mockImplementation((line: string) => {
    lines.push(line);
    return true;
  });
  return lines;
}

describe("Observer.http", () => {
  let server: Server;
  let base: string;
  let registry: Registry;
  let observer: Observer;
  let handler: Handler;

  beforeAll(async () => {
    server = createServer((req, res) => {
      const route = matchRoute(req.url ?? "");
      try {
        observer.http(req, res, route, () => {
          const served = handler(req, res);
          // As the data plane's handlers do: a failure is answered, never leaked.
          if (served) served.catch((err: unknown) => sendGatewayError(res, asGatewayError(err)));
        });
      } catch (err) {
        sendGatewayError(res, asGatewayError(err));
      }
    });
    server.listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  beforeEach(() => {
    registry = createMetricsRegistry("observe-test");
    observer = new Observer(registry);
    handler = (_req, res) => {
      res.end("ok");
    };
  });
  afterEach(() => {
    vi.restoreAllMocks();
  });

  describe("x-request-id", () => {
    it("echoes a sane client request id", async () => {
      let seen: string | undefined;
      handler = (req, res) => {
        seen = requestIdOf(req);
        res.end("ok");
      };
      const res = await fetch(`${base}/servers/srv_1/mcp`, { headers: { "x-request-id": "abc-123" } });
      expect(res.headers.get("x-request-id")).toBe("abc-123");
      expect(seen).toBe("abc-123");
      await res.text();
    });

    it("keeps a sane id of 128 characters", async () => {
      const id = `${"a".repeat(120)}:._@/+=-`;
      const res = await fetch(`${base}/mcp`, { headers: { "x-request-id": id } });
      expect(res.headers.get("x-request-id")).toBe(id);
      await res.text();
    });

    it.each([
      ["too long", "a".repeat(129)],
      ["with spaces", "abc 123"],
      ["with quotes", 'abc"123'],
      ["with a single quote", "abc'123"],
      ["with a semicolon", "abc;123"],
    ])("replaces an id %s with a new UUID", async (_what, id) => {
      const res = await fetch(`${base}/mcp`, { headers: { "x-request-id": id } });
      expect(res.headers.get("x-request-id")).toMatch(UUID);
      await res.text();
    });

    it("gives a request without an id a new UUID, a different one each time", async () => {
      const a = await fetch(`${base}/mcp`);
      const b = await fetch(`${base}/mcp`);
      expect(a.headers.get("x-request-id")).toMatch(UUID);
      expect(b.headers.get("x-request-id")).toMatch(UUID);
      expect(a.headers.get("x-request-id")).not.toBe(b.headers.get("x-request-id"));
      await Promise.all([a.text(), b.text()]);
    });

    it("replaces an id sent twice (several values) with a new UUID", async () => {
      let seen: string | undefined;
      handler = (req, res) => {
        seen = requestIdOf(req);
        res.end();
      };
      const { response } = rawGet(base, "/mcp", { "x-request-id": ["abc-123", "def-456"] });
      const res = await response;
      res.resume();
      expect(res.headers["x-request-id"]).toMatch(UUID);
      expect(seen).toBe(res.headers["x-request-id"]);
    });

    it("answers the id on a 404", async () => {
      handler = (_req, res) => sendGatewayError(res, new GatewayError("not_found", "no route"));
      const res = await fetch(`${base}/no/such/path`, { headers: { "x-request-id": "nf-1" } });
      expect(res.status).toBe(404);
      expect(res.headers.get("x-request-id")).toBe("nf-1");
      await res.text();
    });

    it("answers the id when the handler threw", async () => {
      handler = () => {
        throw new Error("secret detail");
      };
      const res = await fetch(`${base}/servers/srv_1/mcp`, { headers: { "x-request-id": "boom-1" } });
      expect(res.status).toBe(500);
      expect(res.headers.get("x-request-id")).toBe("boom-1");
      expect(await res.text()).not.toContain("secret");
      expect(await total(registry, REQUESTS, { route: "server.mcp", status: "500" })).toBe(1);
    });

    it("answers the id when an async handler rejected after an await", async () => {
      handler = async () => {
        await sleep(5);
        throw new Error("secret detail");
      };
      const res = await fetch(`${base}/ns/team/rpc`);
      expect(res.status).toBe(500);
      expect(res.headers.get("x-request-id")).toMatch(UUID);
      expect(await res.json()).toMatchObject({ error: { message: "internal gateway error" } });
    });
  });

  describe("metrics", () => {
    it("counts and times each request once, by route, transport and status", async () => {
      const closed: Array<Promise<void>> = [];
      handler = (_req, res) => {
        const done = deferred();
        res.once("close", () => done.resolve());
        closed.push(done.promise);
        res.writeHead(202).end();
      };
      for (let i = 0; i < 3; i++) await (await fetch(`${base}/servers/srv_1/mcp`, { method: "POST" })).text();
      // Both `finish` and `close` have fired on every response by now.
      await Promise.all(closed);
      expect(await total(registry, REQUESTS, { route: "server.mcp" })).toBe(3);
      expect(
        await total(registry, REQUESTS, { route: "server.mcp", transport: "streamable_http", status: "202" }),
      ).toBe(3);
      expect(await total(registry, DURATION, { route: "server.mcp" }, "_count")).toBe(3);
      expect(await total(registry, REQUESTS, { route: "other" })).toBe(0);
    });

    it("labels by the route table's names, never by tenant ids", async () => {
      handler = (_req, res) => {
        res.end();
      };
      await (await fetch(`${base}/servers/srv_secret_tenant/message?sessionId=s`)).text();
      await (await fetch(`${base}/ns/tenant-slug/rpc/batch`)).text();
      await (await fetch(`${base}/health`)).text();
      await vi.waitFor(async () => expect(await total(registry, REQUESTS, {})).toBe(3));
      expect(
        await total(registry, REQUESTS, { route: "server.message", transport: "sse", status: "200" }),
      ).toBe(1);
      expect(
        await total(registry, REQUESTS, {
          route: "namespace.rpc/batch",
          transport: "json_rpc",
          status: "200",
        }),
      ).toBe(1);
      expect(await total(registry, REQUESTS, { route: "health", transport: "rest", status: "200" })).toBe(1);
      expect(await registry.metrics()).not.toMatch(/srv_secret_tenant|tenant-slug/);
    });

    it("counts a 404 under `other`", async () => {
      handler = (_req, res) => sendGatewayError(res, new GatewayError("not_found", "no route"));
      await (await fetch(`${base}/nope`)).text();
      await vi.waitFor(async () =>
        expect(await total(registry, REQUESTS, { route: "other", transport: "rest", status: "404" })).toBe(1),
      );
      expect(await total(registry, DURATION, { route: "other" }, "_count")).toBe(1);
    });

    it("counts a stream the client left mid-response once, with the status it was sent, timed until it ended", async () => {
      const closed = deferred();
      handler = (_req, res) => {
        res.once("close", () => closed.resolve());
        res.writeHead(200, { "content-type": "text/event-stream" });
        res.write("data: first\n\n");
      };
      const { req, response } = rawGet(base, "/servers/srv_1/sse", {});
      req.on("error", () => {});
      const res = await response;
      await new Promise((r) => res.once("data", r));
      await sleep(60);
      req.destroy();
      await closed.promise;
      await sleep(20);
      expect(await total(registry, REQUESTS, { route: "server.sse" })).toBe(1);
      expect(await total(registry, REQUESTS, { route: "server.sse", transport: "sse", status: "200" })).toBe(
        1,
      );
      expect(await total(registry, DURATION, { route: "server.sse" }, "_count")).toBe(1);
      expect(await total(registry, DURATION, { route: "server.sse" }, "_sum")).toBeGreaterThanOrEqual(0.05);
    });

    it("counts a request the client left before any answer once, as status 0", async () => {
      const arrived = deferred();
      const closed = deferred();
      handler = (_req, res) => {
        res.once("close", () => closed.resolve());
        arrived.resolve();
      };
      const { req } = rawGet(base, "/servers/srv_1/mcp", {});
      req.on("error", () => {});
      await arrived.promise;
      req.destroy();
      await closed.promise;
      await sleep(20);
      expect(await total(registry, REQUESTS, { route: "server.mcp" })).toBe(1);
      expect(
        await total(registry, REQUESTS, { route: "server.mcp", transport: "streamable_http", status: "0" }),
      ).toBe(1);
      expect(await total(registry, DURATION, { route: "server.mcp" }, "_count")).toBe(1);
    });
  });

  describe("request context", () => {
    it("makes the request id current inside the handler, also after awaits", async () => {
      handler = async (req, res) => {
        const before = currentRequestId();
        await sleep(5);
        await Promise.resolve();
        const after = currentRequestId();
        res.end(JSON.stringify({ before, after, of: requestIdOf(req) }));
      };
      const res = await fetch(`${base}/servers/srv_1/rpc`);
      const id = res.headers.get("x-request-id");
      expect(id).toMatch(UUID);
      expect(await res.json()).toEqual({ before: id, after: id, of: id });
      expect(currentRequestId()).toBeUndefined();
    });

    it("leaves the byte relay's route outside the context until its handler enters it", async () => {
      handler = async (req, res) => {
        const outside = currentRequestId();
        const inside = await inRequestContext(req, async () => {
          await sleep(5);
          return currentRequestId();
        });
        res.end(JSON.stringify({ outside: outside ?? null, inside, of: requestIdOf(req) }));
      };
      const res = await fetch(`${base}/servers/srv_1/mcp`, { headers: { "x-request-id": "relay-1" } });
      expect(res.headers.get("x-request-id")).toBe("relay-1");
      expect(await res.json()).toEqual({ outside: null, inside: "relay-1", of: "relay-1" });
    });

    it("keeps concurrent requests' ids apart", async () => {
      handler = async (req, res) => {
        // The first request waits longest, so their continuations interleave.
        await sleep(req.headers["x-request-id"] === "first" ? 40 : 5);
        res.end(currentRequestId());
      };
      const [a, b] = await Promise.all([
        fetch(`${base}/mcp`, { headers: { "x-request-id": "first" } }),
        fetch(`${base}/mcp`, { headers: { "x-request-id": "second" } }),
      ]);
      expect(await a.text()).toBe("first");
      expect(await b.text()).toBe("second");
    });

    it("adds request_id to every line the service's logger writes while serving", async () => {
      const logger = createLogger("observe-test", "info");
      const lines = captureLines(logger);
      handler = async (_req, res) => {
        logger.info({ step: 1 }, "serving");
        await sleep(5);
        logger.warn("after an await");
        res.end();
      };
      logger.info("outside any request");
      const res = await fetch(`${base}/servers/srv_1/sse`, { headers: { "x-request-id": "log-7" } });
      await res.text();
      const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      expect(parsed).toHaveLength(3);
      expect(parsed[0]).toMatchObject({ msg: "outside any request", service: "observe-test" });
      expect(parsed[0]).not.toHaveProperty("request_id");
      expect(parsed[1]).toMatchObject({ msg: "serving", step: 1, request_id: "log-7" });
      expect(parsed[2]).toMatchObject({ msg: "after an await", request_id: "log-7" });
    });
  });
});

describe("Observer.upgrade", () => {
  let server: Server;
  let base: string;
  let registry: Registry;
  let observer: Observer;
  let seen: { requestId: string | undefined; current: string | undefined } | undefined;
  let answer: (settled: (status: number) => void, socket: Duplex) => void;
  const sockets = new Set<Duplex>();

  beforeAll(async () => {
    server = createServer((_req, res) => res.end());
    server.on("upgrade", (req: IncomingMessage, socket: Duplex) => {
      // Upgraded sockets leave the server's connection tracking: closed here in afterAll.
      sockets.add(socket);
      observer.upgrade(req, matchRoute(req.url ?? ""), (settled) => {
        seen = { requestId: requestIdOf(req), current: currentRequestId() };
        answer(settled, socket);
      });
    });
    server.listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  beforeEach(() => {
    registry = createMetricsRegistry("observe-upgrade-test");
    observer = new Observer(registry);
    seen = undefined;
  });

  const upgradeHeaders = (id?: string) => ({
    connection: "Upgrade",
    upgrade: "websocket",
    ...(id ? { "x-request-id": id } : {}),
  });

  it("counts an upgrade once, with the first status it settled with", async () => {
    const upgraded = deferred<void>();
    answer = (settled, socket) => {
      settled(101);
      socket.write("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n");
      // Later reports (the socket failing, a refusal path running too) change nothing.
      settled(500);
      settled(403);
      socket.once("close", () => settled(1006));
      upgraded.resolve();
    };
    const url = new URL(base);
    const req = request({
      host: url.hostname,
      port: url.port,
      path: "/servers/srv_1/ws",
      headers: upgradeHeaders("ws-1"),
    });
    const clientSocket = new Promise<Socket>((resolve) =>
      req.once("upgrade", (_res, socket) => resolve(socket)),
    );
    req.end();
    (await clientSocket).destroy();
    await upgraded.promise;
    await sleep(20);
    expect(seen).toEqual({ requestId: "ws-1", current: "ws-1" });
    expect(await total(registry, REQUESTS, { route: "server.ws" })).toBe(1);
    expect(
      await total(registry, REQUESTS, { route: "server.ws", transport: "websocket", status: "101" }),
    ).toBe(1);
    expect(await total(registry, DURATION, { route: "server.ws" }, "_count")).toBe(1);
  });

  it("counts a refused upgrade under the refusal's status, with a new id for an insane one", async () => {
    answer = (settled, socket) => {
      settled(403);
      settled(101);
      socket.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    };
    const { response } = rawGet(base, "/ns/team/ws", upgradeHeaders("not sane"));
    const res = await response;
    res.resume();
    expect(res.statusCode).toBe(403);
    expect(seen?.requestId).toMatch(UUID);
    expect(seen?.current).toBe(seen?.requestId);
    expect(await total(registry, REQUESTS, { route: "namespace.ws" })).toBe(1);
    expect(
      await total(registry, REQUESTS, { route: "namespace.ws", transport: "websocket", status: "403" }),
    ).toBe(1);
  });
});
