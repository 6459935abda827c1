import { createServer, type Server } from "node:http";
import { exportJWK, generateKeyPair, type JWTPayload, SignJWT } from "jose";

/** A local OIDC issuer for tests: serves its JWKS over HTTP and mints tokens. */
export async function startOidcIssuer() {
  const { privateKey, publicKey } = await generateKeyPair("RS256");
  const jwk = { ...(await exportJWK(publicKey)), kid: "test-key", alg: "RS256", use: "sig" };
  let jwksRequests = 0;
  const server: Server = createServer((req, res) => {
    if (req.url === "/jwks") {
      jwksRequests++;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ keys: [jwk] }));
      return;
    }
    res.writeHead(404).end();
  });
  server.listen(0, "127.0.0.1");
  await new Promise((r) => server.once("listening", r));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    issuer: url,
    jwksUrl: `${url}/jwks`,
    jwksRequests: () => jwksRequests,
    /** Signs a token for `audience` with extra claims; expires in `ttlS` seconds. */
    token: (sub: string, audience: string, claims: JWTPayload = {}, ttlS = 300) =>
      new SignJWT(claims)
        .setProtectedHeader({ alg: "RS256", kid: "test-key" })
        .setIssuer(url)
        .setSubject(sub)
        .setAudience(audience)
        .setIssuedAt()
        .setExpirationTime(`${ttlS}s`)
        .sign(privateKey),
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}
