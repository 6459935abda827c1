/** Who a data-plane request acts for, whatever credential it came with. */
export interface Principal {
  kind: "user" | "api_key" | "a2a" | "external";
  /** Stable identifier for logs and rate limits: user id, `key:<id>`, `a2a:<id>` or `<issuer>#<sub>`. */
  id: string;
  org_id: string;
  role: string;
  user_id?: string | undefined;
  key_id?: string | undefined;
  a2a_key_id?: string | undefined;
  idp_id?: string | undefined;
  /** Keys (and a2a tokens) may be scoped to one namespace. */
  namespace_id?: string | undefined;
  /** Token expiry (seconds since epoch), for cached bearer tokens. */
  exp?: number | undefined;
}

/** Authentication failed; `reason` is safe to show the client. */
export class AuthError extends Error {
  override name = "AuthError";
}
