import { hash, verify } from "@node-rs/argon2";

// OWASP's argon2id baseline: 19 MiB memory, 2 iterations, 1 lane.
const OPTIONS = {
  algorithm: 2 /* Algorithm.Argon2id (a const enum) */,
  memoryCost: 19_456,
  timeCost: 2,
  parallelism: 1,
} as const;

/** Hashes a password with argon2id. */
export function hashPassword(password: string): Promise<string> {
  return hash(password, OPTIONS);
}

// Verifying against this when the user does not exist keeps login timing uniform.
let dummyHash: Promise<string> | undefined;

/** Checks a password against a stored hash (or a dummy one, so unknown users take as long). */
export async function verifyPassword(stored: string | null | undefined, password: string): Promise<boolean> {
  if (!dummyHash) dummyHash = hashPassword("not-a-real-password");
  const target = stored ?? (await dummyHash);
  try {
    return (await verify(target, password)) && stored != null;
  } catch {
    return false;
  }
}
