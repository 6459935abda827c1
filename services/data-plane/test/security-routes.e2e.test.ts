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
    await eventually(
      async () =>
        (await call("POST", `/servers/${ids.srv}/mcp`, owner.token, initializeRequest("r"))).status === 200,
      20_000,
    ).catch((err) => {
      throw new Error(`the data plane did not serve the server: ${err}`);
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
  ];

  it.each(mcpRoutes)("%s %s: 401 without a credential, 404 for another org", async (method, path, body) => {
    const anonymous = await call(method, fill(path), null, body);
    expect(anonymous.status).toBe(401);
    expect(anonymous.text).toContain("Unauthorized");
    const foreign = await call(method, fill(path), other.token, body);
    expect(foreign.status).toBe(404);
  });

  it.each(["/servers/{srv}/ws", "/ns/{slug}/ws"])(
    "WebSocket %s: 401 without a credential, 404 for another org",
    async (path) => {
      const status = (token: string | null) =>
        new Promise<number>((resolve) => {
          const ws = new WebSocket(`${dp.replace(/^http/, "ws")}${fill(path)}`, "mcp", {
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
      expect(await status(null)).toBe(401);
      expect(await status(other.token)).toBe(404);
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

  it("another org's admin sees none of this org's processes or sessions", async () => {
    const processes = await call("GET", "/stdio/process", other.token);
    expect(processes.status).toBe(200);
    expect(processes.text).not.toContain(ids.stdio!);
    const stop = await call("POST", "/stdio/process", other.token, { server_id: ids.stdio, action: "stop" });
    expect(stop.status).toBe(404);
  });
});
