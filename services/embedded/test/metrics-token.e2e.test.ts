import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  eventually,
  freePort,
  type ManagedProcess,
  startTsService,
  waitForReady,
} from "../../../packages/testing/src/index.ts";

// Metrics name every tenant's servers when labelled per server: embedded mode must guard them
// with MCPGW_METRICS_TOKEN exactly as the distributed planes do.
describe("embedded mode with MCPGW_METRICS_TOKEN", () => {
  const token = "embedded-metrics-token-0123456789";
  const dirs: string[] = [];
  let proc: ManagedProcess;
  let dpPort: number;
  let cpPort: number;

  const embedded = async (extra: Record<string, string>) => {
    const dataDir = await mkdtemp(join(tmpdir(), "mcpgw-embedded-metrics-"));
    dirs.push(dataDir);
    const [dp, cp] = await Promise.all([freePort(), freePort()]);
    const started = startTsService("services/embedded/src/main.ts", {
      MCPGW_DATA_DIR: dataDir,
      DP_PORT: String(dp),
      CP_PORT: String(cp),
      DATABASE_URL: "",
      REDIS_URL: "",
      NATS_URL: "",
      ...extra,
    });
    return { proc: started, dpPort: dp, cpPort: cp };
  };

  beforeAll(async () => {
    ({ proc, dpPort, cpPort } = await embedded({ MCPGW_METRICS_TOKEN: token }));
    await waitForReady(`http://127.0.0.1:${cpPort}/ready`, proc, 60_000);
    await waitForReady(`http://127.0.0.1:${dpPort}/ready`, proc, 10_000);
  }, 90_000);

  afterAll(async () => {
    await proc?.stop();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  const scrape = (port: number, authorization?: string) =>
    fetch(`http://127.0.0.1:${port}/metrics`, { headers: authorization ? { authorization } : {} });

  it.each([
    ["control plane", () => cpPort, "mcpgw_cp_"],
    ["data plane", () => dpPort, "mcpgw_dp_"],
  ])(
    "the %s's /metrics refuses scrapes without the token and serves them with it",
    async (_, port, prefix) => {
      expect((await scrape(port())).status).toBe(401);
      expect((await scrape(port(), "Bearer not-the-metrics-token-at-all")).status).toBe(401);
      const ok = await scrape(port(), `Bearer ${token}`);
      expect(ok.status).toBe(200);
      expect(await ok.text()).toContain(prefix);
    },
  );

  it("refuses to start with a token shorter than 16 characters, naming the setting", async () => {
    const { proc: short } = await embedded({ MCPGW_METRICS_TOKEN: "short" });
    await eventually(() => short.child.exitCode !== null, 30_000);
    expect(short.child.exitCode).toBe(1);
    expect(short.output()).toContain("MCPGW_METRICS_TOKEN: at least 16 characters");
  });
});
