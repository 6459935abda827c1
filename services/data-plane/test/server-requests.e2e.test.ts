import { chmod, mkdtemp, realpath, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { ListRootsRequestSchema } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  eventually,
  filesystemEntry,
  registerStdioServer,
  type Stack,
  startStack,
  waitForServer,
} from "../../../packages/testing/src/index.ts";

/**
 * Server-to-client requests a stdio upstream sends before the client opened a stream that can
 * carry them: `@modelcontextprotocol/server-filesystem` asks `roots/list` right after
 * `notifications/initialized`, before a Streamable HTTP client's GET stream exists. The gateway
 * keeps them (bounded, in the session's event store) and delivers them on the first stream.
 */
describe("server-to-client requests sent before the client's stream opens", () => {
  let stack: Stack;
  let api: Api;
  let serverId: string;
  let startDir: string;
  let clientRoot: string;
  const open: Client[] = [];

  beforeAll(async () => {
    stack = await startStack({ replicas: 1, env: { MCPGW_STDIO_ALLOWED_COMMANDS: process.execPath } });
    api = await stack.api();
    // Two directories the stdio user may read: the one on the command line, and the client's root.
    startDir = await realpath(await mkdtemp(join(tmpdir(), "mcpgw-fs-start-")));
    clientRoot = await realpath(await mkdtemp(join(tmpdir(), "mcpgw-fs-root-")));
    await Promise.all([chmod(startDir, 0o755), chmod(clientRoot, 0o755)]);
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", { name: "Fs", slug: "fs" });
    expect(ns.status).toBe(201);
    serverId = (
      await registerStdioServer(api, {
        namespace_id: ns.body.id,
        name: "files",
        command: process.execPath,
        args: [filesystemEntry, startDir],
      })
    ).id;
    // The snapshot with the server has reached the replica.
    await waitForServer(stack.dataPlanes[0]!.url, serverId, api.token);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(open.map((c) => c.close().catch(() => {})));
    await stack?.stop();
    await Promise.all([startDir, clientRoot].map((d) => d && rm(d, { recursive: true, force: true })));
  });

  /** A client that offers roots and answers `roots/list` with `clientRoot`, counting the asks. */
  async function connect(transport: Transport) {
    const client = new Client({ name: "roots-client", version: "1" }, { capabilities: { roots: {} } });
    const asked = { count: 0 };
    client.setRequestHandler(ListRootsRequestSchema, async () => {
      asked.count++;
      return { roots: [{ uri: `file://${clientRoot}`, name: "client root" }] };
    });
    await client.connect(transport);
    open.push(client);
    return { client, asked };
  }

  /** The filesystem server's allowed directories, as its tool reports them. */
  async function allowedDirectories(client: Client, tool = "list_allowed_directories"): Promise<string> {
    const result = await client.callTool({ name: tool, arguments: {} });
    return (result.content as Array<{ text?: string }>).map((c) => c.text ?? "").join("\n");
  }

  const headers = () => ({ authorization: `Bearer ${api.token}` });

  for (const kind of ["streamable_http", "sse"] as const)
    it(`${kind}: roots/list reaches the client and the server adopts its roots`, async () => {
      const base = `${stack.dataPlanes[0]!.url}/servers/${serverId}`;
      const transport =
        kind === "streamable_http"
          ? new StreamableHTTPClientTransport(new URL(`${base}/mcp`), { requestInit: { headers: headers() } })
          : new SSEClientTransport(new URL(`${base}/sse`), {
              requestInit: { headers: headers() },
              eventSourceInit: {
                fetch: (url, init) => fetch(url, { ...init, headers: { ...init?.headers, ...headers() } }),
              },
            });
      const { client, asked } = await connect(transport);
      await eventually(
        () => asked.count > 0,
        15_000,
        "the upstream's roots/list request to reach the client",
      );
      const dirs = await eventually(
        async () => {
          const listed = await allowedDirectories(client);
          return listed.includes(clientRoot) ? listed : undefined;
        },
        15_000,
        "server-filesystem to report the client's root as allowed",
      );
      expect(dirs).toContain(clientRoot);
      expect(stack.dataPlanes[0]!.proc.output()).not.toMatch(/Failed to request initial roots/);
    }, 60_000);

  it("through a namespace: the member's roots/list reaches the client", async () => {
    const { client, asked } = await connect(
      new StreamableHTTPClientTransport(new URL(`${stack.dataPlanes[0]!.url}/ns/fs/mcp`), {
        requestInit: { headers: headers() },
      }),
    );
    await eventually(() => asked.count > 0, 15_000, "the member's roots/list request to reach the client");
    const dirs = await eventually(
      async () => {
        const listed = await allowedDirectories(client, "files__list_allowed_directories");
        return listed.includes(clientRoot) ? listed : undefined;
      },
      15_000,
      "the member to report the client's root as allowed",
    );
    expect(dirs).toContain(clientRoot);
  }, 60_000);

  it("a client that reconnects its GET stream gets nothing twice", async () => {
    const base = `${stack.dataPlanes[0]!.url}/servers/${serverId}`;
    const { client, asked } = await connect(
      new StreamableHTTPClientTransport(new URL(`${base}/mcp`), { requestInit: { headers: headers() } }),
    );
    await eventually(() => asked.count > 0, 15_000, "the first roots/list");
    // A second stream for the session opened by hand (no Last-Event-ID) replays nothing.
    const transport = (client as unknown as { transport: StreamableHTTPClientTransport }).transport;
    await client.close();
    // Until the gateway has seen the closed stream go, a new one is refused (409, one per session).
    const again = (await eventually(
      async () => {
        const res = await fetch(`${base}/mcp`, {
          headers: {
            ...headers(),
            accept: "text/event-stream",
            "mcp-session-id": transport.sessionId!,
            "mcp-protocol-version": "2025-06-18",
          },
          signal: AbortSignal.timeout(1500),
        });
        if (res.status === 409) await res.body?.cancel();
        return res.status === 409 ? undefined : res;
      },
      10_000,
      "the session's old GET stream to be gone",
    )) as Response;
    expect(again.status).toBe(200);
    let text = "";
    try {
      const reader = again.body!.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
    } catch {
      // The timeout ends the read: what arrived until then is what the stream carried.
    }
    expect(text).not.toContain("roots/list");
    expect(asked.count).toBe(1);
  }, 60_000);
});
