import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ElicitRequestSchema, ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  everythingEntry,
  registerStdioServer,
  type Stack,
  startStack,
  statelessPost,
} from "../../../packages/testing/src/index.ts";
import { connectV2Client, startV2Upstream, type V2Upstream } from "../../../packages/testing/src/v2.ts";

/** A raw 2026-07-28 answer, as far as these tests read it. */
interface RpcAnswer {
  id: number;
  result: {
    resultType: string;
    inputRequests: Record<string, { method: string }>;
    requestState: string;
    content: unknown;
  };
  error: { code: number; message: string };
}

/**
 * The 2026-07-28 revision with the v2 SDK (`@modelcontextprotocol/client` / `server`) on either
 * side of the gateway: a stateless client in front of a session-based upstream (the gateway keeps
 * the session and turns server-to-client requests into `InputRequiredResult`s), and a stateless
 * client in front of a stateless upstream (relayed as is).
 */
describe("MCP 2026-07-28 through the gateway (v2 SDK)", () => {
  let stack: Stack;
  let api: Api;
  let v2: V2Upstream;
  let stdioServer: string;
  let v2Server: string;
  const auth = () => ({ authorization: `Bearer ${api.token}` });

  beforeAll(async () => {
    [stack, v2] = await Promise.all([
      startStack({
        replicas: 2,
        env: { MCPGW_STDIO_ALLOWED_COMMANDS: process.execPath, MCPGW_ALLOW_PRIVATE_UPSTREAMS: "true" },
      }),
      startV2Upstream("reject"),
    ]);
    api = await stack.api();
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", {
      name: "Rev 2026",
      slug: "rev2026",
    });
    stdioServer = (
      await registerStdioServer(api, {
        namespace_id: ns.body.id,
        name: "everything",
        command: process.execPath,
        args: [everythingEntry, "stdio"],
      })
    ).id;
    v2Server = (
      await api.call<{ id: string }>("POST", "/api/v1/servers", {
        namespace_id: ns.body.id,
        name: "v2",
        transport: "streamable_http",
        url: v2.url,
      })
    ).body.id;
    // Replicas announce themselves to each other over NATS.
    await new Promise((r) => setTimeout(r, 1000));
  }, 90_000);

  afterAll(async () => {
    await Promise.all([stack?.stop(), v2?.close()]);
  });

  it("serves a v2 client in front of a stdio upstream: elicitation and sampling become InputRequiredResults, listen streams updates", async () => {
    const { client, asked } = await connectV2Client(
      `${stack.dataPlanes[0]!.url}/servers/${stdioServer}/mcp`,
      auth(),
    );
    expect(client.getNegotiatedProtocolVersion()).toBe("2026-07-28");
    const tools = await client.listTools();
    const names = tools.tools.map((t) => t.name);
    // The upstream offers these only to clients that can answer them: the gateway declared them.
    expect(names).toEqual(
      expect.arrayContaining(["echo", "trigger-elicitation-request", "trigger-sampling-request"]),
    );

    const echo = await client.callTool({ name: "echo", arguments: { message: "stateless hello" } });
    expect(JSON.stringify(echo.content)).toContain("stateless hello");

    const { resources } = await client.listResources();
    const read = await client.readResource({ uri: resources[0]!.uri });
    expect(read.contents.length).toBeGreaterThan(0);
    const prompt = await client.getPrompt({ name: "simple-prompt" });
    expect(prompt.messages.length).toBeGreaterThan(0);
    // Progress of a translated request streams back on its response (SSE), before the result.
    const progress: number[] = [];
    const long = await client.callTool(
      { name: "trigger-long-running-operation", arguments: { duration: 0.3, steps: 3 } },
      { onprogress: (p) => progress.push(p.progress) },
    );
    expect(progress).toEqual([1, 2, 3]);
    expect(JSON.stringify(long.content)).toContain("completed");

    const elicited = await client.callTool({ name: "trigger-elicitation-request", arguments: {} });
    expect(asked.some((a) => a.startsWith("elicitation"))).toBe(true);
    expect(JSON.stringify(elicited.content)).toContain("v2 tester");

    const sampled = await client.callTool({
      name: "trigger-sampling-request",
      arguments: { prompt: "hi", maxTokens: 5 },
    });
    expect(asked).toContain("sampling");
    expect(JSON.stringify(sampled.content)).toContain("sampled by the v2 client");

    // subscriptions/listen: the gateway subscribes its upstream session and streams the updates.
    const uri = resources[0]!.uri;
    const updated: string[] = [];
    client.setNotificationHandler("notifications/resources/updated", async (n) => {
      updated.push(n.params.uri);
    });
    const subscription = await client.listen({ resourceSubscriptions: [uri] });
    // The upstream sends updates of subscribed resources every 5 s once toggled on.
    await client.callTool({ name: "toggle-subscriber-updates", arguments: {} });
    await expect.poll(() => updated, { timeout: 12_000, interval: 200 }).toContain(uri);
    await subscription.close();
    await client.callTool({ name: "toggle-subscriber-updates", arguments: {} });
    await client.close();
  });

  /** One raw 2026-07-28 request to a replica. */
  const post = async (replica: number, id: number, method: string, params: Record<string, unknown>) => {
    const res = await statelessPost(
      `${stack.dataPlanes[replica]!.url}/servers/${stdioServer}/mcp`,
      auth(),
      { id, method, params },
      { sampling: {} },
    );
    return { status: res.status, body: (await res.json()) as RpcAnswer };
  };

  it("continues an input-required exchange on whichever replica the retry lands, and only for its caller", async () => {
    const first = await post(0, 1, "tools/call", {
      name: "trigger-sampling-request",
      arguments: { prompt: "cross", maxTokens: 5 },
    });
    expect(first.body.result.resultType).toBe("input_required");
    const [[key, request]] = Object.entries(first.body.result.inputRequests) as [
      [string, { method: string }],
    ];
    expect(request.method).toBe("sampling/createMessage");
    const state = first.body.result.requestState;
    expect(state).toMatch(/^mrtr1\.dp0\./);

    // Another caller (an API key) cannot resume it.
    const other = (await api.call<{ key: string }>("POST", "/auth/api-keys", { name: "other-caller" })).body
      .key;
    const foreign = async () => {
      const res = await fetch(`${stack.dataPlanes[0]!.url}/servers/${stdioServer}/mcp`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${other}`,
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          "mcp-protocol-version": "2026-07-28",
          "mcp-method": "tools/call",
          "mcp-name": "trigger-sampling-request",
        },
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 9,
          method: "tools/call",
          params: {
            name: "trigger-sampling-request",
            arguments: {},
            requestState: state,
            inputResponses: {},
            _meta: {
              "io.modelcontextprotocol/protocolVersion": "2026-07-28",
              "io.modelcontextprotocol/clientCapabilities": { sampling: {} },
            },
          },
        }),
      });
      return {
        status: res.status,
        body: (await res.json()) as { error?: { code: number; message: string } },
      };
    };
    // (the key reaches the replicas with the next snapshot)
    await expect.poll(async () => (await foreign()).status, { timeout: 5000 }).not.toBe(401);
    const refused = (await foreign()).body.error;
    expect(refused?.code).toBe(-32602);
    expect(refused?.message).toMatch(/requestState is unknown/);

    // The retry goes to the other replica: it is carried to the one holding the exchange.
    const retry = await post(1, 2, "tools/call", {
      name: "trigger-sampling-request",
      arguments: { prompt: "cross", maxTokens: 5 },
      requestState: state,
      inputResponses: {
        [key]: { role: "assistant", content: { type: "text", text: "answered on dp1" }, model: "m" },
      },
    });
    expect(retry.body.id).toBe(2);
    expect(retry.body.result.resultType).toBe("complete");
    expect(JSON.stringify(retry.body.result.content)).toContain("answered on dp1");

    // A state that was used (or never issued) is refused with a clear error.
    const again = await post(0, 3, "tools/call", {
      name: "trigger-sampling-request",
      arguments: {},
      requestState: state,
      inputResponses: {},
    });
    expect(again.body.error.code).toBe(-32602);
    expect(again.body.error.message).toMatch(/requestState/);
  });

  it("checks translated 2026-07-28 requests as a 2026-07-28 server would", async () => {
    const raw = async (headers: Record<string, string>, body: unknown) => {
      const res = await fetch(`${stack.dataPlanes[0]!.url}/servers/${stdioServer}/mcp`, {
        method: "POST",
        headers: {
          ...auth(),
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          "mcp-protocol-version": "2026-07-28",
          ...headers,
        },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as RpcAnswer };
    };
    const meta = {
      "io.modelcontextprotocol/protocolVersion": "2026-07-28",
      "io.modelcontextprotocol/clientCapabilities": {},
    };
    const call = (id: number, params: Record<string, unknown>) => ({
      jsonrpc: "2.0",
      id,
      method: "tools/call",
      params: { name: "echo", arguments: { message: "x" }, ...params },
    });
    // Routing headers missing or disagreeing with the body: 400, -32020, the request's id.
    const noName = await raw({ "mcp-method": "tools/call" }, call(11, { _meta: meta }));
    expect([noName.status, noName.body.error.code, noName.body.id]).toEqual([400, -32020, 11]);
    const wrongName = await raw(
      { "mcp-method": "tools/call", "mcp-name": "get-sum" },
      call(12, { _meta: meta }),
    );
    expect([wrongName.status, wrongName.body.error.code]).toEqual([400, -32020]);
    const wrongMethod = await raw(
      { "mcp-method": "tools/list", "mcp-name": "echo" },
      call(13, { _meta: meta }),
    );
    expect([wrongMethod.status, wrongMethod.body.error.code]).toEqual([400, -32020]);
    // An encoded name is decoded before it is compared.
    const encoded = `=?base64?${Buffer.from("echo").toString("base64")}?=`;
    const ok = await raw({ "mcp-method": "tools/call", "mcp-name": encoded }, call(14, { _meta: meta }));
    expect([ok.status, ok.body.result.resultType]).toEqual([200, "complete"]);
    // _meta without the revision or the capabilities: 400, -32602.
    const noMeta = await raw({ "mcp-method": "tools/call", "mcp-name": "echo" }, call(15, {}));
    expect([noMeta.status, noMeta.body.error.code, noMeta.body.id]).toEqual([400, -32602, 15]);
    // Session-era methods and unknown ones: 404, -32601.
    for (const method of ["initialize", "ping", "resources/subscribe", "no/such-method"]) {
      const gone = await raw(
        { "mcp-method": method },
        { jsonrpc: "2.0", id: 16, method, params: { _meta: meta } },
      );
      expect([gone.status, gone.body.error.code, gone.body.id]).toEqual([404, -32601, 16]);
    }
  });

  it("relays a v2 client to a stateless v2 upstream: input-required results and listen streams pass through", async () => {
    const { client, asked } = await connectV2Client(
      `${stack.dataPlanes[1]!.url}/servers/${v2Server}/mcp`,
      auth(),
    );
    expect(client.getNegotiatedProtocolVersion()).toBe("2026-07-28");
    expect((await client.listTools()).tools.map((t) => t.name).sort()).toEqual(["deploy", "echo"]);
    const deployed = await client.callTool({ name: "deploy", arguments: { env: "prod" } });
    expect(asked).toContain("elicitation: Deploy to prod?");
    expect(JSON.stringify(deployed.content)).toContain("deployed to prod");
    // The upstream saw routing headers, never the client's credentials.
    const last = v2.received.at(-1)!;
    expect(last["mcp-method"]).toBe("tools/call");
    expect(last["mcp-name"]).toBe("deploy");
    expect(last.authorization).toBeUndefined();

    const changed: string[] = [];
    client.setNotificationHandler("notifications/tools/list_changed", async () => {
      changed.push("tools");
    });
    const subscription = await client.listen({ toolsListChanged: true });
    v2.toolsChanged();
    await expect.poll(() => changed.length, { timeout: 5000 }).toBeGreaterThan(0);
    await subscription.close();
    await client.close();
  });

  /** A 2025 (v1 SDK) client that answers elicitation by confirming. */
  const v1Client = () => {
    const client = new Client({ name: "v1-client", version: "1.0.0" }, { capabilities: { elicitation: {} } });
    const asked: string[] = [];
    client.setRequestHandler(ElicitRequestSchema, async (request) => {
      asked.push(request.params.message);
      return { action: "accept", content: { confirm: true } };
    });
    return { client, asked };
  };

  it("offers a 2025 client a session in front of a stateless-only upstream (Streamable HTTP)", async () => {
    const { client, asked } = v1Client();
    const transport = new StreamableHTTPClientTransport(
      new URL(`${stack.dataPlanes[0]!.url}/servers/${v2Server}/mcp`),
      {
        requestInit: { headers: auth() },
      },
    );
    await client.connect(transport);
    // The gateway's session (the upstream has none): a message-level session id.
    expect(transport.sessionId).toMatch(/^s1\.dp0\./);
    expect(client.getServerVersion()?.name).toBe("v2-upstream");
    expect((await client.listTools()).tools.map((t) => t.name).sort()).toEqual(["deploy", "echo"]);
    const echo = await client.callTool({ name: "echo", arguments: { text: "from 2025" } });
    expect(JSON.stringify(echo.content)).toContain("v2 echo: from 2025");
    // The upstream's InputRequiredResult becomes an elicitation request on the client's session.
    const deployed = await client.callTool({ name: "deploy", arguments: { env: "staging" } });
    expect(asked).toEqual(["Deploy to staging?"]);
    expect(JSON.stringify(deployed.content)).toContain("deployed to staging");
    // Every upstream request was stateless, with the client's capabilities in _meta.
    const last = v2.received.at(-1)!;
    expect(last["mcp-protocol-version"]).toBe("2026-07-28");
    expect(last["mcp-session-id"]).toBeUndefined();

    // list_changed reaches the client from the gateway's subscriptions/listen stream.
    const changed: string[] = [];
    client.setNotificationHandler(ToolListChangedNotificationSchema, async () => {
      changed.push("tools");
    });
    await expect
      .poll(
        () => {
          v2.toolsChanged();
          return changed.length;
        },
        { timeout: 5000, interval: 250 },
      )
      .toBeGreaterThan(0);
    // The session is usable through the other replica too (carried to its owner over NATS).
    const other = new StreamableHTTPClientTransport(
      new URL(`${stack.dataPlanes[1]!.url}/servers/${v2Server}/mcp`),
      {
        requestInit: { headers: auth() },
        sessionId: transport.sessionId,
      },
    );
    const viaOther = new Client({ name: "v1-other", version: "1.0.0" });
    await viaOther.connect(other);
    const again = await viaOther.callTool({ name: "echo", arguments: { text: "via dp1" } });
    expect(JSON.stringify(again.content)).toContain("v2 echo: via dp1");
    await transport.terminateSession();
    await client.close();
  });

  it("offers a legacy-SSE client a session in front of a stateless-only upstream", async () => {
    const { client, asked } = v1Client();
    const headers = auth();
    const transport = new SSEClientTransport(new URL(`${stack.dataPlanes[1]!.url}/servers/${v2Server}/sse`), {
      requestInit: { headers },
      eventSourceInit: {
        fetch: (url, init) =>
          fetch(url, { ...init, headers: { ...(init?.headers as Record<string, string>), ...headers } }),
      },
    });
    await client.connect(transport);
    expect((await client.listTools()).tools.map((t) => t.name).sort()).toEqual(["deploy", "echo"]);
    const deployed = await client.callTool({ name: "deploy", arguments: { env: "dev" } });
    expect(asked).toEqual(["Deploy to dev?"]);
    expect(JSON.stringify(deployed.content)).toContain("deployed to dev");
    await client.close();
  });

  // Last: it stops the v2 upstream.
  it("answers a 2025 client with a JSON-RPC error when the stateless upstream goes away", async () => {
    const { client } = v1Client();
    await client.connect(
      new StreamableHTTPClientTransport(new URL(`${stack.dataPlanes[0]!.url}/servers/${v2Server}/mcp`), {
        requestInit: { headers: auth() },
      }),
    );
    await v2.close();
    await expect(client.callTool({ name: "echo", arguments: { text: "anyone?" } })).rejects.toMatchObject({
      code: -32050,
    });
    // The session itself stays: the gateway still answers on it.
    await expect(client.listTools()).rejects.toMatchObject({ code: -32050 });
    await client.close();
  });
});
