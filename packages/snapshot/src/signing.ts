import { CompactSign, compactVerify, exportJWK, generateKeyPair, importJWK, type JWK } from "jose";
import { type Snapshot, snapshotKey, snapshotSchema } from "./schema.ts";

const ALG = "EdDSA";
const TYP = "mcpgw-snapshot+jws";

export type SnapshotSigningKey = CryptoKey & { readonly __brand?: "signing" };

/** Thrown when a snapshot fails signature, schema or key checks; the caller keeps what it had. */
export class SnapshotRejected extends Error {
  override name = "SnapshotRejected";
}

/** A new Ed25519 key pair for signing snapshots, as JWKs (the private one holds `d`). */
export async function generateSnapshotKeys(): Promise<{ privateJwk: JWK; publicJwk: JWK }> {
  const { privateKey, publicKey } = await generateKeyPair(ALG, { crv: "Ed25519", extractable: true });
  return { privateJwk: await exportJWK(privateKey), publicJwk: await exportJWK(publicKey) };
}

function decodeJwk(encoded: string): JWK {
  const text = encoded.trim().startsWith("{") ? encoded : Buffer.from(encoded, "base64").toString("utf8");
  return JSON.parse(text) as JWK;
}

/** Imports a JWK given as JSON text or base64 of that text (env-friendly). */
export async function importSnapshotKey(encoded: string): Promise<CryptoKey> {
  const key = await importJWK(decodeJwk(encoded), ALG);
  if (!(key instanceof CryptoKey)) throw new Error("snapshot keys must be asymmetric (Ed25519)");
  return key;
}

/** The public half of an encoded private snapshot key. */
export async function importSnapshotPublicKeyOf(encodedPrivate: string): Promise<CryptoKey> {
  const { d: _private, ...publicJwk } = decodeJwk(encodedPrivate);
  return importSnapshotKey(JSON.stringify(publicJwk));
}

/** Signs a snapshot as a compact JWS whose payload is the snapshot JSON. */
export async function signSnapshot(snapshot: Snapshot, privateKey: CryptoKey): Promise<string> {
  const payload = new TextEncoder().encode(JSON.stringify(snapshot));
  return new CompactSign(payload).setProtectedHeader({ alg: ALG, typ: TYP }).sign(privateKey);
}

/**
 * Verifies a snapshot read under `key`: signature, schema, and that the payload belongs to
 * that key (an org's snapshot replayed under another org's key is rejected).
 */
export async function verifySnapshot(jws: string, publicKey: CryptoKey, key: string): Promise<Snapshot> {
  let payload: Uint8Array;
  try {
    ({ payload } = await compactVerify(jws, publicKey, { algorithms: [ALG] }));
  } catch {
    throw new SnapshotRejected(`snapshot ${key}: bad signature`);
  }
  let parsed: Snapshot;
  try {
    parsed = snapshotSchema.parse(JSON.parse(new TextDecoder().decode(payload)));
  } catch {
    throw new SnapshotRejected(`snapshot ${key}: payload does not match the schema`);
  }
  if (snapshotKey(parsed) !== key)
    throw new SnapshotRejected(`snapshot ${key}: payload is for ${snapshotKey(parsed)}`);
  return parsed;
}
