import type { IdentityProviderEntry } from "@mcpgw/snapshot";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startOidcIssuer } from "../../../../packages/testing/src/oidc-issuer.ts";
import { ExternalTokens } from "./external-tokens.ts";
import { AuthError } from "./principal.ts";

describe("ExternalTokens JWKS fetch", () => {
  let issuer: Awaited<ReturnType<typeof startOidcIssuer>>;
  let provider: IdentityProviderEntry;
  beforeAll(async () => {
    // Listens on 127.0.0.1: an IP-literal private JWKS host.
    issuer = await startOidcIssuer();
    provider = {
      id: "idp_1",
      issuer: issuer.issuer,
      jwks_url: issuer.jwksUrl,
      audience: "https://gateway.example.test",
      role_claim: "roles",
      role_mapping: {},
      default_role: "viewer",
      registered_at: "",
    };
  });
  afterAll(() => issuer.close());

  it("refuses a private JWKS host at connect time unless private upstreams are allowed", async () => {
    const token = await issuer.token("alice", provider.audience);
    const strict = new ExternalTokens({ allowPrivateUpstreams: false });
    const refused = await strict.verify(token, "org_1", provider).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(AuthError);
    expect((refused as Error).message).toBe(
      "the identity provider's JWKS host is refused by this gateway's egress rules",
    );
    // Refused before any byte reached the issuer.
    expect(issuer.jwksRequests()).toBe(0);

    const open = new ExternalTokens({ allowPrivateUpstreams: true });
    const principal = await open.verify(token, "org_1", provider);
    expect(principal).toMatchObject({ kind: "external", id: `${issuer.issuer}#alice`, role: "viewer" });
    expect(issuer.jwksRequests()).toBe(1);
  });
});
