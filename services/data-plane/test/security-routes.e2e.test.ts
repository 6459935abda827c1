import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import {
  type Api,
  eventually,
  everythingEntry,
  initializeRequest,
  login,
  registerStdioServer,
  type Stack,
  startEverythingServer,
  startStack,
} from "../../../packages/testing/src/index.ts";

// The security checks of every data-plane route, as the control plane's suite does for its
// routes: no credential → 401, another org's credential → 404 (its resources do not exist for
// it), a role without the right → 403.
describe("security on every data-plane route", () => {
  let stack: Stack;
  let owner: Api;
  let other: Api;
  let viewer: Api;
  let everything: Awaited<ReturnType<typeof startEverythingServer>>;
  const ids: Record<string, string> = {};
  let dp: string;

  beforeAll(async () => {
    [stack, everything] = await Promise.all([
      startStack({
        replicas: 1,
        env: { MCPGW_STDIO_ALLOWED_COMMANDS: process.execPath, MCPGW_STDIO_POOL_SIZE: "0" },
      }),
      startEverythingServer(),
    ]);
    dp = stack.dataPlanes[0]!.url;
    owner = await stack.api();
    const ns = await owner.call<{ id: string }>("POST", "/api/v1/namespaces", { name: "Sec", slug: "sec" });
    ids.slug = "sec";
    ids.srv = (
      await owner.call<{ id: string }>("POST", "/api/v1/servers", {
        namespace_id: ns.body.id,
        name: "http",
        transport: "streamable_http",
        url: everything.url,
      })
    ).body.id;
    ids.stdio = (
      await registerStdioServer(owner, {
        namespace_id: ns.body.id,
        name: "stdio",
        command: process.execPath,
        args: [everythingEntry, "stdio"],
      })
    ).id;
    await owner.call("POST", "/api/v1/organizations", {
      name: "Other",
      slug: "sec-other",
      admin: { email: "sec-other@example.test", password: "other admin password" },
    });
    other = await login(stack.cpUrl, "sec-other@example.test", "other admin password");
    await owner.call("POST", "/api/v1/users", {
      email: "sec-viewer@example.test",
      password: "viewer password long",
      role: "viewer",
    });
    viewer = await login(stack.cpUrl, "sec-viewer@example.test", "viewer password long");
    const expiring = await owner.call<{ key: string }>("POST", "/api/v1/api-keys", {
      name: "expiring",
      expires_at: new Date(Date.now() + 2_000).toISOString(),
    });
    expect(expiring.status).toBe(201);
    ids.expiredKey = expiring.body.key;
    await eventually(
      async () =>
        (await call("POST", `/servers/${ids.srv}/mcp`, owner.token, initializeRequest("r"))).status === 200,
      20_000,
    ).catch((err) => {
      throw new Error(`the data plane did not serve the server: ${err}`);
    });
    // The key above expired by now, or soon; a data plane says so with 401.
    await eventually(
      async () => (await call("POST", "/rpc", ids.expiredKey!, ping)).status === 401,
      10_000,
    ).catch((err) => {
      throw new Error(`the API key did not expire: ${err}`);
    });
  }, 120_000);

  afterAll(async () => {
    await stack?.stop();
    await everything?.proc.stop();
  });

  async function call(method: string, path: string, token: string | null, body?: unknown) {
    const res = await fetch(`${dp}${path}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(15_000),
    });
    const text = await res.text().catch(() => "");
    // Never a stack trace or an internal path in a refusal.
    expect(text).not.toMatch(/\n\s+at |node_modules|\.ts:\d+/);
    return { status: res.status, text };
  }

  const fill = (path: string) => path.replace(/\{(\w+)\}/g, (_m, k: string) => ids[k]!);
  const ping = { jsonrpc: "2.0", id: 1, method: "ping" };
  const note = { jsonrpc: "2.0", method: "notifications/message", params: { level: "info", data: "x" } };

  // MCP endpoints: [method, path, body]; another org gets 404 for a server or namespace of this one.
  const mcpRoutes: Array<[string, string, unknown?]> = [
    ["POST", "/servers/{srv}/mcp", initializeRequest("sec")],
    ["GET", "/servers/{srv}/mcp"],
    ["DELETE", "/servers/{srv}/mcp"],
    ["POST", "/servers/{srv}/rpc", ping],
    ["GET", "/servers/{srv}/sse"],
    ["POST", "/servers/{stdio}/mcp", initializeRequest("sec")],
    ["POST", "/servers/{stdio}/rpc", ping],
    ["POST", "/ns/{slug}/mcp", initializeRequest("sec")],
    ["POST", "/ns/{slug}/rpc", ping],
    ["GET", "/ns/{slug}/sse"],
    ["GET", "/ns/{slug}/conflicts"],
    ["POST", "/servers/{srv}/message?sessionId=0123456789abcdef", ping],
    ["GET", "/servers/{srv}/rpc/introspection"],
    ["GET", "/servers/{stdio}/sse"],
    ["POST", "/ns/{slug}/message?sessionId=0123456789abcdef", ping],
    ["POST", "/ns/{slug}/rpc/batch", [ping]],
    ["GET", "/ns/{slug}/rpc/introspection"],
  ];

  // The caller's default namespace: there is no other org's resource to name, so only the
  // credential checks apply.
  const defaultNamespaceRoutes: Array<[string, string, unknown?]> = [
    ["POST", "/mcp", initializeRequest("sec")],
    ["GET", "/mcp"],
    ["POST", "/rpc", ping],
    ["POST", "/rpc/batch", [ping]],
    ["GET", "/rpc/introspection"],
    ["GET", "/sse"],
    ["POST", "/message?sessionId=0123456789abcdef", ping],
  ];

  // A credential that was good once, or looks good: a control-plane token with its payload
  // rewritten (the signature no longer matches), a token of no issuer, and an expired API key.
  const badCredentials = (): Array<[string, string]> => {
    const [h, p, sig] = owner.token.split(".");
    const payload = JSON.parse(Buffer.from(p!, "base64url").toString()) as Record<string, unknown>;
    const rewritten = Buffer.from(
      JSON.stringify({ ...payload, role: "admin", sub: "someone-else" }),
    ).toString("base64url");
    return [
      ["a tampered token", `${h}.${rewritten}.${sig}`],
      ["a token signed by nobody", `${h}.${p}.${"A".repeat(sig!.length)}`],
      ["an expired API key", ids.expiredKey!],
      ["garbage", "not-a-credential"],
    ];
  };

  it.each(mcpRoutes)("%s %s: 401 without a credential, 404 for another org", async (method, path, body) => {
    const anonymous = await call(method, fill(path), null, body);
    expect(anonymous.status).toBe(401);
    expect(anonymous.text).toContain("Unauthorized");
    const foreign = await call(method, fill(path), other.token, body);
    expect(foreign.status).toBe(404);
  });

  it.each(defaultNamespaceRoutes)(
    "default namespace %s %s: 401 without a credential",
    async (method, path, body) => {
      const anonymous = await call(method, path, null, body);
      expect(anonymous.status).toBe(401);
      expect(anonymous.text).toContain("Unauthorized");
    },
  );

  it.each([...mcpRoutes, ...defaultNamespaceRoutes])(
    "%s %s: 401 for a tampered, unsigned or expired credential",
    async (method, path, body) => {
      for (const [what, credential] of badCredentials()) {
        const res = await call(method, fill(path), credential, body);
        expect(res.status, `${what} on ${method} ${path}: ${res.text}`).toBe(401);
      }
    },
  );

  it.each(["/servers/{srv}/ws", "/ns/{slug}/ws"])(
    "WebSocket %s: closed 4401 without a credential, 404 for another org, 401 for a bad one",
    async (path) => {
      const url = `${dp.replace(/^http/, "ws")}${fill(path)}`;
      const status = (token: string | null) =>
        new Promise<number>((resolve) => {
          const ws = new WebSocket(url, "mcp", {
            headers: token ? { authorization: `Bearer ${token}` } : {},
          });
          ws.on("unexpected-response", (_req, res) => {
            resolve(res.statusCode ?? 0);
            ws.terminate();
          });
          ws.on("open", () => {
            resolve(101);
            ws.close();
          });
          ws.on("error", () => resolve(-1));
        });
      // A client that cannot set headers may authenticate in its first message: without a
      // credential the socket opens, and anything but the credential first closes it with
      // 4401, before the target is looked up or anything is relayed.
      const anonymous = await new Promise<{ code: number; received: string[] }>((resolve) => {
        const received: string[] = [];
        const ws = new WebSocket(url, "mcp");
        ws.on("open", () => ws.send(JSON.stringify(initializeRequest("sec-anon"))));
        ws.on("message", (data) => received.push(String(data)));
        ws.on("close", (code) => resolve({ code, received }));
        ws.on("unexpected-response", (_req, res) => resolve({ code: res.statusCode ?? 0, received }));
        ws.on("error", () => resolve({ code: -1, received }));
      });
      expect(anonymous).toEqual({ code: 4401, received: [] });
      expect(await status(other.token)).toBe(404);
      for (const [, credential] of badCredentials()) expect(await status(credential)).toBe(401);
    },
  );

  // Operator endpoints: admins of the org only; other orgs see nothing of this one.
  const operatorRoutes: Array<[string, string, unknown?]> = [
    ["GET", "/mcp/capabilities"],
    ["GET", "/mcp/status"],
    ["GET", "/sse/status"],
    ["GET", "/ws/status"],
    ["POST", "/sse/broadcast", { message: note }],
    ["POST", "/ws/broadcast", { message: note }],
    ["POST", "/ws/send", { session_id: "nope", message: note }],
    ["GET", "/stdio/process"],
    ["POST", "/stdio/process", { server_id: "{stdio}", action: "stop" }],
    ["POST", "/stdio/send", { server_id: "{stdio}", message: ping }],
  ];

  it.each(operatorRoutes)(
    "operator %s %s: 401 without a credential, 403 for a viewer",
    async (method, path, body) => {
      const filled = body === undefined ? undefined : JSON.parse(fill(JSON.stringify(body)));
      expect((await call(method, path, null, filled)).status).toBe(401);
      expect((await call(method, path, viewer.token, filled)).status).toBe(403);
    },
  );

  it("another org's admin cannot send to this org's stdio server", async () => {
    const send = await call("POST", "/stdio/send", other.token, { server_id: ids.stdio, message: ping });
    expect(send.status).toBe(404);
  });

  it("another org's admin neither counts nor reaches this org's WebSocket sessions", async () => {
    const ws = new WebSocket(`${dp.replace(/^http/, "ws")}/servers/${ids.srv}/ws`, "mcp", {
      headers: { authorization: `Bearer ${owner.token}` },
    });
    const received: string[] = [];
    ws.on("message", (data) => received.push(String(data)));
    try {
      await new Promise<void>((resolve, reject) => {
        ws.once("open", () => resolve());
        ws.once("error", reject);
      });
      ws.send(JSON.stringify(initializeRequest("sec-ws")));
      await eventually(() => received.some((m) => m.includes('"serverInfo"')), 15_000);
      const connections = async (api: Api) =>
        (JSON.parse((await call("GET", "/ws/status", api.token)).text) as { connections: number })
          .connections;
      expect(await connections(owner)).toBeGreaterThanOrEqual(1);
      expect(await connections(other)).toBe(0);
      const foreign = await call("POST", "/ws/broadcast", other.token, {
        message: { ...note, params: { level: "info", data: "from-other-org" } },
      });
      expect(JSON.parse(foreign.text).delivered).toBe(0);
      const own = await call("POST", "/ws/broadcast", owner.token, {
        message: { ...note, params: { level: "info", data: "from-owner" } },
      });
      expect(JSON.parse(own.text).delivered).toBeGreaterThanOrEqual(1);
      // Delivered in order on the one replica: the owner's arrives, the other org's never came first.
      await eventually(() => received.some((m) => m.includes("from-owner")), 10_000);
      expect(received.join("\n")).not.toContain("from-other-org");
    } finally {
      ws.close();
    }
  });

  it("another org's admin sees none of this org's processes or sessions", async () => {
    const processes = await call("GET", "/stdio/process", other.token);
    expect(processes.status).toBe(200);
    expect(processes.text).not.toContain(ids.stdio!);
    const stop = await call("POST", "/stdio/process", other.token, { server_id: ids.stdio, action: "stop" });
    expect(stop.status).toBe(404);
  });
});
