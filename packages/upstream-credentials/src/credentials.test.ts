import { createServer } from "node:http";
import { Keyring } from "@mcpgw/secrets";
import { credentialsSealContext, type ServerEntry } from "@mcpgw/snapshot";
import { describe, expect, it } from "vitest";
import { CredentialError, UpstreamCredentials } from "./credentials.ts";

const masterKey = Keyring.generateKey();
const ring = new Keyring(masterKey);

function server(id: string, creds: unknown): ServerEntry {
  return {
    id,
    namespace_id: "ns",
    name: "s",
    transport: "streamable_http",
    enabled: true,
    endpoints: [],
    stdio: null,
    timeout_ms: 1000,
    connect_timeout_ms: 1000,
    retries: 0,
    credentials_sealed: creds === null ? null : ring.seal(JSON.stringify(creds), credentialsSealContext(id)),
  };
}

describe("UpstreamCredentials", () => {
  it("opens bearer and header credentials sealed for the server", async () => {
    const creds = new UpstreamCredentials(new Keyring(masterKey));
    expect(await creds.headersFor(server("a", { type: "bearer", token: "t" }))).toEqual({
      authorization: "Bearer t",
    });
    expect(await creds.headersFor(server("b", { type: "header", name: "X-Api-Token", value: "v" }))).toEqual({
      "x-api-token": "v",
    });
    expect(await creds.headersFor(server("c", null))).toBeUndefined();
  });

  it("refuses credentials sealed for another server, or without a key", async () => {
    const moved = { ...server("a", { type: "bearer", token: "t" }), id: "other" };
    await expect(new UpstreamCredentials(new Keyring(masterKey)).headersFor(moved)).rejects.toThrow(
      CredentialError,
    );
    await expect(
      new UpstreamCredentials(undefined).headersFor(server("a", { type: "bearer", token: "t" })),
    ).rejects.toThrow(CredentialError);
  });

  it("fetches and caches OAuth client-credentials tokens", async () => {
    let calls = 0;
    const tokenServer = createServer((req, res) => {
      calls++;
      expect(req.headers.authorization).toBe(`Basic ${Buffer.from("cid:csecret").toString("base64")}`);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ access_token: `tok${calls}`, expires_in: 3600 }));
    }).listen(0, "127.0.0.1");
    await new Promise((r) => tokenServer.once("listening", r));
    const url = `http://127.0.0.1:${(tokenServer.address() as { port: number }).port}/token`;
    const creds = new UpstreamCredentials(new Keyring(masterKey));
    const entry = server("o", {
      type: "oauth_client_credentials",
      token_url: url,
      client_id: "cid",
      client_secret: "csecret",
    });
    expect(await creds.headersFor(entry)).toEqual({ authorization: "Bearer tok1" });
    expect(await creds.headersFor(entry)).toEqual({ authorization: "Bearer tok1" });
    expect(calls).toBe(1);
    tokenServer.close();
  });

  it("refuses a private token endpoint at connect time unless private upstreams are allowed", async () => {
    let calls = 0;
    const tokenServer = createServer((_req, res) => {
      calls++;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ access_token: "tok", expires_in: 3600 }));
    }).listen(0, "127.0.0.1");
    await new Promise((r) => tokenServer.once("listening", r));
    const entry = server("p", {
      type: "oauth_client_credentials",
      token_url: `http://127.0.0.1:${(tokenServer.address() as { port: number }).port}/token`,
      client_id: "cid",
      client_secret: "csecret",
    });
    const strict = new UpstreamCredentials(new Keyring(masterKey), { allowPrivateUpstreams: false });
    const refused = strict.headersFor(entry);
    await expect(refused).rejects.toThrow(CredentialError);
    await expect(refused).rejects.toThrow(
      /token endpoint refused: egress refused: 127\.0\.0\.1 is a private or special-purpose address/,
    );
    expect(calls).toBe(0);
    const open = new UpstreamCredentials(new Keyring(masterKey), { allowPrivateUpstreams: true });
    expect(await open.headersFor(entry)).toEqual({ authorization: "Bearer tok" });
    expect(calls).toBe(1);
    tokenServer.close();
  });
});
