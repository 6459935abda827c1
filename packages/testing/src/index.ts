export * from "./env.ts";
export * from "./database.ts";
export * from "./processes.ts";
export * from "./nats.ts";
export * from "./upstream-server.ts";
export * from "./everything.ts";
export * from "./stack.ts";
