export * from "./memory.ts";
export * from "./nats.ts";
export * from "./types.ts";
