import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { WebSocketClientTransport } from "@modelcontextprotocol/sdk/client/websocket.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket as NodeWebSocket } from "ws";
import {
  type Api,
  eventually,
  everythingEntry,
  registerStdioServer,
  type Stack,
  startStack,
  startTestUpstream,
  type TestUpstream,
} from "../../../packages/testing/src/index.ts";

/**
 * Configuration reaches sessions that are already open: for every client transport (and a
 * session living in another replica), a session opened before a change obeys it soon after.
 * The requirement is about a second once the snapshot lands; a slow shared runner gets more.
 */
const REFUSED_WITHIN_MS = 5000;

type Outcome = { ok: true } | { ok: false; detail: string };
type Credential = Record<string, string>;

interface Probe {
  name: string;
  call(): Promise<Outcome>;
  close(): Promise<void>;
}

const TRANSPORTS = [
  "streamable_http byte relay",
  "streamable_http message-level",
  "legacy sse",
  "websocket",
  "json-rpc",
  "namespace aggregate",
  "session forwarded to another replica",
] as const;

describe("configuration reaches open sessions on every transport", () => {
  let stack: Stack;
  let api: Api;
  let upstream: TestUpstream;
  let httpId: string;
  let stdioId: string;
  /** WebSocket close codes seen by the test's clients, by probe. */
  const wsCloses = new Map<string, number>();

  const dp = (i: number) => stack.dataPlanes[i]!.url;

  /** What a thrown client error says, for the assertion messages. */
  const describeError = (err: unknown) => {
    const e = err as { code?: unknown; message?: string };
    return `${String(e.code ?? "")} ${e.message ?? String(err)}`;
  };

  async function sdkProbe(
    name: string,
    transport: () => unknown,
    tool: string,
    args: object,
  ): Promise<Probe> {
    const client = new Client({ name: `live-${name}`, version: "1" });
    const opened = transport() as Parameters<Client["connect"]>[0];
    await client.connect(opened);
    let toolName = tool;
    if (tool.startsWith("*")) {
      // A namespace: the stdio member's tool under its qualified name.
      const { tools } = await client.listTools();
      toolName = tools
        .map((t) => t.name)
        .find((n) => n.startsWith("live-stdio") && n.endsWith(tool.slice(1)))!;
      expect(toolName, "the namespace lists the stdio member's echo").toBeDefined();
    }
    return {
      name,
      call: async () => {
        try {
          const r = await client.callTool({ name: toolName, arguments: args as Record<string, unknown> });
          return r.isError ? { ok: false, detail: `tool error ${JSON.stringify(r.content)}` } : { ok: true };
        } catch (err) {
          return { ok: false, detail: describeError(err) };
        }
      },
      // A well-behaved client ends its Streamable HTTP session (DELETE), freeing its stdio process
      // at once; one that only hangs up holds it until the idle reaper or a reclaim.
      close: async () => {
        if (opened instanceof StreamableHTTPClientTransport) await opened.terminateSession().catch(() => {});
        await client.close().catch(() => {});
      },
    };
  }

  /** One JSON-RPC message from a JSON or SSE response body. */
  async function message(res: Response): Promise<Record<string, unknown> | undefined> {
    const text = await res.text();
    if ((res.headers.get("content-type") ?? "").includes("text/event-stream")) {
      for (const line of text.split("\n"))
        if (line.startsWith("data:") && line.slice(5).trim()) {
          const m = JSON.parse(line.slice(5)) as Record<string, unknown>;
          if ("id" in m) return m;
        }
      return undefined;
    }
    return text ? (JSON.parse(text) as Record<string, unknown>) : undefined;
  }

  /** The outcome of a raw call: a result, or the status and error it was refused with. */
  async function rawOutcome(res: Response): Promise<Outcome> {
    const m = await message(res).catch(() => undefined);
    if (res.ok && m && "result" in m && !(m.result as { isError?: boolean }).isError) return { ok: true };
    return { ok: false, detail: `HTTP ${res.status} ${JSON.stringify(m?.error ?? m)}` };
  }

  async function openProbes(cred: Credential): Promise<Probe[]> {
    const headers = { ...cred };
    const requestInit = { headers };
    const eventSourceInit = {
      fetch: (url: string | URL, init?: RequestInit) =>
        fetch(url, { ...init, headers: { ...(init?.headers as Record<string, string>), ...headers } }),
    };
    const echoArgs = { message: "live" };
    const probes: Probe[] = [];
    probes.push(
      await sdkProbe(
        TRANSPORTS[0],
        () => new StreamableHTTPClientTransport(new URL(`${dp(0)}/servers/${httpId}/mcp`), { requestInit }),
        "echo",
        { text: "live" },
      ),
    );
    probes.push(
      await sdkProbe(
        TRANSPORTS[1],
        () => new StreamableHTTPClientTransport(new URL(`${dp(0)}/servers/${stdioId}/mcp`), { requestInit }),
        "echo",
        echoArgs,
      ),
    );
    probes.push(
      await sdkProbe(
        TRANSPORTS[2],
        () =>
          new SSEClientTransport(new URL(`${dp(0)}/servers/${stdioId}/sse`), {
            requestInit,
            eventSourceInit,
          }),
        "echo",
        echoArgs,
      ),
    );
    // The SDK's WebSocket transport uses the global WebSocket; Node 20 has none, so lend it ws
    // with the credential in the upgrade request, and note how the gateway closes it.
    (globalThis as { WebSocket?: unknown }).WebSocket = class extends NodeWebSocket {
      constructor(url: string | URL, protocols?: string | string[]) {
        super(url, protocols, { headers });
        this.on("close", (code: number) => wsCloses.set(TRANSPORTS[3], code));
      }
    };
    wsCloses.delete(TRANSPORTS[3]);
    probes.push(
      await sdkProbe(
        TRANSPORTS[3],
        () => new WebSocketClientTransport(new URL(`${dp(0).replace(/^http/, "ws")}/servers/${stdioId}/ws`)),
        "echo",
        echoArgs,
      ),
    );
    let rpcId = 0;
    probes.push({
      name: TRANSPORTS[4],
      call: async () =>
        rawOutcome(
          await fetch(`${dp(0)}/servers/${stdioId}/rpc`, {
            method: "POST",
            headers: { ...headers, "content-type": "application/json" },
            body: JSON.stringify({
              jsonrpc: "2.0",
              id: ++rpcId,
              method: "tools/call",
              params: { name: "echo", arguments: echoArgs },
            }),
          }),
        ),
      close: async () => {},
    });
    probes.push(
      await sdkProbe(
        TRANSPORTS[5],
        () => new StreamableHTTPClientTransport(new URL(`${dp(0)}/ns/live/mcp`), { requestInit }),
        "*echo",
        echoArgs,
      ),
    );
    probes.push(await forwardedProbe(headers));
    return probes;
  }

  /** A Streamable HTTP session opened on replica 0 (its stdio process lives there), used through replica 1. */
  async function forwardedProbe(headers: Credential): Promise<Probe> {
    const mcpHeaders = {
      ...headers,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": "2025-11-25",
    };
    const init = await fetch(`${dp(0)}/servers/${stdioId}/mcp`, {
      method: "POST",
      headers: mcpHeaders,
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 0,
        method: "initialize",
        params: {
          protocolVersion: "2025-11-25",
          capabilities: {},
          clientInfo: { name: "fwd", version: "1" },
        },
      }),
    });
    expect(init.status).toBe(200);
    const sessionId = init.headers.get("mcp-session-id")!;
    await message(init);
    const initialized = await fetch(`${dp(1)}/servers/${stdioId}/mcp`, {
      method: "POST",
      headers: { ...mcpHeaders, "mcp-session-id": sessionId },
      body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
    });
    expect(initialized.status).toBe(202);
    await initialized.body?.cancel();
    let id = 0;
    return {
      name: TRANSPORTS[6],
      call: async () =>
        rawOutcome(
          await fetch(`${dp(1)}/servers/${stdioId}/mcp`, {
            method: "POST",
            headers: { ...mcpHeaders, "mcp-session-id": sessionId },
            body: JSON.stringify({
              jsonrpc: "2.0",
              id: ++id,
              method: "tools/call",
              params: { name: "echo", arguments: { message: "live" } },
            }),
          }),
        ),
      close: async () => {
        await fetch(`${dp(0)}/servers/${stdioId}/mcp`, {
          method: "DELETE",
          headers: { ...mcpHeaders, "mcp-session-id": sessionId },
        }).catch(() => {});
      },
    };
  }

  /**
   * Opens every transport's session with `cred` (once the credential works everywhere), checks
   * each calls the tool, applies `change`, and returns how each was refused and how soon.
   */
  async function afterChange(
    cred: Credential,
    change: () => Promise<void>,
  ): Promise<Array<{ name: string; ms: number; detail: string }>> {
    const probes = await openProbes(cred);
    try {
      for (const p of probes) {
        const first = await p.call();
        expect(first, `${p.name} calls the tool before the change`).toEqual({ ok: true });
      }
      await change();
      const started = Date.now();
      return await Promise.all(
        probes.map(async (p) => {
          let last: Outcome = { ok: true };
          while (Date.now() - started < REFUSED_WITHIN_MS) {
            last = await p.call();
            if (!last.ok) return { name: p.name, ms: Date.now() - started, detail: last.detail };
            await new Promise((r) => setTimeout(r, 50));
          }
          throw new Error(
            `${p.name}: still served ${REFUSED_WITHIN_MS} ms after the change (${JSON.stringify(last)})`,
          );
        }),
      );
    } finally {
      await Promise.all(probes.map((p) => p.close()));
    }
  }

  /** A credential that works on both replicas (the snapshot with it has landed, no rule refuses it). */
  async function usable(cred: Credential): Promise<Credential> {
    for (const i of [0, 1])
      await eventually(async () => {
        const res = await fetch(`${dp(i)}/servers/${httpId}/mcp`, {
          method: "POST",
          headers: {
            ...cred,
            "content-type": "application/json",
            accept: "application/json, text/event-stream",
          },
          body: JSON.stringify({
            jsonrpc: "2.0",
            id: 1,
            method: "initialize",
            params: {
              protocolVersion: "2025-11-25",
              capabilities: {},
              clientInfo: { name: "usable", version: "1" },
            },
          }),
        });
        await res.body?.cancel();
        return res.status === 200;
      }, 10_000);
    return cred;
  }

  const admin = () => ({ authorization: `Bearer ${api.token}` });

  beforeAll(async () => {
    [stack, upstream] = await Promise.all([
      startStack({ replicas: 2, env: { MCPGW_STDIO_ALLOWED_COMMANDS: process.execPath } }),
      startTestUpstream(),
    ]);
    api = await stack.api();
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", { name: "Live", slug: "live" });
    expect(ns.status).toBe(201);
    const http = await api.call<{ id: string }>("POST", "/api/v1/servers", {
      namespace_id: ns.body.id,
      name: "live-http",
      transport: "streamable_http",
      url: upstream.url,
    });
    expect(http.status).toBe(201);
    httpId = http.body.id;
    stdioId = (
      await registerStdioServer(api, {
        namespace_id: ns.body.id,
        name: "live-stdio",
        command: process.execPath,
        args: [everythingEntry, "stdio"],
      })
    ).id;
    await usable(admin());
    await eventually(async () => {
      const res = await fetch(`${dp(1)}/servers/${stdioId}/rpc`, {
        method: "POST",
        headers: { ...admin(), "content-type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
      });
      await res.body?.cancel();
      return res.status === 200;
    }, 20_000);
  }, 120_000);

  afterAll(async () => {
    await Promise.all([stack?.stop(), upstream?.close()]);
  });

  function expectRefusals(results: Array<{ name: string; ms: number; detail: string }>, reason: RegExp) {
    const ended = new RegExp(`${reason.source}|not connected|connection closed`, "i");
    expect(results.map((r) => r.name)).toEqual([...TRANSPORTS]);
    for (const r of results) {
      // Legacy SSE and WebSocket sessions are their stream: once the gateway ends one, its
      // client knows it is no longer connected.
      const pattern = r.name === "legacy sse" || r.name === "websocket" ? ended : reason;
      expect(r.detail, `${r.name} after ${r.ms} ms`).toMatch(pattern);
      expect(r.ms, r.name).toBeLessThan(REFUSED_WITHIN_MS);
    }
  }

  it("a deny policy created while sessions are open refuses the tool on each of them", async () => {
    let policyId = "";
    const results = await afterChange(admin(), async () => {
      const p = await api.call<{ id: string }>("POST", "/api/v1/policies", {
        name: "no echo",
        effect: "deny",
        tools: ["echo"],
      });
      expect(p.status).toBe(201);
      policyId = p.body.id;
    });
    expectRefusals(results, /-32003|denied|policy/i);
    expect((await api.call("DELETE", `/api/v1/policies/${policyId}`)).status).toBe(204);
    // The tool is back (the next test starts from a snapshot without the policy).
    await eventually(async () => {
      const res = await fetch(`${dp(0)}/servers/${stdioId}/rpc`, {
        method: "POST",
        headers: { ...admin(), "content-type": "application/json" },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 1,
          method: "tools/call",
          params: { name: "echo", arguments: { message: "x" } },
        }),
      });
      return ((await res.json()) as { result?: unknown }).result !== undefined;
    }, 10_000);
  }, 120_000);

  it("a rate-limit rule lowered to 0 refuses the next call on each of them", async () => {
    const rule = await api.call<{ id: string }>("POST", "/api/v1/rate-limits", {
      name: "org calls",
      scope: "org",
      limit: 100_000,
      window_s: 60,
    });
    expect(rule.status, JSON.stringify(rule.body)).toBe(201);
    await new Promise((r) => setTimeout(r, 500));
    const results = await afterChange(admin(), async () => {
      const lowered = await api.call("PATCH", `/api/v1/rate-limits/${rule.body.id}`, { limit: 0 });
      expect(lowered.status, JSON.stringify(lowered.body)).toBe(200);
    });
    expectRefusals(results, /-32029|429|rate limit/i);
    expect((await api.call("DELETE", `/api/v1/rate-limits/${rule.body.id}`)).status).toBe(204);
    await usable(admin());
  }, 120_000);

  it("a disabled server ends its sessions (WebSocket: close 4403) and refuses the namespace's calls to it", async () => {
    const results = await afterChange(admin(), async () => {
      for (const id of [stdioId, httpId])
        expect((await api.call("PATCH", `/api/v1/servers/${id}`, { enabled: false })).status).toBe(200);
    });
    expectRefusals(results, /disabled|403/i);
    await eventually(() => wsCloses.get("websocket") !== undefined, 5000);
    expect(wsCloses.get("websocket")).toBe(4403);
    for (const id of [stdioId, httpId])
      expect((await api.call("PATCH", `/api/v1/servers/${id}`, { enabled: true })).status).toBe(200);
    await usable(admin());
  }, 120_000);

  it("a revoked API key ends the sessions it opened (WebSocket: close 4401)", async () => {
    const key = await api.call<{ id: string; key: string }>("POST", "/auth/api-keys", { name: "live key" });
    expect(key.status).toBe(201);
    const cred = await usable({ "x-api-key": key.body.key });
    const results = await afterChange(cred, async () => {
      expect((await api.call("DELETE", `/api/v1/api-keys/${key.body.id}`)).status).toBe(204);
    });
    expectRefusals(results, /revoked|invalid API key|401|-32001/i);
    await eventually(() => wsCloses.get("websocket") !== undefined, 5000);
    expect(wsCloses.get("websocket")).toBe(4401);
  }, 120_000);

  it("a logged-out token ends the sessions it opened", async () => {
    const email = "live@config.test";
    const password = "live config password long enough";
    expect((await api.call("POST", "/api/v1/users", { email, password, role: "operator" })).status).toBe(201);
    const login = await fetch(`${stack.cpUrl}/auth/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email, password }),
    });
    const { access_token } = (await login.json()) as { access_token: string };
    const cred = await usable({ authorization: `Bearer ${access_token}` });
    const results = await afterChange(cred, async () => {
      const out = await fetch(`${stack.cpUrl}/auth/logout`, { method: "POST", headers: cred });
      expect(out.status).toBe(204);
    });
    expectRefusals(results, /revoked|401|-32001/i);
    expect(wsCloses.get("websocket")).toBe(4401);
  }, 120_000);

  it("answers x-request-id on every route (the client's when sane) and counts requests and refusals of every transport", async () => {
    const auth = admin();
    const routes: Array<[string, string, Record<string, string>?]> = [
      ["GET", "/health"],
      ["GET", "/ready"],
      ["GET", "/metrics"],
      ["GET", "/.well-known/oauth-protected-resource"],
      ["GET", `/.well-known/oauth-protected-resource/servers/${httpId}/mcp`],
      ["POST", `/servers/${httpId}/mcp`, auth],
      ["POST", `/servers/${stdioId}/mcp`],
      ["GET", `/servers/${stdioId}/sse`],
      ["POST", `/servers/${stdioId}/message?sessionId=nope`, auth],
      ["POST", `/servers/${stdioId}/rpc`, auth],
      ["GET", `/servers/${stdioId}/rpc/introspection`, auth],
      ["POST", "/ns/live/mcp"],
      ["GET", "/ns/live/sse"],
      ["POST", "/ns/live/rpc", auth],
      ["POST", "/ns/live/rpc/batch"],
      ["GET", "/ns/live/conflicts", auth],
      ["POST", "/mcp"],
      ["POST", "/rpc"],
      ["GET", "/mcp/status", auth],
      ["GET", "/mcp/capabilities"],
      ["GET", "/stdio/process", auth],
      ["GET", "/no/such/route"],
    ];
    for (const [method, path, headers] of routes) {
      const res = await fetch(`${dp(0)}${path}`, {
        method,
        headers: { ...headers, "content-type": "application/json", "x-request-id": "client-chosen.42" },
        ...(method === "POST" ? { body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }) } : {}),
        signal: AbortSignal.timeout(10_000),
      });
      expect(res.headers.get("x-request-id"), `${method} ${path}`).toBe("client-chosen.42");
      await res.body?.cancel();
      const generated = await fetch(`${dp(0)}${path}`, {
        method,
        headers: { ...headers, "x-request-id": "not a sane id" },
        signal: AbortSignal.timeout(10_000),
      });
      expect(generated.headers.get("x-request-id"), `${method} ${path}`).toMatch(/^[0-9a-f-]{36}$/);
      await generated.body?.cancel();
    }
    // WebSocket: the handshake and the refusal of one carry it too (a bad credential: without
    // one the socket opens and waits for it in the first message).
    const ids = await Promise.all(
      [auth, { authorization: "Bearer not-a-token" }].map(
        (headers) =>
          new Promise<[number, string | undefined]>((resolve, reject) => {
            const ws = new NodeWebSocket(`${dp(0).replace(/^http/, "ws")}/servers/${stdioId}/ws`, "mcp", {
              headers: { ...headers, "x-request-id": "ws-id" },
            });
            ws.once("upgrade", (res) => {
              resolve([101, res.headers["x-request-id"] as string | undefined]);
              ws.close();
            });
            ws.once("unexpected-response", (_req, res) => {
              resolve([res.statusCode ?? 0, res.headers["x-request-id"] as string | undefined]);
              res.resume();
            });
            ws.once("error", reject);
          }),
      ),
    );
    expect(ids).toEqual([
      [101, "ws-id"],
      [401, "ws-id"],
    ]);

    // Every transport's requests and refusals are counted, by route and status.
    const metrics = await (await fetch(`${dp(0)}/metrics`)).text();
    const count = (route: string, status: string) =>
      metrics
        .split("\n")
        .filter(
          (l) =>
            l.startsWith("mcpgw_dp_http_requests_total{") &&
            l.includes(`route="${route}"`) &&
            l.includes(`status="${status}"`),
        )
        .reduce((n, l) => n + Number(l.split(" ").pop()), 0);
    for (const [route, status] of [
      ["server.mcp", "200"],
      ["server.mcp", "401"],
      ["server.sse", "401"],
      ["server.message", "404"],
      ["server.rpc", "200"],
      ["server.ws", "101"],
      ["server.ws", "401"],
      ["namespace.mcp", "401"],
      ["namespace.rpc", "200"],
      ["operator", "200"],
      ["operator", "401"],
      ["health", "200"],
      ["other", "404"],
    ] as const)
      expect(count(route, status), `${route} ${status}`).toBeGreaterThan(0);
  }, 60_000);
});
