/**
 * The benchmark's MCP upstream, in a process of its own so that it does not share an event
 * loop with the load generator. Prints one JSON line `{"url": ...}` once it listens.
 */
import { startTestUpstream } from "../packages/testing/src/upstream-server.ts";

const upstream = await startTestUpstream(Number(process.env.BENCH_UPSTREAM_PORT ?? 0));
// The test upstream records every request for assertions; under load that list only grows.
const trim = setInterval(() => {
  upstream.received.length = 0;
}, 1000);
process.stdout.write(`${JSON.stringify({ url: upstream.url, pid: process.pid })}\n`);

async function shutdown() {
  clearInterval(trim);
  await upstream.close().catch(() => {});
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown());
process.on("SIGINT", () => void shutdown());
