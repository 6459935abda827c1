import { openDatabase } from "./client.ts";

// `pnpm migrate`: applies migrations to DATABASE_URL (or the embedded PGlite store).
const url = process.env.DATABASE_URL ?? `pglite://${process.env.MCPGW_DATA_DIR ?? ".mcpgw"}/pg`;
const handle = await openDatabase(url, { max: 1 });
try {
  await handle.migrate();
  console.log(`migrations applied to ${url.replace(/\/\/[^@]*@/, "//***@")}`);
} finally {
  await handle.close();
}
