import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  type Stack,
  startStack,
  startTestUpstream,
  type TestUpstream,
} from "../../../packages/testing/src/index.ts";

describe("the plan's max_sessions, counted across replicas", () => {
  let stack: Stack;
  let api: Api;
  let upstream: TestUpstream;
  let serverId: string;

  const headers = () => ({
    authorization: `Bearer ${api.token}`,
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
  });
  const initialize = async (dp: number) => {
    const res = await fetch(`${stack.dataPlanes[dp]!.url}/servers/${serverId}/mcp`, {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: {
          protocolVersion: "2025-11-25",
          capabilities: {},
          clientInfo: { name: "quota", version: "1" },
        },
      }),
    });
    const body = await res.text();
    return { status: res.status, session: res.headers.get("mcp-session-id"), body };
  };

  beforeAll(async () => {
    [stack, upstream] = await Promise.all([startStack({ replicas: 2 }), startTestUpstream()]);
    api = await stack.api();
    const ns = await api.call<{ id: string; org_id: string }>("POST", "/api/v1/namespaces", {
      name: "Quota",
      slug: "quota",
    });
    serverId = (
      await api.call<{ id: string }>("POST", "/api/v1/servers", {
        namespace_id: ns.body.id,
        name: "s",
        transport: "streamable_http",
        url: upstream.url,
      })
    ).body.id;
    expect(
      (await api.call("PATCH", `/api/v1/organizations/${ns.body.org_id}`, { max_sessions: 2 })).status,
    ).toBe(200);
    // Snapshot with the new limit on both replicas.
    await new Promise((r) => setTimeout(r, 1000));
  }, 90_000);

  afterAll(async () => {
    await Promise.all([stack?.stop(), upstream?.close()]);
  });

  it("refuses a session over the limit on any replica, and admits one again when a session ends", async () => {
    const statuses: number[] = [];
    const sessions: string[] = [];
    for (const dp of [0, 1, 0, 1]) {
      const r = await initialize(dp);
      statuses.push(r.status);
      if (r.session) sessions.push(r.session);
    }
    expect(statuses).toEqual([200, 200, 429, 429]);
    const refused = await initialize(1);
    expect(refused.status).toBe(429);
    expect(refused.body).toContain("at most 2 concurrent MCP sessions");
    // Ending a session frees its place, on whichever replica it is ended.
    const ended = await fetch(`${stack.dataPlanes[1]!.url}/servers/${serverId}/mcp`, {
      method: "DELETE",
      headers: { ...headers(), "mcp-session-id": sessions[0]! },
    });
    expect(ended.status).toBe(200);
    expect((await initialize(0)).status).toBe(200);
    expect((await initialize(1)).status).toBe(429);
  });
});
