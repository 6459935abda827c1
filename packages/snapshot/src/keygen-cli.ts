import { generateSnapshotKeys } from "./signing.ts";

// `pnpm keygen`: prints a snapshot signing key pair for distributed mode.
const { privateJwk, publicJwk } = await generateSnapshotKeys();
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64");
console.log(`# control plane\nMCPGW_SNAPSHOT_SIGNING_KEY=${b64(privateJwk)}`);
console.log(`# data planes\nMCPGW_SNAPSHOT_PUBLIC_KEY=${b64(publicJwk)}`);
