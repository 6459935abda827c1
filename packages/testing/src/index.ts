export * from "./env.ts";
export * from "./database.ts";
