import { randomUUID } from "node:crypto";
import type { Db } from "@mcpgw/db";
import { schema } from "@mcpgw/db";
import type { Keyring } from "@mcpgw/secrets";
import { desc, isNull, sql } from "drizzle-orm";
import {
  createLocalJWKSet,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
  type JWTPayload,
  jwtVerify,
  SignJWT,
} from "jose";

const ALG = "ES256";

/** Claims of a control-plane access token beyond the registered ones. */
export interface AccessClaims {
  sub: string;
  org_id: string;
  role: string;
  platform_admin?: boolean;
  /** a2a tokens: the key they were exchanged for, its namespace scope and permissions. */
  key_id?: string | undefined;
  namespace_id?: string | undefined;
  scope?: string | undefined;
  /** User tokens: the refresh family (login) they came from, so a replayed refresh token voids them. */
  fid?: string | undefined;
}

export interface VerifiedAccess extends AccessClaims {
  jti: string;
  exp: number;
  iat: number;
}

/**
 * Issues and verifies the control plane's access tokens (ES256, `kid` in the header). Keys live
 * in `signing_keys` with the private half sealed, so every control-plane replica signs with the
 * same keys and data planes get the public halves through the global snapshot.
 */
export class TokenIssuer {
  private signing?: { kid: string; key: CryptoKey };
  private jwks = createLocalJWKSet({ keys: [] });

  constructor(
    private readonly db: Db,
    private readonly keyring: Keyring,
    readonly issuer: string,
    readonly audience: string,
    readonly ttlSeconds: number,
  ) {}

  /** Loads the active key, creating the first one on a fresh database. */
  async init(): Promise<void> {
    await this.reload();
    if (!this.signing) {
      const { privateKey, publicKey } = await generateKeyPair(ALG, { extractable: true });
      const kid = `k_${randomUUID()}`;
      const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: ALG, use: "sig" };
      const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: ALG };
      await this.db.transaction(async (tx) => {
        await tx.insert(schema.signingKeys).values({
          kid,
          alg: ALG,
          public_jwk: publicJwk,
          private_jwk_sealed: this.keyring.seal(JSON.stringify(privateJwk), `signing_key:${kid}`),
        });
        await tx
          .update(schema.globalConfig)
          .set({ config_version: sql`${schema.globalConfig.config_version} + 1` });
      });
      await this.reload();
    }
  }

  /** Re-reads keys from the database (after a rotation by another replica). */
  async reload(): Promise<void> {
    const rows = await this.db
      .select()
      .from(schema.signingKeys)
      .where(isNull(schema.signingKeys.retired_at))
      .orderBy(desc(schema.signingKeys.created_at));
    this.jwks = createLocalJWKSet({ keys: rows.map((r) => r.public_jwk as JWK) });
    const active = rows.find((r) => r.active);
    if (active) {
      const jwk = JSON.parse(
        this.keyring.open(active.private_jwk_sealed, `signing_key:${active.kid}`),
      ) as JWK;
      this.signing = { kid: active.kid, key: (await importJWK(jwk, ALG)) as CryptoKey };
    }
  }

  /** Public keys of every key not yet retired, for `/.well-known/jwks.json` and snapshots. */
  async publicKeys(): Promise<JWK[]> {
    const rows = await this.db
      .select({ jwk: schema.signingKeys.public_jwk })
      .from(schema.signingKeys)
      .where(isNull(schema.signingKeys.retired_at));
    return rows.map((r) => r.jwk as JWK);
  }

  /** Signs a short-lived access token. */
  async issue(claims: AccessClaims): Promise<{ token: string; jti: string; expiresIn: number }> {
    if (!this.signing) throw new Error("token issuer not initialised");
    const jti = randomUUID();
    const { sub, ...custom } = claims;
    // Millisecond issue time: revoking a user's tokens "before now" must neither spare a token of
    // the same second nor void a login made just after.
    const token = await new SignJWT({ ...custom, iat_ms: Date.now() })
      .setProtectedHeader({ alg: ALG, kid: this.signing.kid, typ: "at+jwt" })
      .setIssuer(this.issuer)
      .setAudience(this.audience)
      .setSubject(sub)
      .setJti(jti)
      .setIssuedAt()
      .setExpirationTime(`${this.ttlSeconds}s`)
      .sign(this.signing.key);
    return { token, jti, expiresIn: this.ttlSeconds };
  }

  /** Verifies a token this control plane issued; throws on anything wrong with it. */
  async verify(token: string): Promise<VerifiedAccess> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.jwks, {
        issuer: this.issuer,
        audience: this.audience,
        algorithms: [ALG],
      }));
    } catch (err) {
      // A kid we have not loaded may come from a key another replica just created.
      if ((err as { code?: string }).code !== "ERR_JWKS_NO_MATCHING_KEY") throw err;
      await this.reload();
      ({ payload } = await jwtVerify(token, this.jwks, {
        issuer: this.issuer,
        audience: this.audience,
        algorithms: [ALG],
      }));
    }
    if (
      typeof payload.sub !== "string" ||
      typeof payload.org_id !== "string" ||
      typeof payload.role !== "string"
    ) {
      throw new Error("token lacks required claims");
    }
    return {
      sub: payload.sub,
      org_id: payload.org_id,
      role: payload.role,
      platform_admin: payload.platform_admin === true,
      key_id: typeof payload.key_id === "string" ? payload.key_id : undefined,
      fid: typeof payload.fid === "string" ? payload.fid : undefined,
      jti: String(payload.jti),
      exp: Number(payload.exp),
      iat: typeof payload.iat_ms === "number" ? payload.iat_ms : Number(payload.iat) * 1000,
    };
  }
}
