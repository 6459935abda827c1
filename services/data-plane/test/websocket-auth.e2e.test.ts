import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { WebSocketClientTransport } from "@modelcontextprotocol/sdk/client/websocket.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import {
  type Api,
  eventually,
  initializeRequest,
  type Stack,
  startStack,
  startTestUpstream,
  type TestUpstream,
} from "../../../packages/testing/src/index.ts";

// The SDK's WebSocketClientTransport uses the global WebSocket (Node 22 has one, Node 20 not).
globalThis.WebSocket ??= WebSocket as unknown as typeof globalThis.WebSocket;

/**
 * The SDK transport as a client that cannot set headers uses it: its credential goes in its
 * first message (the README's recipe).
 */
class AuthenticatingTransport extends WebSocketClientTransport {
  constructor(
    url: URL,
    private readonly token: string,
  ) {
    super(url);
  }
  override async start(): Promise<void> {
    await super.start();
    await this.send({ jsonrpc: "2.0", method: "mcpgw/authenticate", params: { token: this.token } });
  }
}

interface Outcome {
  opened: boolean;
  protocol: string;
  status?: number;
  closeCode?: number;
  closeReason?: string;
  received: Array<Record<string, unknown>>;
}

describe("WebSocket clients that cannot set headers authenticate by subprotocol or first message", () => {
  let stack: Stack;
  let api: Api;
  let upstream: TestUpstream;
  let serverId = "";
  let apiKey = "";
  const slug = "ws-auth";
  const wsBase = () => stack.dataPlanes[0]!.url.replace(/^http/, "ws");

  /** Opens a socket, sends `frames` once open, collects what comes back until it closes or `ms` pass. */
  function exchange(
    path: string,
    frames: unknown[],
    options: {
      protocols?: string[];
      headers?: Record<string, string>;
      ms?: number;
      /** Closes the socket as soon as what was received satisfies it. */
      until?: (received: Outcome["received"]) => boolean;
    } = {},
  ): Promise<Outcome> {
    return new Promise((resolve) => {
      const out: Outcome = { opened: false, protocol: "", received: [] };
      const ws = new WebSocket(`${wsBase()}${path}`, options.protocols ?? ["mcp"], {
        headers: options.headers,
      });
      const done = () => {
        clearTimeout(timer);
        resolve(out);
      };
      const timer = setTimeout(() => {
        ws.close();
        done();
      }, options.ms ?? 8_000);
      ws.on("unexpected-response", (_req, res) => {
        out.status = res.statusCode;
        ws.terminate();
        done();
      });
      ws.on("open", () => {
        out.opened = true;
        out.protocol = ws.protocol;
        for (const f of frames) ws.send(typeof f === "string" ? f : JSON.stringify(f));
      });
      ws.on("message", (data) => {
        out.received.push(JSON.parse(String(data)) as Record<string, unknown>);
        if (options.until?.(out.received)) ws.close();
      });
      ws.on("close", (code, reason) => {
        out.closeCode = code;
        out.closeReason = String(reason);
        done();
      });
      ws.on("error", () => done());
    });
  }

  const authenticate = (token: string, id?: number) => ({
    jsonrpc: "2.0",
    ...(id === undefined ? {} : { id }),
    method: "mcpgw/authenticate",
    params: { token },
  });
  const listTools = { jsonrpc: "2.0", id: 2, method: "tools/list" };

  beforeAll(async () => {
    [stack, upstream] = await Promise.all([startStack({ replicas: 1 }), startTestUpstream()]);
    api = await stack.api();
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", { name: "WS auth", slug });
    const created = await api.call<{ id: string }>("POST", "/api/v1/servers", {
      namespace_id: ns.body.id,
      name: "echo",
      transport: "streamable_http",
      url: upstream.url,
    });
    expect(created.status).toBe(201);
    serverId = created.body.id;
    const key = await api.call<{ key: string }>("POST", "/auth/api-keys", { name: "ws-auth" });
    apiKey = key.body.key;
    // Until the data plane has the server in its snapshot, the socket closes 4404.
    await eventually(async () => {
      const out = await exchange(`/servers/${serverId}/ws`, [authenticate(api.token), listTools], {
        ms: 3_000,
      });
      return out.received.some((m) => m.id === 2);
    }, 30_000);
  }, 90_000);

  afterAll(async () => {
    await Promise.all([stack?.stop(), upstream?.close()]);
  });

  it("the SDK's WebSocketClientTransport calls tools with its credential in the first message", async () => {
    for (const path of [`/servers/${serverId}/ws`, `/ns/${slug}/ws`]) {
      const client = new Client({ name: "ws-first-message", version: "1" });
      await client.connect(new AuthenticatingTransport(new URL(`${wsBase()}${path}`), api.token));
      try {
        const tools = await client.listTools();
        expect(tools.tools.map((t) => t.name)).toContain(path.startsWith("/ns") ? "echo__echo" : "echo");
        const result = await client.callTool({
          name: path.startsWith("/ns") ? "echo__echo" : "echo",
          arguments: { text: "over ws" },
        });
        expect(result.content).toEqual([{ type: "text", text: "over ws" }]);
      } finally {
        await client.close();
      }
    }
  });

  it("an API key works in the first message too, and an authenticate request is answered", async () => {
    const out = await exchange(
      `/servers/${serverId}/ws`,
      [authenticate(apiKey, 1), initializeRequest("ws-key", 3), listTools],
      { until: (r) => [1, 2, 3].every((id) => r.some((m) => m.id === id)) },
    );
    expect(out.opened).toBe(true);
    const byId = (id: number) => out.received.find((m) => m.id === id);
    expect(byId(1)).toEqual({ jsonrpc: "2.0", id: 1, result: {} });
    expect(byId(3)?.result).toMatchObject({ serverInfo: expect.any(Object) });
    // Frames sent right behind the credential are not lost while it is checked.
    expect(JSON.stringify(byId(2)?.result)).toContain('"echo"');
  });

  it("a credential offered as a subprotocol next to mcp is accepted; the server selects mcp", async () => {
    const out = await exchange(`/servers/${serverId}/ws`, [initializeRequest("ws-proto", 3), listTools], {
      protocols: ["mcp", `mcpgw.bearer.${api.token}`],
      until: (r) => r.some((m) => m.id === 2),
    });
    expect(out.opened).toBe(true);
    expect(out.protocol).toBe("mcp");
    expect(out.received.find((m) => m.id === 2)?.result).toBeDefined();
  });

  it("a bad credential as a subprotocol is refused at the upgrade, with 401", async () => {
    const out = await exchange(`/servers/${serverId}/ws`, [], {
      protocols: ["mcp", "mcpgw.bearer.not-a-token"],
    });
    expect(out.opened).toBe(false);
    expect(out.status).toBe(401);
  });

  it("without a credential first, the socket closes 4401 and nothing is relayed", async () => {
    for (const [what, frames] of [
      ["an MCP request first", [initializeRequest("ws-anon", 3)]],
      ["a bad token first", [authenticate("not-a-token"), initializeRequest("ws-anon", 3)]],
      ["no params.token", [{ jsonrpc: "2.0", method: "mcpgw/authenticate", params: {} }]],
      ["not JSON", ["{nope"]],
    ] as const) {
      const out = await exchange(`/servers/${serverId}/ws`, [...frames]);
      expect(out.closeCode, what).toBe(4401);
      expect(out.closeReason, what).toMatch(/Unauthorized/);
      expect(out.received, what).toEqual([]);
    }
  });

  it("a token in the query string is not a credential", async () => {
    const out = await exchange(`/servers/${serverId}/ws?access_token=${api.token}&token=${api.token}`, [
      initializeRequest("ws-query", 3),
    ]);
    expect(out.closeCode).toBe(4401);
    expect(out.received).toEqual([]);
  });

  it("another org's target answers as missing once the credential is known (close 4404)", async () => {
    const out = await exchange("/servers/00000000-0000-4000-8000-000000000000/ws", [
      authenticate(api.token),
      initializeRequest("ws-missing", 3),
    ]);
    expect(out.closeCode).toBe(4404);
    expect(out.received).toEqual([]);
  });
});
