import { EGRESS_REFUSED, egressAgent, egressFetch } from "@mcpgw/egress";
import type { IdentityProviderEntry } from "@mcpgw/snapshot";
import { createRemoteJWKSet, customFetch, jwtVerify } from "jose";
import { LRUCache } from "lru-cache";
import { AuthError, type Principal } from "./principal.ts";

/**
 * Verifies tokens of an org's trusted OIDC issuers against their JWKS (fetched by jose, cached,
 * refreshed on unknown `kid` with a cooldown). The audience must be the one configured for the
 * provider, i.e. this gateway (RFC 8707): tokens minted for another resource are rejected.
 */
export class ExternalTokens {
  private readonly jwks = new Map<string, ReturnType<typeof createRemoteJWKSet>>();
  private readonly cache = new LRUCache<string, Principal>({ max: 20_000 });
  /** JWKS fetches pass the egress rules at connect time (a JWKS host re-pointed inward is refused). */
  private readonly fetch: typeof globalThis.fetch;

  constructor(options: { allowPrivateUpstreams: boolean }) {
    this.fetch = egressFetch(
      egressAgent({ allowPrivate: options.allowPrivateUpstreams, connectTimeoutMs: 5000 }),
    );
  }

  private keySet(url: string) {
    let set = this.jwks.get(url);
    if (!set) {
      set = createRemoteJWKSet(new URL(url), {
        timeoutDuration: 5000,
        cooldownDuration: 30_000,
        cacheMaxAge: 10 * 60_000,
        [customFetch]: this.fetch,
      });
      this.jwks.set(url, set);
    }
    return set;
  }

  async verify(token: string, orgId: string, provider: IdentityProviderEntry): Promise<Principal> {
    const cacheKey = `${provider.id}\u0000${token}`;
    const now = Date.now() / 1000;
    const cached = this.cache.get(cacheKey);
    if (cached && (cached.exp ?? 0) > now) return cached;
    let payload: Awaited<ReturnType<typeof jwtVerify>>["payload"];
    try {
      ({ payload } = await jwtVerify(token, this.keySet(provider.jwks_url), {
        issuer: provider.issuer,
        audience: provider.audience,
      }));
    } catch (err) {
      const code = (err as { code?: string }).code;
      // A JWKS host the egress rules refuse is the IdP's registration at fault, not the token.
      if ((err as { cause?: { code?: string } }).cause?.code === EGRESS_REFUSED)
        throw new AuthError("the identity provider's JWKS host is refused by this gateway's egress rules");
      if (code === "ERR_JWT_CLAIM_VALIDATION_FAILED" && (err as { claim?: string }).claim === "aud") {
        throw new AuthError("token audience is not this gateway");
      }
      throw new AuthError(code === "ERR_JWT_EXPIRED" ? "token expired" : "invalid token");
    }
    if (typeof payload.sub !== "string") throw new AuthError("token lacks a subject");
    const claim = payload[provider.role_claim];
    const values = Array.isArray(claim)
      ? claim.map(String)
      : typeof claim === "string"
        ? claim.split(/[\s,]+/)
        : [];
    const mapped = values
      .map((v) => provider.role_mapping[v])
      .filter((r): r is NonNullable<typeof r> => r !== undefined);
    const principal: Principal = {
      kind: "external",
      id: `${provider.issuer}#${payload.sub}`,
      org_id: orgId,
      role: strongest(mapped) ?? provider.default_role,
      idp_id: provider.id,
      exp: typeof payload.exp === "number" ? payload.exp : now + 300,
    };
    this.cache.set(cacheKey, principal, { ttl: Math.max(1, ((principal.exp ?? now) - now) * 1000) });
    return principal;
  }
}

const RANK = ["admin", "operator", "user", "api_user", "viewer"];

function strongest(roles: string[]): string | undefined {
  return roles.sort((a, b) => RANK.indexOf(a) - RANK.indexOf(b))[0];
}
