import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { MemoryBus } from "@mcpgw/bus";
import { createLogger } from "@mcpgw/telemetry";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FORWARDED_HEADER, ReplicaDirectory } from "./replicas.ts";

const logger = createLogger("replicas-test", "silent");

async function listen(server: Server): Promise<string> {
  server.listen(0, "127.0.0.1");
  await new Promise((r) => server.once("listening", r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/**
 * Two replicas on one bus: "owner" replays forwarded requests on its own listener (here a stub
 * that echoes, streams, or holds its answer), "front" forwards what it receives to "owner".
 */
describe("ReplicaDirectory forwarding over the bus", () => {
  const bus = new MemoryBus();
  const seen: Array<{ url: string; forwardedBy: string | undefined; closedEarly: boolean }> = [];
  const ownerListener = createServer(async (req, res) => {
    const entry = {
      url: req.url ?? "",
      forwardedBy: req.headers[FORWARDED_HEADER] as string,
      closedEarly: false,
    };
    seen.push(entry);
    res.once("close", () => {
      if (!res.writableFinished) entry.closedEarly = true;
    });
    const chunks: Buffer[] = [];
    for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
    if (req.url === "/echo") {
      res.writeHead(201, { "content-type": "application/octet-stream", "x-echo": "yes" });
      res.end(Buffer.concat(chunks));
    } else if (req.url === "/stream") {
      res.writeHead(200, { "content-type": "text/event-stream" });
      for (let i = 0; i < 3; i++) {
        res.write(`data: ${i}\n\n`);
        await new Promise((r) => setTimeout(r, 20));
      }
      res.end();
    } else if (req.url === "/slow-head") {
      // Answers (headers included) only after a while: a cancel arrives before the head.
      await new Promise((r) => setTimeout(r, 300));
      if (!res.destroyed) res.end("late");
    }
  });
  let owner: ReplicaDirectory;
  const front = new ReplicaDirectory({
    replicaId: "front",
    loopbackUrl: "http://127.0.0.1:9",
    busPrefix: "t",
    maxBodyBytes: 4 * 1024 * 1024,
    logger,
  });
  const frontListener = createServer(async (req, res) => {
    if (!(await front.forward(req, res, String(req.headers["x-owner"] ?? "owner")))) {
      res.writeHead(404).end("not forwarded");
    }
  });
  let frontUrl = "";

  beforeAll(async () => {
    owner = new ReplicaDirectory({
      replicaId: "owner",
      loopbackUrl: await listen(ownerListener),
      busPrefix: "t",
      maxBodyBytes: 4 * 1024 * 1024,
      logger,
    });
    frontUrl = await listen(frontListener);
    const bucket = await bus.bucket("t_replicas");
    await owner.attach(bus, bucket);
    await front.attach(bus, bucket);
  });
  afterAll(async () => {
    await front.stop();
    await owner.stop();
    ownerListener.closeAllConnections();
    frontListener.closeAllConnections();
    await Promise.all([ownerListener, frontListener].map((s) => new Promise((r) => s.close(r))));
  });

  it("carries a request body larger than one bus message and its answer, status and headers", async () => {
    const body = Buffer.alloc(700_000, 7);
    const res = await fetch(`${frontUrl}/echo`, { method: "POST", body });
    expect(res.status).toBe(201);
    expect(res.headers.get("x-echo")).toBe("yes");
    expect(Buffer.from(await res.arrayBuffer()).equals(body)).toBe(true);
    expect(seen.at(-1)).toMatchObject({ url: "/echo", forwardedBy: "front" });
  });

  it("does not carry hop-by-hop headers such as Expect: 100-continue (curl sends it for big bodies)", async () => {
    const { request } = await import("node:http");
    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(
        `${frontUrl}/echo`,
        { method: "POST", headers: { expect: "100-continue" } },
        (res) => {
          let body = "";
          res.on("data", (c) => {
            body += c;
          });
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      req.on("continue", () => req.end("continued"));
      req.on("error", reject);
    });
    expect(answer).toEqual({ status: 201, body: "continued" });
  });

  it("streams an answer as it comes", async () => {
    const res = await fetch(`${frontUrl}/stream`);
    expect(res.headers.get("content-type")).toBe("text/event-stream");
    expect(await res.text()).toBe("data: 0\n\ndata: 1\n\ndata: 2\n\n");
  });

  it("cancels the replay when the client goes away before the owner answered", async () => {
    const abandon = new AbortController();
    setTimeout(() => abandon.abort(), 100);
    await expect(fetch(`${frontUrl}/slow-head`, { signal: abandon.signal })).rejects.toThrow();
    await expect.poll(() => seen.at(-1)).toMatchObject({ url: "/slow-head", closedEarly: true });
    // The owner goes on serving.
    expect((await fetch(`${frontUrl}/stream`)).status).toBe(200);
  });

  it("does not forward to a replica it has not heard of, nor a forwarded request again", async () => {
    const unknown = await fetch(`${frontUrl}/echo`, {
      method: "POST",
      body: "x",
      headers: { "x-owner": "nobody" },
    });
    expect(unknown.status).toBe(404);
    const again = await fetch(`${frontUrl}/echo`, {
      method: "POST",
      body: "x",
      headers: { [FORWARDED_HEADER]: "x" },
    });
    expect(again.status).toBe(404);
  });
});

describe("ReplicaDirectory over a bus that loses frames", () => {
  /** The in-process bus, except that it loses every `end` frame (NATS core is at-most-once). */
  class LossyBus extends MemoryBus {
    override publish(subject: string, message: Parameters<MemoryBus["publish"]>[1]): void {
      if (message.headers.t !== "end") super.publish(subject, message);
    }
  }
  const bus = new LossyBus();
  const ownerListener = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end('{"ok":true}');
  });
  let owner: ReplicaDirectory;
  let front: ReplicaDirectory;
  const frontListener = createServer(async (req, res) => {
    if (!(await front.forward(req, res, "owner"))) res.writeHead(404).end();
  });
  let frontUrl = "";

  beforeAll(async () => {
    const options = { busPrefix: "lossy", maxBodyBytes: 1024, logger, keepaliveMs: 100 };
    owner = new ReplicaDirectory({
      ...options,
      replicaId: "owner",
      loopbackUrl: await listen(ownerListener),
    });
    front = new ReplicaDirectory({ ...options, replicaId: "front", loopbackUrl: "http://127.0.0.1:9" });
    frontUrl = await listen(frontListener);
    const bucket = await bus.bucket("lossy_replicas");
    await owner.attach(bus, bucket);
    await front.attach(bus, bucket);
  });
  afterAll(async () => {
    await front.stop();
    await owner.stop();
    await Promise.all([ownerListener, frontListener].map((s) => new Promise((r) => s.close(r))));
  });

  it("ends an exchange whose end frame was lost once the owner stops saying it is alive", async () => {
    const started = Date.now();
    const res = await fetch(`${frontUrl}/answer`);
    expect(res.status).toBe(200);
    // The body arrived, its end never does: the client sees the stream cut, not a hang.
    await expect(res.text()).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(3000);
  });
});
