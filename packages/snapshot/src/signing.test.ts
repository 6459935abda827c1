import { describe, expect, it } from "vitest";
import type { OrgSnapshot } from "./schema.ts";
import {
  generateSnapshotKeys,
  importSnapshotKey,
  importSnapshotPublicKeyOf,
  SnapshotRejected,
  signSnapshot,
  verifySnapshot,
} from "./signing.ts";

const snapshot: OrgSnapshot = {
  kind: "org",
  org_id: "o1",
  version: 3,
  issued_at: new Date().toISOString(),
  org: {
    slug: "acme",
    plan: "free",
    active: true,
    max_sessions: 10,
    policy_default: "allow",
    platform: false,
  },
  namespaces: [],
  servers: [],
  api_keys: [],
  policies: [],
  identity_providers: [],
  rate_limits: [],
};

async function keys() {
  const { privateJwk, publicJwk } = await generateSnapshotKeys();
  return {
    priv: await importSnapshotKey(JSON.stringify(privateJwk)),
    pub: await importSnapshotKey(Buffer.from(JSON.stringify(publicJwk)).toString("base64")),
  };
}

describe("snapshot signing", () => {
  it("verifies what it signed", async () => {
    const { priv, pub } = await keys();
    const jws = await signSnapshot(snapshot, priv);
    expect(await verifySnapshot(jws, pub, "org.o1")).toEqual(snapshot);
  });

  it("derives the public key from an encoded private key", async () => {
    const { privateJwk } = await generateSnapshotKeys();
    const priv = await importSnapshotKey(JSON.stringify(privateJwk));
    const pub = await importSnapshotPublicKeyOf(Buffer.from(JSON.stringify(privateJwk)).toString("base64"));
    expect(pub.type).toBe("public");
    expect((await verifySnapshot(await signSnapshot(snapshot, priv), pub, "org.o1")).version).toBe(3);
  });

  it("rejects a tampered payload, a foreign key and a snapshot under another org's key", async () => {
    const { priv, pub } = await keys();
    const other = await keys();
    const jws = await signSnapshot(snapshot, priv);
    const [h, , s] = jws.split(".");
    const forged = Buffer.from(JSON.stringify({ ...snapshot, version: 99 })).toString("base64url");
    await expect(verifySnapshot(`${h}.${forged}.${s}`, pub, "org.o1")).rejects.toThrow(SnapshotRejected);
    await expect(verifySnapshot(jws, other.pub, "org.o1")).rejects.toThrow(SnapshotRejected);
    await expect(verifySnapshot(jws, pub, "org.o2")).rejects.toThrow(SnapshotRejected);
  });
});
