import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import {
  type Api,
  eventually,
  everythingEntry,
  login,
  registerStdioServer,
  type Stack,
  startStack,
} from "../../../packages/testing/src/index.ts";

describe("operator endpoints, answered by every replica and scoped to the caller's org", () => {
  let stack: Stack;
  let api: Api;
  let other: Api;
  let serverId: string;
  let ws: WebSocket;
  const received: unknown[] = [];

  const op = async (dp: number, method: string, path: string, token: string, body?: unknown) => {
    const res = await fetch(`${stack.dataPlanes[dp]!.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  beforeAll(async () => {
    stack = await startStack({
      replicas: 2,
      env: { MCPGW_STDIO_ALLOWED_COMMANDS: process.execPath, MCPGW_STDIO_POOL_SIZE: "0" },
    });
    api = await stack.api();
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", { name: "Ops", slug: "ops" });
    serverId = (
      await registerStdioServer(api, {
        namespace_id: ns.body.id,
        name: "everything",
        command: process.execPath,
        args: [everythingEntry, "stdio"],
      })
    ).id;
    await api.call("POST", "/api/v1/organizations", {
      name: "Other",
      slug: "other-ops",
      admin: { email: "ops-other@example.test", password: "other admin password" },
    });
    other = await login(stack.cpUrl, "ops-other@example.test", "other admin password");
    await new Promise((r) => setTimeout(r, 700));
    // A WebSocket session on dp1.
    ws = new WebSocket(`${stack.dataPlanes[1]!.url.replace(/^http/, "ws")}/servers/${serverId}/ws`, "mcp", {
      headers: { authorization: `Bearer ${api.token}` },
    });
    ws.on("message", (d) => received.push(JSON.parse(d.toString())));
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    ws.send(
      JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: {
          protocolVersion: "2025-11-25",
          capabilities: {},
          clientInfo: { name: "ops", version: "1" },
        },
      }),
    );
    await eventually(() => received.length > 0, 10_000);
  }, 90_000);

  afterAll(async () => {
    ws?.close();
    await stack?.stop();
  });

  it("refuses callers without a token or without the admin role", async () => {
    const anonymous = await fetch(`${stack.dataPlanes[0]!.url}/mcp/status`);
    expect({ status: anonymous.status, body: await anonymous.text() }).toMatchObject({ status: 401 });
    await api.call("POST", "/api/v1/users", {
      email: "ops-viewer@example.test",
      password: "viewer password long",
      role: "viewer",
    });
    const viewer = await login(stack.cpUrl, "ops-viewer@example.test", "viewer password long");
    expect((await op(0, "GET", "/mcp/status", viewer.token)).status).toBe(403);
  });

  it("reports status from both replicas, asked through either", async () => {
    const status = await op(0, "GET", "/mcp/status", api.token);
    const replicas = status.body.replicas as Array<{ replica: string; sessions: { websocket: number } }>;
    expect(replicas.map((r) => r.replica).sort()).toEqual(["dp0", "dp1"]);
    const ws = await op(0, "GET", "/ws/status", api.token);
    expect(ws.body.connections).toBe(1);
    // Another org sees none of it.
    expect((await op(0, "GET", "/ws/status", other.token)).body.connections).toBe(0);
    const caps = await op(1, "GET", "/mcp/capabilities", api.token);
    expect(caps.body.client_transports).toContain("websocket");
  });

  it("broadcasts a notification to WebSocket clients on every replica", async () => {
    const before = received.length;
    const res = await op(0, "POST", "/ws/broadcast", api.token, {
      message: {
        jsonrpc: "2.0",
        method: "notifications/message",
        params: { level: "info", data: "maintenance at noon" },
      },
    });
    expect(res.body.delivered).toBe(1);
    await expect.poll(() => JSON.stringify(received.slice(before))).toContain("maintenance at noon");
    const bad = await op(0, "POST", "/ws/broadcast", api.token, {
      message: { jsonrpc: "2.0", id: 1, method: "x" },
    });
    expect(bad.status).toBe(400);
    expect(
      (
        await op(0, "POST", "/ws/send", api.token, {
          session_id: "nope",
          message: { jsonrpc: "2.0", method: "notifications/message", params: {} },
        })
      ).status,
    ).toBe(404);
  });

  it("drops a WebSocket client that stops reading instead of buffering for it without bound", async () => {
    const slow = new WebSocket(
      `${stack.dataPlanes[1]!.url.replace(/^http/, "ws")}/servers/${serverId}/ws`,
      "mcp",
      {
        headers: { authorization: `Bearer ${api.token}` },
      },
    );
    await new Promise((resolve, reject) => {
      slow.once("open", resolve);
      slow.once("error", reject);
    });
    const closed = new Promise<number>((resolve) => slow.once("close", (code) => resolve(code)));
    // The client stops reading its socket.
    (slow as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
    const rss = () =>
      Number(
        /VmRSS:\s+(\d+)/.exec(
          readFileSync(`/proc/${stack.dataPlanes[1]!.proc.child.pid}/status`, "utf8"),
        )?.[1] ?? 0,
      );
    const before = rss();
    const data = "x".repeat(256 * 1024);
    for (let i = 0; i < 80; i++) {
      await op(0, "POST", "/ws/broadcast", api.token, {
        message: { jsonrpc: "2.0", method: "notifications/message", params: { level: "info", data } },
      });
    }
    // 20 MiB were sent to a client that reads nothing: the replica kept at most its backlog limit.
    expect(rss() - before).toBeLessThan(64 * 1024);
    (slow as unknown as { _socket: { resume(): void } })._socket.resume();
    expect([1013, 1006]).toContain(await closed);
    const status = await op(0, "GET", "/ws/status", api.token);
    expect(status.body.connections).toBe(1);
  }, 60_000);

  it("lists, restarts and stops stdio processes across replicas, and never another org's", async () => {
    const list = await op(0, "GET", "/stdio/process", api.token);
    const processes = (
      list.body.replicas as Array<{ replica: string; processes: Array<{ server_id: string; state: string }> }>
    ).flatMap((r) => r.processes.map((p) => ({ ...p, replica: r.replica })));
    expect(processes).toContainEqual(
      expect.objectContaining({ server_id: serverId, state: "in_session", replica: "dp1" }),
    );
    expect(
      (
        (await op(0, "GET", "/stdio/process", other.token)).body.replicas as Array<{ processes: unknown[] }>
      ).every((r) => r.processes.length === 0),
    ).toBe(true);
    expect(
      (await op(0, "POST", "/stdio/process", other.token, { server_id: serverId, action: "stop" })).status,
    ).toBe(404);
    const stopped = await op(0, "POST", "/stdio/process", api.token, { server_id: serverId, action: "stop" });
    expect(stopped.body.affected).toBe(1);
    // The session whose process was stopped ends.
    await expect.poll(() => ws.readyState, { timeout: 5000 }).toBe(WebSocket.CLOSED);
  });

  it("sends JSON-RPC messages to a registered stdio server for debugging", async () => {
    const res = await op(1, "POST", "/stdio/send", api.token, {
      server_id: serverId,
      messages: [
        {
          jsonrpc: "2.0",
          id: 1,
          method: "initialize",
          params: {
            protocolVersion: "2025-11-25",
            capabilities: {},
            clientInfo: { name: "debug", version: "1" },
          },
        },
      ],
    });
    expect(res.status).toBe(200);
    expect(JSON.stringify(res.body.received)).toMatch(/serverInfo/);
    expect(
      (
        await op(1, "POST", "/stdio/send", api.token, {
          server_id: "00000000-0000-4000-8000-000000000000",
          message: {},
        })
      ).status,
    ).toBe(404);
    expect((await op(1, "POST", "/stdio/send", api.token, { command: "rm -rf /" })).status).toBe(400);
  });
});
