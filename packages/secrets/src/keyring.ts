import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";

const VERSION = "s1";

interface MasterKey {
  id: string;
  key: Buffer;
}

/** Thrown when a sealed value cannot be opened (unknown key, tampering, bad format). */
export class SealError extends Error {
  override name = "SealError";
}

function toKey(encoded: string): MasterKey {
  const key = Buffer.from(encoded, "base64");
  if (key.length !== 32) throw new SealError("a master key must be 32 bytes, base64-encoded");
  // The id only tells which key sealed a value; it reveals nothing usable about the key.
  const id = createHash("sha256").update(key).digest("base64url").slice(0, 8);
  return { id, key };
}

/**
 * AES-256-GCM sealing with key rotation: values are sealed with the active key and opened
 * with whichever key of the ring sealed them, so old keys can be retired after a re-seal.
 */
export class Keyring {
  private readonly active: MasterKey;
  private readonly byId: Map<string, MasterKey>;

  /** `active` seals; `previous` keys only open values sealed before a rotation. */
  constructor(active: string, previous: readonly string[] = []) {
    this.active = toKey(active);
    this.byId = new Map([this.active, ...previous.map(toKey)].map((k) => [k.id, k]));
  }

  /** A fresh random master key, base64-encoded. */
  static generateKey(): string {
    return randomBytes(32).toString("base64");
  }

  get activeKeyId(): string {
    return this.active.id;
  }

  /** Seals `plaintext`; `context` binds the value to where it is stored (additional data). */
  seal(plaintext: string, context = ""): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", this.active.key, iv);
    cipher.setAAD(Buffer.from(context));
    const body = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()]);
    const tag = cipher.getAuthTag();
    return [
      VERSION,
      this.active.id,
      iv.toString("base64url"),
      body.toString("base64url"),
      tag.toString("base64url"),
    ].join(".");
  }

  /** Opens a value sealed by any key of this ring with the same `context`. */
  open(sealed: string, context = ""): string {
    const parts = sealed.split(".");
    if (parts.length !== 5 || parts[0] !== VERSION) throw new SealError("not a sealed value");
    const [, keyId, iv, body, tag] = parts as [string, string, string, string, string];
    const key = this.byId.get(keyId);
    if (!key) throw new SealError("sealed with a key that is not in the keyring");
    try {
      const decipher = createDecipheriv("aes-256-gcm", key.key, Buffer.from(iv, "base64url"));
      decipher.setAAD(Buffer.from(context));
      decipher.setAuthTag(Buffer.from(tag, "base64url"));
      return Buffer.concat([decipher.update(Buffer.from(body, "base64url")), decipher.final()]).toString(
        "utf8",
      );
    } catch {
      throw new SealError("sealed value failed authentication");
    }
  }

  /** True when the value was sealed with a key other than the active one. */
  needsReseal(sealed: string): boolean {
    return sealed.split(".")[1] !== this.active.id;
  }
}
