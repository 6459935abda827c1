export * from "./memory.ts";
export * from "./nats.ts";
export * from "./signed.ts";
export * from "./types.ts";
