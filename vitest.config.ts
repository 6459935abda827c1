import { defineConfig } from "vitest/config";

// Integration suites start real processes (control plane, data planes, worker) against the
// Postgres, Redis and NATS on loopback; run files one at a time so two cores are not oversubscribed.
export default defineConfig({
  test: {
    include: [
      "services/*/test/**/*.test.ts",
      "services/*/src/**/*.test.ts",
      "packages/*/src/**/*.test.ts",
      "packages/*/test/**/*.test.ts",
    ],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    fileParallelism: false,
    pool: "forks",
  },
});
