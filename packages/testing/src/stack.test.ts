import { randomUUID } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import postgres from "postgres";
import { describe, expect, it } from "vitest";
import { testEnv } from "./env.ts";
import { startStack } from "./stack.ts";

/** This machine's test databases. */
async function testDatabases(): Promise<string[]> {
  const sql = postgres(testEnv.postgresUrl, { max: 1, onnotice: () => {} });
  const rows = await sql`SELECT datname FROM pg_database WHERE datname LIKE 'mcpgw_test_%'`;
  await sql.end();
  return rows.map((r) => r.datname as string);
}

/** Pids of live processes whose environment carries `marker`. */
function processesWith(marker: string): string[] {
  return readdirSync("/proc")
    .filter((pid) => /^\d+$/.test(pid))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/environ`, "utf8").includes(marker);
      } catch {
        return false; // gone, or not ours to read
      }
    });
}

describe("startStack", () => {
  it("stops what it started and drops its database when a service fails to start", async () => {
    const before = await testDatabases();
    const marker = `MCPGW_TEST_MARKER=${randomUUID()}`;
    const [key, value] = marker.split("=") as [string, string];
    // The control plane starts; the replica, with an unusable snapshot key, exits at once.
    const err = await startStack({
      replicas: 1,
      env: { [key]: value },
      replicaEnv: [{ MCPGW_SNAPSHOT_PUBLIC_KEY: "not a key" }],
    }).catch((e: unknown) => e as Error);
    expect(err, "startStack rejects").toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/before ready|not ready/);
    expect(
      (await testDatabases()).filter((d) => !before.includes(d)),
      "no database left behind",
    ).toEqual([]);
    expect(processesWith(marker), "no service of the stack left running").toEqual([]);
  }, 60_000);
});
