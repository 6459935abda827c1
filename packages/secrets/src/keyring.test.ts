import { describe, expect, it } from "vitest";
import { Keyring, SealError } from "./keyring.ts";

describe("Keyring", () => {
  it("round-trips a value and binds it to its context", () => {
    const ring = new Keyring(Keyring.generateKey());
    const sealed = ring.seal("s3cret", "server:1");
    expect(sealed).not.toContain("s3cret");
    expect(ring.open(sealed, "server:1")).toBe("s3cret");
    expect(() => ring.open(sealed, "server:2")).toThrow(SealError);
  });

  it("opens values sealed before a rotation and reports them for re-sealing", () => {
    const oldKey = Keyring.generateKey();
    const sealed = new Keyring(oldKey).seal("v");
    const rotated = new Keyring(Keyring.generateKey(), [oldKey]);
    expect(rotated.open(sealed)).toBe("v");
    expect(rotated.needsReseal(sealed)).toBe(true);
    expect(rotated.needsReseal(rotated.seal("v"))).toBe(false);
  });

  it("rejects tampered values and unknown keys", () => {
    const ring = new Keyring(Keyring.generateKey());
    const sealed = ring.seal("value");
    const parts = sealed.split(".");
    parts[3] = Buffer.from("other").toString("base64url");
    expect(() => ring.open(parts.join("."))).toThrow(SealError);
    expect(() => new Keyring(Keyring.generateKey()).open(sealed)).toThrow(SealError);
  });
});
