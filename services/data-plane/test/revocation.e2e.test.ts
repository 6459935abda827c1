import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  eventually,
  type Stack,
  startStack,
  startTestUpstream,
  type TestUpstream,
} from "../../../packages/testing/src/index.ts";

/** The requirement is about one second; a slow or loaded machine (a CI runner) gets more. */
const REJECTED_WITHIN_MS = 5000;

interface Pair {
  access_token: string;
  refresh_token: string;
}

describe("revocations reach every data-plane replica: role changes and replayed refresh tokens", () => {
  let stack: Stack;
  let api: Api;
  let upstream: TestUpstream;
  let serverId: string;

  /** Waits for `condition`, failing with what it waited for. */
  async function until(what: string, condition: () => Promise<boolean>, timeoutMs: number): Promise<void> {
    try {
      await eventually(condition, timeoutMs);
    } catch (err) {
      throw new Error(`waited ${timeoutMs} ms for ${what}: ${String(err)}`);
    }
  }

  async function initializeStatus(token: string, dp: number): Promise<number> {
    const res = await fetch(`${stack.dataPlanes[dp]!.url}/servers/${serverId}/mcp`, {
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
    });
    await res.body?.cancel();
    return res.status;
  }

  async function acceptedEverywhere(token: string, what: string): Promise<void> {
    await Promise.all(
      stack.dataPlanes.map((_, dp) =>
        until(`dp${dp} to accept ${what}`, async () => (await initializeStatus(token, dp)) === 200, 5000),
      ),
    );
  }

  /** Time until every replica refuses the token with 401. */
  async function msUntilRejectedEverywhere(token: string, what: string): Promise<number> {
    const started = Date.now();
    await Promise.all(
      stack.dataPlanes.map((_, dp) =>
        until(
          `dp${dp} to refuse ${what} with 401`,
          async () => (await initializeStatus(token, dp)) === 401,
          REJECTED_WITHIN_MS,
        ),
      ),
    );
    return Date.now() - started;
  }

  async function post(path: string, body: unknown): Promise<{ status: number; body: Pair }> {
    const res = await fetch(`${stack.cpUrl}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as Pair };
  }

  async function userWithSession(name: string, role: string): Promise<{ id: string; session: Pair }> {
    const email = `${name}@revocation.test`;
    const password = `${name} password long enough`;
    const created = await api.call<{ id: string }>("POST", "/api/v1/users", { email, password, role });
    expect(created.status).toBe(201);
    const login = await post("/auth/login", { email, password });
    expect(login.status).toBe(200);
    return { id: created.body.id, session: login.body };
  }

  beforeAll(async () => {
    [stack, upstream] = await Promise.all([startStack({ replicas: 2 }), startTestUpstream()]);
    api = await stack.api();
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", {
      name: "Revocation",
      slug: "revocation",
    });
    const server = await api.call<{ id: string }>("POST", "/api/v1/servers", {
      namespace_id: ns.body.id,
      name: "guarded",
      transport: "streamable_http",
      url: upstream.url,
    });
    expect(server.status).toBe(201);
    serverId = server.body.id;
    await acceptedEverywhere(api.token, "the admin's token");
  }, 90_000);

  afterAll(async () => {
    await Promise.all([stack?.stop(), upstream?.close()]);
  });

  it("refuses a user's earlier token on both replicas soon after a role change; the refreshed one works", async () => {
    const user = await userWithSession("demoted", "admin");
    await acceptedEverywhere(user.session.access_token, "the admin-role token");

    expect((await api.call("PATCH", `/api/v1/users/${user.id}`, { role: "viewer" })).status).toBe(200);
    const ms = await msUntilRejectedEverywhere(
      user.session.access_token,
      "the token issued before the change",
    );
    expect(ms).toBeLessThan(REJECTED_WITHIN_MS);

    const rotated = await post("/auth/refresh", { refresh_token: user.session.refresh_token });
    expect(rotated.status).toBe(200);
    await acceptedEverywhere(rotated.body.access_token, "the viewer-role token from the refresh");
  }, 30_000);

  it("refuses the access token of a replayed refresh family on both replicas", async () => {
    const user = await userWithSession("replayed", "user");
    const rotated = await post("/auth/refresh", { refresh_token: user.session.refresh_token });
    expect(rotated.status).toBe(200);
    await acceptedEverywhere(rotated.body.access_token, "the token of the rotated pair");

    const replay = await post("/auth/refresh", { refresh_token: user.session.refresh_token });
    expect(replay.status).toBe(401);
    const ms = await msUntilRejectedEverywhere(rotated.body.access_token, "the token of the rotated pair");
    expect(ms).toBeLessThan(REJECTED_WITHIN_MS);
    await msUntilRejectedEverywhere(user.session.access_token, "the login's first token");

    // The user's other logins are not that family: a new one still reaches the server.
    const again = await post("/auth/login", {
      email: "replayed@revocation.test",
      password: "replayed password long enough",
    });
    expect(again.status).toBe(200);
    await acceptedEverywhere(again.body.access_token, "a token of a new login");
  }, 30_000);
});
