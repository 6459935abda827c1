import postgres from "postgres";
import { openDatabase } from "../../db/src/client.ts";
import { runId, testEnv } from "./env.ts";

/** Creates a migrated database of its own for one test file; `drop()` removes it. */
export async function createTestDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `mcpgw_test_${runId()}`;
  const admin = postgres(testEnv.postgresUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE "${name}"`);
  await admin.end();
  const url = new URL(testEnv.postgresUrl);
  url.pathname = `/${name}`;
  const handle = await openDatabase(url.toString(), { max: 1 });
  await handle.migrate();
  await handle.close();
  return {
    url: url.toString(),
    drop: async () => {
      const conn = postgres(testEnv.postgresUrl, { max: 1, onnotice: () => {} });
      await conn.unsafe(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      await conn.end();
    },
  };
}
