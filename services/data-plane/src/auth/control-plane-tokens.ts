import { createLocalJWKSet, type JWK, jwtVerify } from "jose";
import { LRUCache } from "lru-cache";
import type { GatewayState, SnapshotStore } from "../snapshot/store.ts";
import { AuthError, type Principal } from "./principal.ts";

/** What a verified token is checked against revocations by, besides its principal. */
type VerifiedToken = Principal & {
  jti: string;
  /** Issue time, epoch ms. */
  iat: number;
  /** The refresh family (login) of a user token; a replayed refresh token revokes it. */
  fid?: string | undefined;
};

/** The control plane's revocation row of a refresh family, listed among `revoked_jti`. */
const familyRevocation = (fid: string) => `fam:${fid}`;

/**
 * Verifies control-plane access tokens (user and a2a) with the public keys of the global
 * snapshot, locally. Verified tokens are cached until they expire (ES256 verification costs
 * ~100 µs; a cache hit ~1 µs); revocations (of a token, its login's refresh family or its user)
 * are checked on every hit, so a revoked token stops with the next global snapshot.
 */
export class ControlPlaneTokens {
  private jwks: ReturnType<typeof createLocalJWKSet> | undefined;
  private issuer = "";
  private audience = "";
  private revoked: ReadonlySet<string> = new Set();
  /** User id → tokens issued before this time (epoch ms) are void. */
  private revokedSubjects: ReadonlyMap<string, number> = new Map();
  private keysVersion = -1;
  private readonly cache = new LRUCache<string, VerifiedToken>({ max: 50_000 });

  /**
   * Revoked token, a token of a revoked refresh family, or a token of a user whose tokens were
   * all voided after it was issued (principals of other credentials: false).
   */
  isRevoked(principal: Principal): boolean {
    const p = principal as Partial<VerifiedToken>;
    if (p.jti === undefined) return false;
    if (this.revoked.has(p.jti)) return true;
    if (p.fid && this.revoked.has(familyRevocation(p.fid))) return true;
    const before = p.user_id ? this.revokedSubjects.get(p.user_id) : undefined;
    return before !== undefined && before > (p.iat ?? 0);
  }

  /** True for principals of a control-plane token (an a2a token, not the a2a key itself). */
  isToken(principal: Principal): boolean {
    return typeof (principal as Partial<VerifiedToken>).jti === "string";
  }

  constructor(store: SnapshotStore) {
    this.refresh(store.current);
    store.onChange((s) => this.refresh(s));
  }

  /** The issuer this control plane signs with (tokens of other issuers are external). */
  get controlPlaneIssuer(): string {
    return this.issuer;
  }

  private refresh(state: GatewayState) {
    const global = state.global;
    if (!global || global.version === this.keysVersion) return;
    this.keysVersion = global.version;
    this.jwks = createLocalJWKSet({ keys: global.jwt.keys as JWK[] });
    this.issuer = global.jwt.issuer;
    this.audience = global.jwt.audience;
    const keysChanged = JSON.stringify(global.jwt.keys) !== this.lastKeys;
    this.lastKeys = JSON.stringify(global.jwt.keys);
    this.revoked = new Set(global.revoked_jti);
    this.revokedSubjects = new Map(Object.entries(global.revoked_subjects));
    // A retired key invalidates what it signed; a new revocation is checked on each hit anyway.
    if (keysChanged) this.cache.clear();
  }

  private lastKeys = "";

  /** The principal of a token verified before and still valid, without verifying again. */
  cached(token: string): Principal | undefined {
    const p = this.cache.get(token);
    if (!p || (p.exp ?? 0) <= Date.now() / 1000 || this.isRevoked(p)) return undefined;
    return p;
  }

  async verify(token: string): Promise<Principal> {
    const now = Date.now() / 1000;
    const cached = this.cache.get(token);
    if (cached) {
      if ((cached.exp ?? 0) <= now) {
        this.cache.delete(token);
        throw new AuthError("token expired");
      }
      if (this.isRevoked(cached)) throw new AuthError("token revoked");
      return cached;
    }
    if (!this.jwks) throw new AuthError("no token keys loaded yet");
    let payload: Awaited<ReturnType<typeof jwtVerify>>["payload"];
    try {
      ({ payload } = await jwtVerify(token, this.jwks, {
        issuer: this.issuer,
        audience: this.audience,
        algorithms: ["ES256"],
      }));
    } catch (err) {
      const code = (err as { code?: string }).code;
      throw new AuthError(
        code === "ERR_JWT_EXPIRED"
          ? "token expired"
          : code === "ERR_JWT_CLAIM_VALIDATION_FAILED"
            ? "token not issued for this gateway"
            : "invalid token",
      );
    }
    if (
      typeof payload.sub !== "string" ||
      typeof payload.org_id !== "string" ||
      typeof payload.jti !== "string"
    ) {
      throw new AuthError("token lacks required claims");
    }
    const keyId = typeof payload.key_id === "string" ? payload.key_id : undefined;
    const iat =
      typeof payload.iat_ms === "number"
        ? payload.iat_ms
        : typeof payload.iat === "number"
          ? payload.iat * 1000
          : 0;
    const principal: VerifiedToken = keyId
      ? {
          kind: "a2a",
          id: `a2a:${keyId}`,
          org_id: payload.org_id,
          role: "api_user",
          a2a_key_id: keyId,
          namespace_id: typeof payload.namespace_id === "string" ? payload.namespace_id : undefined,
          exp: Number(payload.exp),
          jti: payload.jti,
          iat,
        }
      : {
          kind: "user",
          id: payload.sub,
          org_id: payload.org_id,
          role: String(payload.role ?? "viewer"),
          user_id: payload.sub,
          exp: Number(payload.exp),
          jti: payload.jti,
          iat,
          fid: typeof payload.fid === "string" ? payload.fid : undefined,
        };
    if (this.isRevoked(principal)) throw new AuthError("token revoked");
    this.cache.set(token, principal, { ttl: Math.max(1, ((principal.exp ?? now) - now) * 1000) });
    return principal;
  }
}
