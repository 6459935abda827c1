import type { LookupAddress } from "node:dns";
import { createServer } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EGRESS_REFUSED, egressAgent, egressFetch, publicOnlyLookupWith, type Resolver } from "./connect.ts";

/** A resolver answering from a table, so public names need no real DNS. */
function resolverOf(table: Record<string, string[]>): Resolver {
  return (hostname, _options, callback) => {
    const addresses = table[hostname];
    if (!addresses) return callback(Object.assign(new Error("not found"), { code: "ENOTFOUND" }), []);
    callback(
      null,
      addresses.map((address) => ({ address, family: address.includes(":") ? 6 : 4 })),
    );
  };
}

function lookupOnce(resolve: Resolver, hostname: string, all: boolean) {
  return new Promise<{ err: NodeJS.ErrnoException | null; address: string | LookupAddress[] }>((done) =>
    publicOnlyLookupWith(resolve)(hostname, { all }, (err, address) => done({ err, address })),
  );
}

const refusal = (e: unknown) => (e as { cause?: { code?: string; message?: string } }).cause;

describe("egress-checked connections", () => {
  let port = 0;
  const server = createServer((_req, res) => res.end("ok"));
  beforeAll(async () => {
    server.listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    port = (server.address() as { port: number }).port;
  });
  afterAll(() => new Promise((r) => server.close(r)));

  it("refuses an IP-literal private host at connect time, and connects when private upstreams are allowed", async () => {
    const strict = egressAgent({ allowPrivate: false });
    const open = egressAgent({ allowPrivate: true });
    for (const url of [
      `http://127.0.0.1:${port}/`,
      `http://0x7f.1:${port}/`,
      `http://[::ffff:127.0.0.1]:${port}/`,
    ]) {
      const cause = await egressFetch(strict)(url).then(() => undefined, refusal);
      expect(cause?.code, url).toBe(EGRESS_REFUSED);
      expect(cause?.message).toMatch(/egress refused: .* is a private or special-purpose address/);
    }
    expect(await (await egressFetch(open)(`http://127.0.0.1:${port}/`)).text()).toBe("ok");
    await Promise.all([strict.close(), open.close()]);
  });

  it("refuses a name whose address is private when the connection is made (DNS rebinding)", async () => {
    const strict = egressAgent({ allowPrivate: false });
    const cause = await egressFetch(strict)(`http://localhost:${port}/`).then(() => undefined, refusal);
    expect(cause?.code).toBe(EGRESS_REFUSED);
    expect(cause?.message).toContain("localhost resolves to a private or special-purpose address");
    const rebinding = egressAgent({
      allowPrivate: false,
      resolve: resolverOf({ "rebind.example.test": ["127.0.0.1"] }),
    });
    const rebound = await egressFetch(rebinding)(`http://rebind.example.test:${port}/`).then(
      () => undefined,
      refusal,
    );
    expect(rebound?.code).toBe(EGRESS_REFUSED);
    await Promise.all([strict.close(), rebinding.close()]);
  });

  it("passes a name whose every address is public and refuses one that mixes in a private address", async () => {
    const resolve = resolverOf({
      "public.example.test": ["203.0.113.10", "2001:db8::10"],
      "mixed.example.test": ["203.0.113.10", "10.0.0.5"],
      "nat64.example.test": ["64:ff9b::a00:5"],
    });
    const one = await lookupOnce(resolve, "public.example.test", false);
    expect(one).toEqual({ err: null, address: "203.0.113.10" });
    const all = await lookupOnce(resolve, "public.example.test", true);
    expect(all.address).toHaveLength(2);
    for (const name of ["mixed.example.test", "nat64.example.test"])
      expect((await lookupOnce(resolve, name, true)).err?.code, name).toBe(EGRESS_REFUSED);
    expect((await lookupOnce(resolve, "missing.example.test", false)).err?.code).toBe("ENOTFOUND");
  });

  it("takes URLs only, so a Request's method and body cannot be dropped", async () => {
    const agent = egressAgent({ allowPrivate: true });
    await expect(egressFetch(agent)(new Request(`http://127.0.0.1:${port}/`))).rejects.toThrow(TypeError);
    await agent.close();
  });
});
