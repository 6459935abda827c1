import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Keyring } from "@mcpgw/secrets";
import { generateSnapshotKeys } from "@mcpgw/snapshot";

export interface EmbeddedKeys {
  master_key: string;
  snapshot_signing_key: string;
  snapshot_public_key: string;
}

/**
 * The keys of an embedded install, generated on first start into `<data dir>/keys.json`
 * (mode 0600). Distributed deployments pass the same keys through the environment instead.
 */
export async function loadOrCreateKeys(dataDir: string): Promise<EmbeddedKeys> {
  const file = join(dataDir, "keys.json");
  try {
    return JSON.parse(await readFile(file, "utf8")) as EmbeddedKeys;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  const { privateJwk, publicJwk } = await generateSnapshotKeys();
  const keys: EmbeddedKeys = {
    master_key: Keyring.generateKey(),
    snapshot_signing_key: JSON.stringify(privateJwk),
    snapshot_public_key: JSON.stringify(publicJwk),
  };
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  await writeFile(file, JSON.stringify(keys, null, 2), { mode: 0o600, flag: "wx" });
  return keys;
}
