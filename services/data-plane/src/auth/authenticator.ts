import { createHash } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import type { OrgSnapshot } from "@mcpgw/snapshot";
import type { KeyEntry, SnapshotStore } from "../snapshot/store.ts";
import { ControlPlaneTokens } from "./control-plane-tokens.ts";
import { ExternalTokens } from "./external-tokens.ts";
import { AuthError, type Principal } from "./principal.ts";

const BEARER = /^Bearer\s+(\S+)$/i;
const API_KEY_PREFIX = "mcpgw_";

/** Called with the id of every API key that authenticated a request (off the hot path). */
export type KeyUseListener = (keyId: string) => void;

/**
 * Authenticates a data-plane request from the snapshot alone: control-plane JWTs (users, a2a),
 * API keys (`Authorization: Bearer mcpgw_…` or `X-API-Key`) checked by hash, and tokens of the
 * server's org's trusted OIDC issuers.
 */
export class Authenticator {
  readonly controlPlane: ControlPlaneTokens;
  private readonly external: ExternalTokens;

  constructor(
    private readonly store: SnapshotStore,
    private readonly onKeyUse: KeyUseListener = () => {},
    /** `MCPGW_ALLOW_PRIVATE_UPSTREAMS` for JWKS fetches (unchecked unless passed `false`). */
    options: { allowPrivateUpstreams?: boolean | undefined } = {},
  ) {
    this.controlPlane = new ControlPlaneTokens(store);
    this.external = new ExternalTokens({ allowPrivateUpstreams: options.allowPrivateUpstreams ?? true });
  }

  /** True when the request carries any credential at all (401 comes first for those that don't). */
  static hasCredential(headers: IncomingHttpHeaders): boolean {
    return headers["x-api-key"] !== undefined || BEARER.test(headers.authorization ?? "");
  }

  /**
   * `org` is the organization the request addresses (the server's, or the namespace's), needed
   * to know which external issuers are trusted; CP tokens and keys name their org themselves.
   */
  async authenticate(headers: IncomingHttpHeaders, org: OrgSnapshot | undefined): Promise<Principal> {
    const apiKey = headers["x-api-key"];
    if (typeof apiKey === "string" && apiKey) return this.apiKey(apiKey);
    const token = BEARER.exec(headers.authorization ?? "")?.[1];
    if (!token) throw new AuthError("missing credentials: send Authorization: Bearer <token> or X-API-Key");
    if (token.startsWith(API_KEY_PREFIX)) return this.apiKey(token);

    // A control-plane token seen before is in the verifier's cache: no need to read its issuer.
    const known = this.controlPlane.cached(token);
    if (known) return this.checkA2a(known);
    const issuer = peekIssuer(token);
    if (issuer === undefined) throw new AuthError("invalid token");
    if (issuer === this.controlPlane.controlPlaneIssuer)
      return this.checkA2a(await this.controlPlane.verify(token));
    const provider = org?.identity_providers.find((p) => p.issuer === issuer);
    if (!org || !provider) throw new AuthError("token issuer is not trusted");
    return this.external.verify(token, org.org_id, provider);
  }

  /**
   * Why a principal authenticated earlier may no longer act, as the current snapshot has it:
   * its token revoked (logout, its user deactivated or changed in rights, a replayed refresh),
   * its API key revoked or changed in role or namespace scope, or its identity provider
   * removed. Undefined while it stands. Open sessions are held to this on every message.
   */
  revocation(principal: Principal): string | undefined {
    const state = this.store.current;
    if (principal.kind === "api_key" || (principal.kind === "a2a" && !this.controlPlane.isToken(principal))) {
      const id = principal.key_id ?? principal.a2a_key_id;
      const entry = id ? state.apiKeysById.get(id) : undefined;
      if (!entry || entry.org.org_id !== principal.org_id) return "the API key was revoked";
      if (
        entry.key.role !== principal.role ||
        (entry.key.namespace_id ?? undefined) !== principal.namespace_id
      )
        return "the API key's permissions changed; connect again";
      return undefined;
    }
    if (principal.kind === "external") {
      const org = state.orgs.get(principal.org_id);
      if (!org?.identity_providers.some((p) => p.id === principal.idp_id))
        return "the identity provider is no longer trusted";
      return undefined;
    }
    if (this.controlPlane.isRevoked(principal)) return "token revoked";
    if (principal.a2a_key_id && !state.apiKeysById.get(principal.a2a_key_id))
      return "the API key behind this token was revoked";
    return undefined;
  }

  /** "API key expired" once a key principal's key is past its expiry; undefined otherwise. */
  expiry(principal: Principal): string | undefined {
    const id = principal.key_id ?? principal.a2a_key_id;
    if (!id) return undefined;
    const expires = this.store.current.apiKeysById.get(id)?.key.expires_at;
    return expires && Date.parse(expires) <= Date.now() ? "API key expired" : undefined;
  }

  /** An a2a token dies with the key it was exchanged for. */
  private checkA2a(principal: Principal): Principal {
    if (principal.a2a_key_id && !this.store.current.apiKeysById.get(principal.a2a_key_id)) {
      throw new AuthError("the API key behind this token was revoked");
    }
    return principal;
  }

  private apiKey(secret: string): Principal {
    const hash = createHash("sha256").update(secret).digest("hex");
    const entry = this.store.current.apiKeys.get(hash);
    if (!entry) throw new AuthError("invalid API key");
    const { key } = entry;
    if (key.expires_at && Date.parse(key.expires_at) <= Date.now()) throw new AuthError("API key expired");
    this.onKeyUse(key.id);
    // One principal per key entry (entries are replaced with each snapshot): requests of the
    // same key share it, and with it the resolver's cached guards.
    let principal = this.keyPrincipals.get(entry);
    if (!principal) {
      principal = keyPrincipal(entry);
      this.keyPrincipals.set(entry, principal);
    }
    return principal;
  }

  private readonly keyPrincipals = new WeakMap<KeyEntry, Principal>();
}

/** The principal an API key authenticates. */
function keyPrincipal({ key, org }: KeyEntry): Principal {
  return key.kind === "a2a"
    ? {
        kind: "a2a",
        id: `a2a:${key.id}`,
        org_id: org.org_id,
        role: key.role,
        a2a_key_id: key.id,
        namespace_id: key.namespace_id ?? undefined,
      }
    : {
        kind: "api_key",
        id: `key:${key.id}`,
        org_id: org.org_id,
        role: key.role,
        user_id: key.user_id ?? undefined,
        key_id: key.id,
        namespace_id: key.namespace_id ?? undefined,
      };
}

/** The `iss` of a JWT, unverified: it only picks which verifier to use. */
function peekIssuer(token: string): string | undefined {
  const payload = token.split(".")[1];
  if (!payload) return undefined;
  try {
    const iss = (JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as { iss?: unknown }).iss;
    return typeof iss === "string" ? iss : undefined;
  } catch {
    return undefined;
  }
}

/** The issuer of a bearer JWT, unverified (to find which org's trusted issuers to consult). */
export function bearerIssuer(headers: IncomingHttpHeaders): string | undefined {
  const token = BEARER.exec(headers.authorization ?? "")?.[1];
  return token && !token.startsWith(API_KEY_PREFIX) ? peekIssuer(token) : undefined;
}
