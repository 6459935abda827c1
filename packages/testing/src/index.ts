export * from "./cleanup.ts";
export * from "./database.ts";
export * from "./env.ts";
export * from "./everything.ts";
export * from "./nats.ts";
export * from "./processes.ts";
export * from "./stack.ts";
export * from "./upstream-server.ts";
