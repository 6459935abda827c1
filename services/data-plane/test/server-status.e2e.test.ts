import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  eventually,
  registerStdioServer,
  type Stack,
  startStack,
} from "../../../packages/testing/src/index.ts";

interface ServerView {
  status: string;
  last_error: string | null;
  data_planes: Array<{ replica: string; ok: boolean; error: string | null }>;
}

/**
 * What `GET /api/v1/servers/{id}` says about a server's health: the health check's reason for
 * HTTP servers (short, never the upstream's page), and for stdio servers each data plane's word
 * on running the command — refused by its allowlist (naming the entry), crashing at start, or
 * running — with the status that follows from them.
 */
describe("server status and its reasons", () => {
  let stack: Stack;
  let api: Api;
  let nsId: string;
  let web: Server;

  beforeAll(async () => {
    // `node` on the allowlist as a bare name: the catalog may name it by its absolute path.
    stack = await startStack({ replicas: 2, worker: true, env: { MCPGW_STDIO_ALLOWED_COMMANDS: "node" } });
    api = await stack.api();
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", {
      name: "Status",
      slug: "status",
    });
    expect(ns.status).toBe(201);
    nsId = ns.body.id;
    web = createServer((req, res) => {
      req.resume();
      res.writeHead(404, { "content-type": "text/html" });
      res.end("<!DOCTYPE html><html><body><h1>404</h1><p>internal-build-host-7</p></body></html>");
    });
    await new Promise<void>((r) => web.listen(0, "127.0.0.1", r));
  }, 120_000);

  afterAll(async () => {
    await stack?.stop();
    await new Promise((r) => web?.close(r));
  });

  const view = async (id: string) => (await api.call<ServerView>("GET", `/api/v1/servers/${id}`)).body;

  /** Waits for the server's status to become `status`; the failure shows what it last was. */
  async function statusBecomes(id: string, status: string, reports = 0): Promise<ServerView> {
    let last: ServerView | undefined;
    try {
      return (await eventually(
        async () => {
          last = await view(id);
          return last.status === status && last.data_planes.length >= reports ? last : undefined;
        },
        30_000,
        `server ${id} to become ${status}`,
      )) as ServerView;
    } catch (err) {
      throw new Error(`${(err as Error).message}; last seen: ${JSON.stringify(last)}`);
    }
  }

  it("an HTTP server at a website's URL: unhealthy, with the status and kind of answer, not the page", async () => {
    const url = `http://127.0.0.1:${(web.address() as AddressInfo).port}/mcp`;
    const created = await api.call<{ id: string } & ServerView>("POST", "/api/v1/servers", {
      namespace_id: nsId,
      name: "website",
      transport: "streamable_http",
      url,
    });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ status: "unknown", last_error: null, data_planes: [] });
    const seen = await statusBecomes(created.body.id, "unhealthy");
    expect(seen.last_error).toBe("upstream answered HTTP 404: an HTML page, not an MCP endpoint");
    expect(JSON.stringify(seen)).not.toContain("internal-build-host-7");
  }, 60_000);

  it("a stdio command every data plane refuses: unhealthy, naming the allowlist", async () => {
    const { id } = await registerStdioServer(api, {
      namespace_id: nsId,
      name: "python",
      command: "/usr/bin/python3",
      args: ["-c", "pass"],
    });
    // Both replicas' reports: the reason then says every data plane refuses it.
    const seen = await statusBecomes(id, "unhealthy", 2);
    expect(seen.last_error).toMatch(
      /every data plane refuses or fails it; dp0: .*not on this data plane's allowlist/,
    );
    expect(seen.data_planes.map((d) => [d.replica, d.ok])).toEqual([
      ["dp0", false],
      ["dp1", false],
    ]);
  }, 60_000);

  it("the absolute path of an allowed bare name runs: healthy", async () => {
    const { id } = await registerStdioServer(api, {
      namespace_id: nsId,
      name: "node-by-path",
      command: process.execPath,
      args: ["-e", "setInterval(() => {}, 1000)"],
    });
    const seen = await statusBecomes(id, "healthy");
    expect(seen.last_error).toBeNull();
    expect(seen.data_planes.every((d) => d.ok)).toBe(true);
  }, 60_000);

  it("a stdio command that exits at start: unhealthy once a data plane tried it, with the exit", async () => {
    const { id } = await registerStdioServer(api, {
      namespace_id: nsId,
      name: "crashes",
      command: process.execPath,
      args: ["-e", "process.exit(3)"],
    });
    await statusBecomes(id, "healthy"); // runnable as far as the allowlist goes
    // Each replica tries it once (a client connects to each).
    for (const dp of stack.dataPlanes) {
      const res = await fetch(`${dp.url}/servers/${id}/rpc`, {
        method: "POST",
        headers: { authorization: `Bearer ${api.token}`, "content-type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
      });
      await res.body?.cancel();
    }
    const seen = await statusBecomes(id, "unhealthy");
    expect(seen.last_error).toMatch(/exited \(code 3\) within 5 s of starting/);
  }, 60_000);
});
