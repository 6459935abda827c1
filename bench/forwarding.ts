/**
 * The forwarding suite (`BENCH_SUITE=forwarding pnpm bench`): what it costs to reach a session
 * that lives in another replica. Two data-plane replicas; a stdio MCP server (`stdio-server.mjs`,
 * one tool `add`); sessions opened on replica 0, which runs their processes. The same load
 * (`tools/call add {a:1,b:2}`, one session per connection) is sent, in alternating order:
 *
 *   owner      to replica 0 itself
 *   forwarded  to replica 1, which carries each request over NATS to replica 0 and streams the
 *              answer back (what a client behind a non-sticky load balancer gets half the time)
 *
 * Environment: BENCH_DURATION_S (5), BENCH_WARMUP_S (1), BENCH_ROUNDS (4), BENCH_FWD_CONNECTIONS
 * (10). Results: stdout and results/forwarding-latest.json.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import autocannon from "autocannon";
import { type Stack, startStack } from "../packages/testing/src/stack.ts";
import { registerStdioServer } from "../packages/testing/src/stdio.ts";
import {
  benchDir,
  envNumber,
  gitRevision,
  mcpHeaders,
  median,
  metricSum,
  openSession,
  post,
  resultsDir,
  round1,
  round2,
  round3,
  table,
} from "./common.ts";

const DURATION_S = envNumber("BENCH_DURATION_S", 5);
const WARMUP_S = envNumber("BENCH_WARMUP_S", 1);
const ROUNDS = Math.round(envNumber("BENCH_ROUNDS", 4));
const CONNECTIONS = Math.round(envNumber("BENCH_FWD_CONNECTIONS", 10));
const SERVER_SCRIPT = join(benchDir, "stdio-server.mjs");
const EXPECTED = '"text":"3"';
type TargetName = "owner" | "forwarded";

let stack: Stack | undefined;
let nextId = 1;
const callBody = () =>
  `{"jsonrpc":"2.0","id":${++nextId},"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}`;

/** Hard limit for this suite, added to the run's watchdog. */
export function forwardingSuiteTimeoutS(): number {
  return Math.ceil(120 + ROUNDS * 2 * (DURATION_S + WARMUP_S + 2));
}

interface Phase {
  requests: number;
  errors: number;
  rps: number;
  p50: number;
  p99: number;
}

function load(
  url: string,
  sessions: string[],
  auth: Record<string, string>,
  durationS: number,
): Promise<Phase> {
  let client = 0;
  return new Promise((resolve, reject) => {
    autocannon(
      {
        url,
        method: "POST",
        connections: sessions.length,
        pipelining: 1,
        duration: durationS,
        timeout: 10,
        setupClient: (c) => {
          const sessionId = sessions[client++ % sessions.length]!;
          c.setRequests([
            {
              method: "POST",
              headers: mcpHeaders({ ...auth, "mcp-session-id": sessionId }),
              setupRequest: (req) => ({ ...req, body: callBody() }),
            },
          ]);
        },
        verifyBody: (body) => String(body).includes(EXPECTED),
      },
      (err, r) => {
        if (err) return reject(err);
        resolve({
          requests: r.requests.total,
          errors: r.errors + r.timeouts + r.non2xx + (r.mismatches ?? 0),
          rps: r.requests.average,
          p50: r.latency.p50,
          p99: r.latency.p99,
        });
      },
    );
  });
}

