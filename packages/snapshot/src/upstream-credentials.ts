/**
 * What the gateway presents to an upstream on its own behalf: written by the control plane
 * (write-only on the API, sealed at rest with `credentialsSealContext`), carried sealed in
 * snapshots, opened only by the data planes and the worker that call the upstream.
 */
export type UpstreamCredentialsSpec =
  | { type: "bearer"; token: string }
  | { type: "header"; name: string; value: string }
  | {
      type: "oauth_client_credentials";
      token_url: string;
      client_id: string;
      client_secret: string;
      scope?: string | undefined;
      audience?: string | undefined;
    };

/** Seal context of a server's upstream credentials: a sealed value opens only for its own server. */
export const credentialsSealContext = (serverId: string) => `server:${serverId}`;
