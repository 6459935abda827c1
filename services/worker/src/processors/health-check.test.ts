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
import { healthCheckProcessor } from "./health-check.ts";

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

  async function probe(allowPrivateUpstreams: boolean) {
    const health = await bus.bucket("health");
    const process = healthCheckProcessor({
      db: database.db,
      health,
      logger,
      credentials: new UpstreamCredentials(undefined),
      allowPrivateUpstreams,
    });
    await process({ server_id: serverId });
    const [latest] = await database.db
      .select()
      .from(schema.healthChecks)
      .where(eq(schema.healthChecks.server_id, serverId))
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
});
