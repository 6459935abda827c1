import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { MemoryBus } from "@mcpgw/bus";
import { type DbHandle, openDatabase, schema } from "@mcpgw/db";
import { createLogger } from "@mcpgw/telemetry";
import { UpstreamCredentials } from "@mcpgw/upstream-credentials";
import { desc, eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createTestDatabase,
  runId,
  startTestUpstream,
  type TestUpstream,
} from "../../../../packages/testing/src/index.ts";
import { healthCheckProcessor, probeFailure } from "./health-check.ts";

describe("health-check processor egress", () => {
  let test: Awaited<ReturnType<typeof createTestDatabase>>;
  let database: DbHandle;
  let upstream: TestUpstream;
  let serverId: string;
  const bus = new MemoryBus();
  const logger = createLogger("worker-test", "silent");

  beforeAll(async () => {
    [test, upstream] = await Promise.all([createTestDatabase(), startTestUpstream()]);
    database = await openDatabase(test.url, { max: 2 });
    const id = runId();
    const [org] = await database.db
      .insert(schema.organizations)
      .values({ name: "Egress", slug: `egress-${id}` })
      .returning();
    const [ns] = await database.db
      .insert(schema.namespaces)
      .values({ org_id: org!.id, name: "Egress", slug: "egress" })
      .returning();
    // The test upstream listens on 127.0.0.1: an IP-literal private upstream.
    const [server] = await database.db
      .insert(schema.mcpServers)
      .values({
        org_id: org!.id,
        namespace_id: ns!.id,
        name: "probed",
        transport: "streamable_http",
        url: upstream.url,
        endpoints: [{ url: upstream.url, weight: 1 }],
        health_check_timeout_ms: 2000,
      })
      .returning();
    serverId = server!.id;
  }, 60_000);

  afterAll(async () => {
    await Promise.all([upstream?.close(), database?.close()]);
    await test?.drop();
  });

  async function probe(allowPrivateUpstreams: boolean, id = serverId) {
    const health = await bus.bucket("health");
    const process = healthCheckProcessor({
      db: database.db,
      health,
      logger,
      credentials: new UpstreamCredentials(undefined),
      allowPrivateUpstreams,
    });
    await process({ server_id: id });
    const [latest] = await database.db
      .select()
      .from(schema.healthChecks)
      .where(eq(schema.healthChecks.server_id, id))
      .orderBy(desc(schema.healthChecks.checked_at))
      .limit(1);
    return latest!;
  }

  it("refuses a private upstream at connect time unless private upstreams are allowed", async () => {
    const refused = await probe(false);
    expect(refused.status).toBe("unhealthy");
    expect(refused.error).toMatch(/^egress refused: 127\.0\.0\.1 is a private or special-purpose address/);
    expect(upstream.received).toHaveLength(0);

    const allowed = await probe(true);
    expect(allowed).toMatchObject({ status: "healthy", error: null });
    expect(upstream.received.length).toBeGreaterThanOrEqual(2);
  });

  it("records why a server is unhealthy, short and without the upstream's body, and clears it once healthy", async () => {
    // A web server at the configured URL: its 404 page is HTML.
    const web = createServer((req, res) => {
      req.resume();
      res.writeHead(404, { "content-type": "text/html" });
      res.end("<!DOCTYPE html><html><body><h1>Not Found</h1><p>secret-internal-hostname</p></body></html>");
    });
    await new Promise<void>((r) => web.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(web.address() as AddressInfo).port}/mcp`;
    const [row] = await database.db
      .select()
      .from(schema.mcpServers)
      .where(eq(schema.mcpServers.id, serverId));
    const [html] = await database.db
      .insert(schema.mcpServers)
      .values({
        org_id: row!.org_id,
        namespace_id: row!.namespace_id,
        name: "website",
        transport: "streamable_http",
        url,
        endpoints: [{ url, weight: 1 }],
        health_check_timeout_ms: 2000,
      })
      .returning();
    try {
      const check = await probe(true, html!.id);
      expect(check.status).toBe("unhealthy");
      expect(check.error).toBe("upstream answered HTTP 404: an HTML page, not an MCP endpoint");
      const [after] = await database.db
        .select()
        .from(schema.mcpServers)
        .where(eq(schema.mcpServers.id, html!.id));
      expect(after).toMatchObject({ status: "unhealthy", last_error: check.error });

      // Pointed at the MCP server, the next check clears the reason.
      await database.db
        .update(schema.mcpServers)
        .set({ endpoints: [{ url: upstream.url, weight: 1 }] })
        .where(eq(schema.mcpServers.id, html!.id));
      expect(await probe(true, html!.id)).toMatchObject({ status: "healthy", error: null });
      const [healed] = await database.db
        .select()
        .from(schema.mcpServers)
        .where(eq(schema.mcpServers.id, html!.id));
      expect(healed).toMatchObject({ status: "healthy", last_error: null });
    } finally {
      await new Promise((r) => web.close(r));
    }
  });
});

describe("probeFailure", () => {
  it("names the status and kind of answer, or the connection error, never a body", () => {
    const http = (code: number, message: string) => Object.assign(new Error(message), { code });
    expect(probeFailure(http(404, "Error POSTing to endpoint: <html><body>x</body></html>"))).toBe(
      "upstream answered HTTP 404: an HTML page, not an MCP endpoint",
    );
    expect(probeFailure(http(401, '{"error":"invalid_token"}'))).toBe(
      "upstream answered HTTP 401: the upstream refused the gateway's credentials",
    );
    expect(probeFailure(http(502, "Bad gateway"))).toBe("upstream answered HTTP 502: upstream error");
    expect(probeFailure(http(-32602, "MCP error -32602: secret upstream words"))).toBe(
      "upstream refused the probe (JSON-RPC -32602)",
    );
    const refused = new TypeError("fetch failed", {
      cause: Object.assign(new Error("connect"), { code: "ECONNREFUSED" }),
    });
    expect(probeFailure(refused)).toBe("connection refused");
    expect(probeFailure(new Error('unexpected {"stack":"at x"}'))).toBe("the upstream's answer is not MCP");
    expect(probeFailure(new Error("x".repeat(500)))).toHaveLength(200);
  });
});
