export * from "./jobs.ts";
export * from "./runner.ts";
export * from "./memory.ts";
export * from "./bullmq.ts";