export async function runForwardingSuite(): Promise<number> {
  const startedAt = new Date();
  console.log(
    `\nmcpgw bench, forwarding suite: ${ROUNDS} round(s) of owner vs forwarded at ${CONNECTIONS} connection(s), ` +
      `${DURATION_S} s measured + ${WARMUP_S} s warm-up per phase`,
  );
  stack = await startStack({
    replicas: 2,
    env: {
      MCPGW_STDIO_ALLOWED_COMMANDS: process.execPath,
      MCPGW_STDIO_MAX_PER_PRINCIPAL: "32",
      MCPGW_STDIO_MAX_PER_ORG: "32",
    },
  });
  const [owner, other] = stack.dataPlanes;
  const api = await stack.api();
  const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", {
    name: "Bench fwd",
    slug: "bench-fwd",
  });
  const server = await registerStdioServer(api, {
    namespace_id: ns.body.id,
    name: "bench-fwd",
    command: process.execPath,
    args: [SERVER_SCRIPT],
  });
  const auth = { authorization: `Bearer ${api.token}` };
  const url = (dp: typeof owner) => `${dp!.url}/servers/${server.id}/mcp`;
  const sessions: string[] = [];
  for (let i = 0; i < CONNECTIONS; i++) sessions.push(await openSession(url(owner), auth, 15_000));
  // Replicas announce themselves over NATS; the other one must know the owner before it forwards.
  const deadline = Date.now() + 15_000;
  for (;;) {
    const probe = await post(url(other), mcpHeaders({ ...auth, "mcp-session-id": sessions[0]! }), {
      jsonrpc: "2.0",
      id: "probe",
      method: "tools/call",
      params: { name: "add", arguments: { a: 1, b: 2 } },
    });
    if (probe.status === 200 && probe.text.includes(EXPECTED)) break;
    if (Date.now() > deadline) throw new Error(`forwarding never answered: HTTP ${probe.status}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  const targets: Record<TargetName, string> = { owner: url(owner), forwarded: url(other) };
  for (const t of Object.values(targets)) await load(t, sessions, auth, 2);

  const phases: Record<TargetName, Phase[]> = { owner: [], forwarded: [] };
  for (let round = 0; round < ROUNDS; round++) {
    const order: TargetName[] = round % 2 === 0 ? ["owner", "forwarded"] : ["forwarded", "owner"];
    for (const name of order) {
      if (WARMUP_S > 0) await load(targets[name], sessions, auth, WARMUP_S);
      const phase = await load(targets[name], sessions, auth, DURATION_S);
      phases[name].push(phase);
      console.log(
        `  round ${round + 1} ${name.padEnd(9)} ${round1(phase.rps)} req/s, p50 ${phase.p50} ms, p99 ${phase.p99} ms, ${phase.errors} errors`,
      );
    }
  }
  const summary = (name: TargetName) => ({
    rps: round1(median(phases[name].map((p) => p.rps))),
    p50: round2(median(phases[name].map((p) => p.p50))),
    p99: round2(median(phases[name].map((p) => p.p99))),
    errors: phases[name].reduce((n, p) => n + p.errors, 0),
  });
  const o = summary("owner");
  const f = summary("forwarded");
  const forwardedTotal = await metricSum(other!.url, "mcpgw_forwarded_requests_total");
  console.log(
    `\n${table([
      ["target", "req/s (median)", "p50 ms", "p99 ms", "errors"],
      ["owner", String(o.rps), String(o.p50), String(o.p99), String(o.errors)],
      ["forwarded", String(f.rps), String(f.p50), String(f.p99), String(f.errors)],
    ])}\n\nforwarded/owner throughput ${round3(f.rps / o.rps)}×, p50 +${round2(f.p50 - o.p50)} ms ` +
      `(${forwardedTotal} requests carried over NATS by replica 1)`,
  );
  await mkdir(resultsDir, { recursive: true });
  await writeFile(
    join(resultsDir, "forwarding-latest.json"),
    `${JSON.stringify(
      {
        startedAt,
        revision: gitRevision(),
        settings: { DURATION_S, WARMUP_S, ROUNDS, CONNECTIONS },
        owner: o,
        forwarded: f,
        ratio: round3(f.rps / o.rps),
        phases,
      },
      null,
      2,
    )}\n`,
  );
  return o.errors + f.errors === 0 && forwardedTotal > 0 ? 0 : 1;
}

export async function stopForwardingSuite(): Promise<void> {
  await stack?.stop();
  stack = undefined;
}
