import { eq } from "drizzle-orm";
import { afterAll, describe, expect, it } from "vitest";
import { createTestDatabase } from "../../testing/src/database.ts";
import { type DbHandle, openDatabase } from "./client.ts";
import { namespaces, organizations } from "./schema.ts";

// One contract, both drivers: the same migrations and queries on Postgres and PGlite.
const drivers: Array<[string, () => Promise<{ handle: DbHandle; drop: () => Promise<void> }>]> = [
  [
    "postgres",
    async () => {
      const test = await createTestDatabase();
      const handle = await openDatabase(test.url, { max: 2 });
      return { handle, drop: test.drop };
    },
  ],
  ["pglite", async () => ({ handle: await openDatabase("pglite://memory"), drop: async () => {} })],
];

describe.each(drivers)("database on %s", (_name, open) => {
  let ctx: { handle: DbHandle; drop: () => Promise<void> };
  afterAll(async () => {
    await ctx?.handle.close();
    await ctx?.drop();
  });

  it("migrates and enforces case-insensitive unique slugs per org", async () => {
    ctx = await open();
    await ctx.handle.migrate();
    // Applying migrations twice is a no-op.
    await ctx.handle.migrate();
    const { db } = ctx.handle;
    const [org] = await db.insert(organizations).values({ name: "Acme", slug: "acme" }).returning();
    expect(org?.config_version).toBe(1);
    await db.insert(namespaces).values({ org_id: org!.id, name: "Team", slug: "Team" });
    await expect(
      db.insert(namespaces).values({ org_id: org!.id, name: "Team 2", slug: "team" }),
    ).rejects.toThrow();
    const found = await db.select().from(namespaces).where(eq(namespaces.slug, "TEAM"));
    expect(found).toHaveLength(1);
    await db.delete(organizations).where(eq(organizations.id, org!.id));
    expect(await db.select().from(namespaces)).toHaveLength(0);
  });
});
