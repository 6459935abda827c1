import { EGRESS_REFUSED, egressAgent } from "@mcpgw/egress";
import type { Keyring } from "@mcpgw/secrets";
import { credentialsSealContext, type ServerEntry, type UpstreamCredentialsSpec } from "@mcpgw/snapshot";
import { type Dispatcher, request } from "undici";

type Credentials = UpstreamCredentialsSpec;

/** The gateway's own credentials could not be produced (missing key, token endpoint down). */
export class CredentialError extends Error {
  override name = "CredentialError";
}

interface CachedHeaders {
  sealed: string;
  headers: Record<string, string>;
  /** For OAuth tokens: when to fetch a new one (ms since epoch). */
  refreshAt: number;
}

/**
 * Produces the headers the gateway presents to an upstream: credentials opened from the sealed
 * value in the snapshot (never logged), OAuth client-credentials tokens fetched and cached until
 * shortly before they expire. The client's own Authorization header is never among them.
 */
export class UpstreamCredentials {
  private readonly cache = new Map<string, CachedHeaders>();
  private readonly inflight = new Map<string, Promise<Record<string, string>>>();
  /** Token endpoints are reached through the egress rules, checked at connect time. */
  private readonly dispatcher: Dispatcher;

  constructor(
    private readonly keyring: Keyring | undefined,
    /** `MCPGW_ALLOW_PRIVATE_UPSTREAMS` for token endpoints (unchecked unless passed `false`). */
    options: { allowPrivateUpstreams?: boolean | undefined } = {},
  ) {
    this.dispatcher = egressAgent({
      allowPrivate: options.allowPrivateUpstreams ?? true,
      connectTimeoutMs: 10_000,
    });
  }

  /** Headers for `server`, or none when it has no credentials. */
  async headersFor(
    server: Pick<ServerEntry, "id" | "credentials_sealed">,
  ): Promise<Record<string, string> | undefined> {
    const sealed = server.credentials_sealed;
    if (!sealed) return undefined;
    const cached = this.cache.get(server.id);
    if (cached && cached.sealed === sealed && cached.refreshAt > Date.now()) return cached.headers;
    let pending = this.inflight.get(server.id);
    if (!pending) {
      pending = this.resolve(server.id, sealed).finally(() => this.inflight.delete(server.id));
      this.inflight.set(server.id, pending);
    }
    return pending;
  }

  private async resolve(serverId: string, sealed: string): Promise<Record<string, string>> {
    if (!this.keyring)
      throw new CredentialError("this data plane has no MCPGW_MASTER_KEY to open upstream credentials");
    let creds: Credentials;
    try {
      creds = JSON.parse(this.keyring.open(sealed, credentialsSealContext(serverId))) as Credentials;
    } catch {
      throw new CredentialError("upstream credentials cannot be opened with this data plane's keys");
    }
    let headers: Record<string, string>;
    let refreshAt = Number.POSITIVE_INFINITY;
    if (creds.type === "bearer") headers = { authorization: `Bearer ${creds.token}` };
    else if (creds.type === "header") headers = { [creds.name.toLowerCase()]: creds.value };
    else {
      const token = await fetchClientCredentialsToken(creds, this.dispatcher);
      headers = { authorization: `Bearer ${token.access_token}` };
      // Refresh a minute early (or at half-life for short tokens).
      refreshAt = Date.now() + Math.max(1, Math.min(token.expires_in - 60, token.expires_in / 2)) * 1000;
    }
    this.cache.set(serverId, { sealed, headers, refreshAt });
    return headers;
  }
}

async function fetchClientCredentialsToken(
  creds: Extract<Credentials, { type: "oauth_client_credentials" }>,
  dispatcher: Dispatcher,
): Promise<{ access_token: string; expires_in: number }> {
  const form = new URLSearchParams({ grant_type: "client_credentials" });
  if (creds.scope) form.set("scope", creds.scope);
  if (creds.audience) form.set("audience", creds.audience);
  const basic = Buffer.from(
    `${encodeURIComponent(creds.client_id)}:${encodeURIComponent(creds.client_secret)}`,
  ).toString("base64");
  let res: Awaited<ReturnType<typeof request>>;
  try {
    res = await request(creds.token_url, {
      method: "POST",
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        authorization: `Basic ${basic}`,
        accept: "application/json",
      },
      body: form.toString(),
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
      dispatcher,
    });
  } catch (err) {
    if ((err as { code?: string }).code === EGRESS_REFUSED)
      throw new CredentialError(`upstream token endpoint refused: ${(err as Error).message}`);
    throw new CredentialError("upstream token endpoint unreachable");
  }
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new CredentialError(`upstream token endpoint answered ${res.statusCode}`);
  try {
    const body = JSON.parse(text) as { access_token?: unknown; expires_in?: unknown };
    if (typeof body.access_token !== "string") throw new Error();
    return {
      access_token: body.access_token,
      expires_in: typeof body.expires_in === "number" ? body.expires_in : 300,
    };
  } catch {
    throw new CredentialError("upstream token endpoint returned no access_token");
  }
}
