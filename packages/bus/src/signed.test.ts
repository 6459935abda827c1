import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runId, testEnv } from "../../testing/src/env.ts";
import { NatsBus } from "./nats.ts";
import { operatorBusKey, SignedBus } from "./signed.ts";

describe("SignedBus over real NATS", () => {
  const subject = `test${runId()}.ops`;
  const key = operatorBusKey("master key of this deployment");
  let raw: NatsBus;
  let server: SignedBus;
  let client: SignedBus;
  let stopServe: () => Promise<void>;
  const refusals: string[] = [];
  const handled: unknown[] = [];

  beforeAll(async () => {
    raw = await NatsBus.connect(testEnv.natsUrl);
    server = new SignedBus(await NatsBus.connect(testEnv.natsUrl), key, (r) => refusals.push(r));
    client = new SignedBus(await NatsBus.connect(testEnv.natsUrl), key);
    stopServe = await server.serve(subject, async (request) => {
      handled.push(request);
      return { secret: "another org's processes" };
    });
  });

  afterAll(async () => {
    await stopServe?.();
    await Promise.all([raw?.close(), server?.close(), client?.close()]);
  });

  it("answers requests signed with the deployment's key", async () => {
    expect(await client.gather(subject, { action: "stdio_list", org_id: "o" }, 2000, 1)).toEqual([
      { secret: "another org's processes" },
    ]);
    expect(await client.ask(subject, { action: "status" }, 2000)).toEqual({
      secret: "another org's processes",
    });
  });

  it("refuses unsigned, forged and replayed requests without running the handler", async () => {
    handled.length = 0;
    const unsigned = (await raw.ask(subject, { action: "stdio_list", org_id: "o" }, 2000)) as {
      body: unknown;
    };
    expect(JSON.stringify(unsigned)).not.toContain("another org");
    const forged = new SignedBus(raw, operatorBusKey("some other key"));
    expect(await forged.ask(subject, { action: "stdio_list" }, 2000)).toBeUndefined();
    // Capture a good envelope and send it again.
    let captured: unknown;
    const spy = new SignedBus(
      {
        ...raw,
        ask: async (s: string, r: unknown, w: number) => {
          captured = r;
          return raw.ask(s, r, w);
        },
      } as unknown as NatsBus,
      key,
    );
    expect(await spy.ask(subject, { action: "status" }, 2000)).toEqual({ secret: "another org's processes" });
    const replay = await raw.ask(subject, captured, 2000);
    expect(JSON.stringify(replay)).not.toContain("another org");
    expect(handled).toHaveLength(1);
    expect(refusals).toEqual(expect.arrayContaining(["unsigned", "bad signature", "replayed"]));
  });

  it("drops answers that are not signed with the key: nobody answers in a data plane's place", async () => {
    const impostorSubject = `${subject}.impostor`;
    const stop = await raw.serve(impostorSubject, async () => ({ conflicts: ["fake"] }));
    expect(await client.ask(impostorSubject, { action: "status" }, 1000)).toBeUndefined();
    await stop();
  });
});
