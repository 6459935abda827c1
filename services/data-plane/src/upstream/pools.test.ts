import { createServer } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UpstreamPools } from "./pools.ts";

describe("UpstreamPools", () => {
  let port = 0;
  const server = createServer((_req, res) => res.end("ok"));
  beforeAll(async () => {
    server.listen(0, "127.0.0.1");
    await new Promise((r) => server.once("listening", r));
    port = (server.address() as { port: number }).port;
  });
  afterAll(() => new Promise((r) => server.close(r)));

  it("checks the address of every connection unless private upstreams are allowed (DNS rebinding)", async () => {
    const strict = new UpstreamPools(4, false);
    const err = await strict
      .get(`http://localhost:${port}`, 1000)
      .request({ path: "/", method: "GET" })
      .then(
        () => undefined,
        (e: { code?: string }) => e,
      );
    expect(err?.code).toBe("EUPSTREAMPRIVATE");
    const open = new UpstreamPools(4, true);
    const res = await open.get(`http://localhost:${port}`, 1000).request({ path: "/", method: "GET" });
    expect(await res.body.text()).toBe("ok");
    // The same check for connections made with the pools' fetch (message-level upstreams).
    const refused = await strict
      .fetcher(1000)(`http://localhost:${port}/`)
      .then(
        () => undefined,
        (e: { cause?: { code?: string } }) => e.cause?.code,
      );
    expect(refused).toBe("EUPSTREAMPRIVATE");
    expect(await (await open.fetcher(1000)(`http://localhost:${port}/`)).text()).toBe("ok");
    await Promise.all([strict.close(), open.close()]);
  });

  it("refuses an IP-literal private upstream at connect time (byte relay and message-level fetch)", async () => {
    const strict = new UpstreamPools(4, false);
    const err = await strict
      .get(`http://127.0.0.1:${port}`, 1000)
      .request({ path: "/", method: "GET" })
      .then(
        () => undefined,
        (e: { code?: string; message?: string }) => e,
      );
    expect(err?.code).toBe("EUPSTREAMPRIVATE");
    expect(err?.message).toContain("127.0.0.1 is a private or special-purpose address");
    const refused = await strict
      .fetcher(1000)(`http://127.0.0.1:${port}/`)
      .then(
        () => undefined,
        (e: { cause?: { code?: string } }) => e.cause?.code,
      );
    expect(refused).toBe("EUPSTREAMPRIVATE");
    const open = new UpstreamPools(4, true);
    const res = await open.get(`http://127.0.0.1:${port}`, 1000).request({ path: "/", method: "GET" });
    expect(await res.body.text()).toBe("ok");
    await Promise.all([strict.close(), open.close()]);
  });
});
