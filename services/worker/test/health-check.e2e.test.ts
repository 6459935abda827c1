import { NatsBus } from "@mcpgw/bus";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  eventually,
  type Stack,
  startStack,
  startTestUpstream,
  type TestUpstream,
  testEnv,
} from "../../../packages/testing/src/index.ts";

interface Server {
  id: string;
  status: string;
  last_health_check_at: string | null;
}

describe("worker health checks (BullMQ on Redis, real upstream)", () => {
  let stack: Stack;
  let api: Api;
  let upstream: TestUpstream;
  let serverId: string;

  const status = async () => (await api.call<Server>("GET", `/api/v1/servers/${serverId}`)).body.status;

  beforeAll(async () => {
    [stack, upstream] = await Promise.all([startStack({ replicas: 1, worker: true }), startTestUpstream()]);
    api = await stack.api();
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", {
      name: "Health",
      slug: "health",
    });
    const created = await api.call<Server>("POST", "/api/v1/servers", {
      namespace_id: ns.body.id,
      name: "checked",
      transport: "streamable_http",
      url: upstream.url,
      health_check_interval_s: 5,
      health_check_timeout_ms: 1000,
    });
    serverId = created.body.id;
  }, 90_000);

  afterAll(async () => {
    await Promise.all([stack?.stop(), upstream?.close()]);
  });

  it("marks a reachable upstream healthy after an MCP initialize + ping, and publishes it to the health bucket", async () => {
    await eventually(
      async () => (await status()) === "healthy",
      30_000,
      "the first health check to find the server healthy",
    );
    // The probe spoke MCP: an initialize and a ping reached the upstream.
    const bodies = upstream.received.filter((r) => r.method === "POST");
    expect(bodies.length).toBeGreaterThanOrEqual(2);
    const bus = await NatsBus.connect(testEnv.natsUrl);
    try {
      const bucket = await bus.bucket(`${stack.env.MCPGW_BUS_PREFIX}_health`);
      const entry = await bucket.get(`server.${serverId}`);
      expect(JSON.parse(entry!.value!)).toMatchObject({ server_id: serverId, status: "healthy" });
    } finally {
      await bus.close();
    }
  });

  it("marks a stopped upstream unhealthy and a restarted one healthy again", async () => {
    const port = upstream.port;
    await upstream.close();
    await eventually(
      async () => (await status()) === "unhealthy",
      30_000,
      "the server to turn unhealthy after its upstream stopped",
    );
    upstream = await startTestUpstream(port);
    await eventually(async () => (await status()) === "healthy", 30_000, "the server to turn healthy again");
  }, 60_000);

  it("stops cleanly on SIGTERM", async () => {
    await stack.worker!.stop(10_000);
    expect(stack.worker!.child.exitCode).toBe(0);
    expect(stack.worker!.output()).toContain("worker shutting down");
  });
});
