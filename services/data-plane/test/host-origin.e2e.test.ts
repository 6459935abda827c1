import { request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import {
  type Api,
  eventually,
  initializeRequest,
  type Stack,
  startEverythingServer,
  startStack,
} from "../../../packages/testing/src/index.ts";

/** A raw HTTP request (fetch would not let a test set `Host`). */
function post(
  url: string,
  headers: Record<string, string>,
  body: unknown,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: "POST", headers }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d) => {
        text += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

const METRICS_TOKEN = "metrics-token-for-tests-0123456789";

// MCP transports: servers MUST validate Origin (DNS rebinding); the gateway also checks Host.
describe("DNS-rebinding protection: Host and Origin validation on every data-plane route", () => {
  let stack: Stack;
  let api: Api;
  let everything: Awaited<ReturnType<typeof startEverythingServer>>;
  let mcpUrl: string;
  let headers: Record<string, string>;

  beforeAll(async () => {
    [stack, everything] = await Promise.all([
      startStack({
        replicas: 1,
        env: {
          MCPGW_ALLOWED_HOSTS: "gw.test",
          MCPGW_ALLOWED_ORIGINS: "https://console.test",
          MCPGW_METRICS_TOKEN: METRICS_TOKEN,
        },
      }),
      startEverythingServer(),
    ]);
    api = await stack.api();
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", { name: "O", slug: "o" });
    const server = await api.call<{ id: string }>("POST", "/api/v1/servers", {
      namespace_id: ns.body.id,
      name: "everything",
      transport: "streamable_http",
      url: everything.url,
    });
    mcpUrl = `${stack.dataPlanes[0]!.url}/servers/${server.body.id}/mcp`;
    headers = {
      authorization: `Bearer ${api.token}`,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
    };
    await eventually(
      async () => (await post(mcpUrl, headers, initializeRequest("ready"))).status === 200,
      20_000,
    ).catch((err) => {
      throw new Error(`the data plane did not serve the server: ${err}`);
    });
  }, 90_000);

  afterAll(async () => {
    await stack?.stop();
    await everything?.proc.stop();
  });

  it("refuses a rebinding Host and a foreign Origin with 403 and a JSON-RPC error naming the setting", async () => {
    const host = await post(mcpUrl, { ...headers, host: "evil.example" }, initializeRequest("x"));
    expect(host.status).toBe(403);
    expect(JSON.parse(host.body)).toMatchObject({
      jsonrpc: "2.0",
      id: null,
      error: { code: -32003, message: expect.stringContaining("MCPGW_ALLOWED_HOSTS") },
    });
    const origin = await post(mcpUrl, { ...headers, origin: "http://evil.example" }, initializeRequest("x"));
    expect(origin.status).toBe(403);
    expect(origin.body).toContain("MCPGW_ALLOWED_ORIGINS");
    const rpc = await post(
      mcpUrl.replace(/\/mcp$/, "/rpc"),
      { ...headers, host: "evil.example:8080" },
      { jsonrpc: "2.0", id: 1, method: "ping" },
    );
    expect(rpc.status).toBe(403);
  });

  it("serves the gateway's own names, configured hosts and origins, and probes by any host", async () => {
    expect((await post(mcpUrl, { ...headers, host: "gw.test:443" }, initializeRequest("x"))).status).toBe(
      200,
    );
    expect(
      (await post(mcpUrl, { ...headers, origin: "https://console.test" }, initializeRequest("x"))).status,
    ).toBe(200);
    expect(
      (await post(mcpUrl, { ...headers, origin: "http://localhost:6274" }, initializeRequest("x"))).status,
    ).toBe(200);
    const health = await new Promise<number>((resolve, reject) => {
      request(`${stack.dataPlanes[0]!.url}/health`, { headers: { host: "10.0.0.7:8080" } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
        .on("error", reject)
        .end();
    });
    expect(health).toBe(200);
  });

  it("refuses a WebSocket upgrade from a foreign Origin before it opens", async () => {
    const ws = new WebSocket(mcpUrl.replace(/^http/, "ws").replace(/\/mcp$/, "/ws"), "mcp", {
      headers: { authorization: `Bearer ${api.token}`, origin: "http://evil.example" },
    });
    const status = await new Promise<number>((resolve) => {
      ws.on("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0));
      ws.on("open", () => resolve(101));
      ws.on("error", () => resolve(-1));
    });
    ws.terminate();
    expect(status).toBe(403);
  });

  it("serves /metrics on both planes only with the metrics token, and without tenant ids", async () => {
    for (const base of [stack.dataPlanes[0]!.url, stack.cpUrl]) {
      expect((await fetch(`${base}/metrics`)).status, base).toBe(401);
      const ok = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
      expect(ok.status, base).toBe(200);
      const text = await ok.text();
      if (base === stack.dataPlanes[0]!.url) {
        expect(text).toContain("mcpgw_dp_requests_total");
        // Requests were served above, but no series names the server (another tenant's id).
        expect(text).not.toContain(mcpUrl.split("/")[4]!);
      }
    }
  });
});
