export * from "./bullmq.ts";
export * from "./jobs.ts";
export * from "./memory.ts";
export * from "./runner.ts";
