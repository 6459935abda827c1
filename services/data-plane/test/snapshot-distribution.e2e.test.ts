import { type KvBucket, NatsBus } from "@mcpgw/bus";
import { importSnapshotKey, type OrgSnapshot, signSnapshot } from "@mcpgw/snapshot";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  eventually,
  type Stack,
  startPrivateNats,
  startStack,
  startTestUpstream,
  type TestUpstream,
  waitForReady,
} from "../../../packages/testing/src/index.ts";

async function initializeStatus(baseUrl: string, serverId: string, token: string): Promise<number> {
  const res = await fetch(`${baseUrl}/servers/${serverId}/mcp`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
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
        clientInfo: { name: "probe", version: "1" },
      },
    }),
    signal: AbortSignal.timeout(5000),
  });
  await res.body?.cancel();
  return res.status;
}

describe("snapshot distribution: signatures, versions and NATS outages", () => {
  let nats: Awaited<ReturnType<typeof startPrivateNats>>;
  let stack: Stack;
  let api: Api;
  let upstream: TestUpstream;
  let bus: NatsBus;
  let bucket: KvBucket;
  let orgId: string;
  let namespaceId: string;

  async function register(name: string): Promise<string> {
    const res = await api.call<{ id: string; org_id: string }>("POST", "/api/v1/servers", {
      namespace_id: namespaceId,
      name,
      transport: "streamable_http",
      url: upstream.url,
    });
    expect(res.status).toBe(201);
    orgId = res.body.org_id;
    return res.body.id;
  }

  const reachable = (dp: number, serverId: string, timeoutMs = 5000) =>
    eventually(
      async () => (await initializeStatus(stack.dataPlanes[dp]!.url, serverId, api.token)) === 200,
      timeoutMs,
    );

  beforeAll(async () => {
    nats = await startPrivateNats();
    [stack, upstream] = await Promise.all([
      startStack({ replicas: 2, natsUrl: nats.url }),
      startTestUpstream(),
    ]);
    api = await stack.api();
    namespaceId = (
      await api.call<{ id: string }>("POST", "/api/v1/namespaces", { name: "Dist", slug: "dist" })
    ).body.id;
    bus = await NatsBus.connect(nats.url);
    bucket = await bus.bucket(`${stack.env.MCPGW_BUS_PREFIX}_config`);
  }, 90_000);

  afterAll(async () => {
    await bus?.close().catch(() => {});
    await Promise.all([stack?.stop(), upstream?.close()]);
    await nats?.destroy();
  });

  it("ignores a tampered snapshot and an older validly signed one written into the bucket", async () => {
    const first = await register("first");
    await reachable(0, first);
    await reachable(1, first);
    const entry = (await bucket.get(`org.${orgId}`))!;
    const [h, p, s] = entry.value!.split(".");
    const current = JSON.parse(Buffer.from(p!, "base64url").toString()) as OrgSnapshot;
    const disabled = {
      ...current,
      version: current.version + 100,
      servers: current.servers.map((x) => ({ ...x, enabled: false })),
    };
    await bucket.put(
      `org.${orgId}`,
      `${h}.${Buffer.from(JSON.stringify(disabled)).toString("base64url")}.${s}`,
    );
    const signingKey = await importSnapshotKey(stack.env.MCPGW_SNAPSHOT_SIGNING_KEY!);
    await bucket.put(`org.${orgId}`, await signSnapshot({ ...disabled, version: 1 }, signingKey));
    await new Promise((r) => setTimeout(r, 500));
    for (const dp of [0, 1])
      expect(await initializeStatus(stack.dataPlanes[dp]!.url, first, api.token)).toBe(200);
    for (const dp of stack.dataPlanes) expect(dp.proc.output()).toContain("snapshot rejected");

    // The control plane overwrites what it cannot verify: the next change reaches both replicas.
    const second = await register("second");
    await reachable(0, second, 3000);
    await reachable(1, second, 3000);
  });

  it("serves from the disk cache when started while NATS is down, and catches up when NATS is back", async () => {
    const first = (
      await api.call<{ items: Array<{ id: string; name: string }> }>("GET", "/api/v1/servers")
    ).body.items.find((s) => s.name === "first")!.id;
    await nats.stop();
    // dp0 restarts with NATS down: it must be ready and serve from its cache.
    await stack.dataPlanes[0]!.restart();
    await waitForReady(`${stack.dataPlanes[0]!.url}/ready`, stack.dataPlanes[0]!.proc);
    expect(await initializeStatus(stack.dataPlanes[0]!.url, first, api.token)).toBe(200);

    // A change made during the outage is committed; its publish fails and stays in the outbox.
    const during = await register("during-outage");
    await new Promise((r) => setTimeout(r, 1000));
    expect(await initializeStatus(stack.dataPlanes[1]!.url, during, api.token)).toBe(404);

    await nats.start();
    // Both the replica that ran through the outage and the one started during it catch up.
    await reachable(1, during, 15_000);
    await reachable(0, during, 15_000);

    // A replica restarted after NATS is back catches up too.
    await stack.dataPlanes[1]!.restart();
    await waitForReady(`${stack.dataPlanes[1]!.url}/ready`, stack.dataPlanes[1]!.proc);
    const after = await register("after-outage");
    await reachable(1, after, 5000);
    await reachable(0, after, 5000);
  }, 60_000);
});
