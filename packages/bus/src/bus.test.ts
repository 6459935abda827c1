import { afterAll, describe, expect, it } from "vitest";
import { deleteNatsBuckets } from "../../testing/src/cleanup.ts";
import { runId, testEnv } from "../../testing/src/env.ts";
import { MemoryBus } from "./memory.ts";
import { NatsBus } from "./nats.ts";
import { type Bus, KvConflict, type KvEntry } from "./types.ts";

// One contract for both implementations of the bus.
describe.each([
  ["memory", async (): Promise<Bus> => new MemoryBus()],
  ["nats", async (): Promise<Bus> => NatsBus.connect(testEnv.natsUrl)],
])("KvBucket on %s", (_name, open) => {
  let bus: Bus;
  const prefix = `test${runId()}`;
  afterAll(async () => {
    await bus?.close();
    if (_name === "nats") await deleteNatsBuckets(testEnv.natsUrl, prefix);
  });

  it("delivers existing values and then changes to watchers, and does compare-and-set", async () => {
    bus = await open();
    const bucket = await bus.bucket(`${prefix}_kv`);
    await bucket.put("a", "1");
    const seen: KvEntry[] = [];
    const stop = await bucket.watch((e) => seen.push(e));
    await expect.poll(() => seen.map((e) => e.value)).toEqual(["1"]);

    const rev = (await bucket.get("a"))!.revision;
    await bucket.update("a", "2", rev);
    await expect(bucket.update("a", "3", rev)).rejects.toThrow(KvConflict);
    await expect(bucket.update("b", "x", 0)).resolves.toBeGreaterThan(0);
    await expect(bucket.update("b", "y", 0)).rejects.toThrow(KvConflict);
    await bucket.delete("b");
    await expect.poll(() => seen.map((e) => `${e.key}=${e.value}`)).toEqual(["a=1", "a=2", "b=x", "b=null"]);
    expect(await bucket.get("b")).toBeNull();
    await stop();
  });

  it("fans a request out to every server of a subject and gathers their answers", async () => {
    const subject = `${prefix}.ops`;
    const stops = await Promise.all(
      ["a", "b"].map((name) => bus.serve(subject, async (req) => ({ name, echo: (req as { q: number }).q }))),
    );
    const answers = (await bus.gather(subject, { q: 7 }, 300)) as Array<{ name: string; echo: number }>;
    expect(answers.map((a) => a.name).sort()).toEqual(["a", "b"]);
    expect(answers.every((a) => a.echo === 7)).toBe(true);
    for (const stop of stops) await stop();
    expect(await bus.gather(subject, { q: 1 }, 100)).toEqual([]);
  });

  it("hands a request to one server of a queue group, and asks one server for one answer", async () => {
    const subject = `${prefix}.queued`;
    const served: string[] = [];
    const stops = await Promise.all(
      ["a", "b"].map((name) =>
        bus.serve(
          subject,
          async () => {
            served.push(name);
            return { name };
          },
          { queue: "q" },
        ),
      ),
    );
    // A gather reaches one member of the queue group, not both.
    expect(await bus.gather(subject, {}, 300)).toHaveLength(1);
    const answer = (await bus.ask(subject, {}, 1000)) as { name: string };
    expect(["a", "b"]).toContain(answer.name);
    expect(served).toHaveLength(2);
    for (const stop of stops) await stop();
    expect(await bus.ask(subject, {}, 200)).toBeUndefined();
  });

  it("carries raw messages with headers in order to listeners, until they stop", async () => {
    const subject = `${prefix}.raw`;
    const seen: Array<{ n: string; kind: string; bytes: number }> = [];
    const stop = bus.listen(subject, (m) =>
      seen.push({ n: m.headers.n!, kind: m.headers["x-kind"]!, bytes: m.data.byteLength }),
    );
    // Subscriptions reach the server asynchronously; a round trip makes sure this one has.
    await bus.gather(`${prefix}.none`, {}, 50);
    const big = new Uint8Array(256 * 1024).fill(7);
    for (let i = 0; i < 50; i++)
      bus.publish(subject, { headers: { n: String(i), "x-kind": "chunk" }, data: big });
    await expect.poll(() => seen.length).toBe(50);
    expect(seen.map((s) => Number(s.n))).toEqual([...Array(50).keys()]);
    expect(seen.every((s) => s.kind === "chunk" && s.bytes === big.byteLength)).toBe(true);
    stop();
    bus.publish(subject, { headers: { n: "late" }, data: new Uint8Array() });
    await bus.gather(`${prefix}.none`, {}, 50);
    expect(seen).toHaveLength(50);
  });
});
