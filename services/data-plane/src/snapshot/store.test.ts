import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateSnapshotKeys, importSnapshotKey, type OrgSnapshot, signSnapshot } from "@mcpgw/snapshot";
import { createLogger } from "@mcpgw/telemetry";
import { afterEach, describe, expect, it } from "vitest";
import { SnapshotStore } from "./store.ts";

const logger = createLogger("test", "silent");

function orgSnapshot(version: number, serverName = "s"): OrgSnapshot {
  return {
    kind: "org",
    org_id: "o1",
    version,
    issued_at: new Date().toISOString(),
    org: {
      slug: "acme",
      plan: "free",
      active: true,
      max_sessions: 10,
      policy_default: "allow",
      platform: false,
    },
    namespaces: [{ id: "ns1", slug: "team", name: "Team", tool_naming: "prefix", tool_separator: "__" }],
    api_keys: [],
    policies: [],
    identity_providers: [],
    rate_limits: [],
    servers: [
      {
        id: "srv1",
        namespace_id: "ns1",
        name: serverName,
        transport: "streamable_http",
        enabled: true,
        endpoints: [{ url: "http://127.0.0.1:1/mcp", weight: 1 }],
        stdio: null,
        timeout_ms: 1000,
        connect_timeout_ms: 1000,
        retries: 0,
        credentials_sealed: null,
      },
    ],
  };
}

async function keys() {
  const { privateJwk, publicJwk } = await generateSnapshotKeys();
  return {
    priv: await importSnapshotKey(JSON.stringify(privateJwk)),
    pub: await importSnapshotKey(JSON.stringify(publicJwk)),
  };
}

describe("SnapshotStore", () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });

  it("applies newer versions and never lets an older one replace a newer one", async () => {
    const { priv, pub } = await keys();
    const store = new SnapshotStore(pub, undefined, logger);
    expect(await store.apply("org.o1", await signSnapshot(orgSnapshot(2, "v2"), priv))).toBe("applied");
    expect(await store.apply("org.o1", await signSnapshot(orgSnapshot(1, "v1"), priv))).toBe("stale");
    expect(await store.apply("org.o1", await signSnapshot(orgSnapshot(2, "again"), priv))).toBe("stale");
    expect(store.current.servers.get("srv1")?.server.name).toBe("v2");
    expect(await store.apply("org.o1", await signSnapshot(orgSnapshot(3, "v3"), priv))).toBe("applied");
    expect(store.current.servers.get("srv1")?.server.name).toBe("v3");
  });

  it("rejects tampered snapshots, foreign signatures and snapshots under another key, keeping what it had", async () => {
    const { priv, pub } = await keys();
    const other = await keys();
    const store = new SnapshotStore(pub, undefined, logger);
    await store.apply("org.o1", await signSnapshot(orgSnapshot(1, "good"), priv));
    const jws = await signSnapshot(orgSnapshot(5, "evil"), priv);
    const [h, , s] = jws.split(".");
    const forged = Buffer.from(JSON.stringify(orgSnapshot(9, "forged"))).toString("base64url");
    expect(await store.apply("org.o1", `${h}.${forged}.${s}`)).toBe("rejected");
    expect(await store.apply("org.o1", await signSnapshot(orgSnapshot(7, "foreign"), other.priv))).toBe(
      "rejected",
    );
    expect(await store.apply("org.o2", jws)).toBe("rejected");
    expect(await store.apply("org.o1", "not a jws")).toBe("rejected");
    expect(store.current.servers.get("srv1")?.server.name).toBe("good");
  });

  it("swaps state atomically: a reader holding the old state keeps a consistent view", async () => {
    const { priv, pub } = await keys();
    const store = new SnapshotStore(pub, undefined, logger);
    await store.apply("org.o1", await signSnapshot(orgSnapshot(1, "old"), priv));
    const held = store.current;
    await store.apply("org.o1", await signSnapshot(orgSnapshot(2, "new"), priv));
    expect(held.servers.get("srv1")?.server.name).toBe("old");
    expect(store.current.servers.get("srv1")?.server.name).toBe("new");
  });

  it("caches accepted snapshots on disk, reloads them verified, and ignores tampered cache files", async () => {
    const { priv, pub } = await keys();
    const dir = await mkdtemp(join(tmpdir(), "mcpgw-cache-"));
    dirs.push(dir);
    const first = new SnapshotStore(pub, dir, logger);
    await first.apply("org.o1", await signSnapshot(orgSnapshot(4, "cached"), priv));
    await first.flush();
    expect(await readdir(dir)).toEqual(["org.o1.jws"]);

    const second = new SnapshotStore(pub, dir, logger);
    expect(await second.loadCache()).toBe(1);
    expect(second.current.servers.get("srv1")?.server.name).toBe("cached");

    // A deleted org leaves the cache too: it must not come back at the next start.
    second.remove("org.o1");
    await second.flush();
    expect(await readdir(dir)).toEqual([]);
    await first.apply("org.o1", await signSnapshot(orgSnapshot(5, "cached"), priv));
    await first.flush();

    await writeFile(join(dir, "org.o1.jws"), "tampered.value.here");
    const third = new SnapshotStore(pub, dir, logger);
    expect(await third.loadCache()).toBe(0);
    expect(third.current.servers.size).toBe(0);
  });
});
