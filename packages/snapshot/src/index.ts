export * from "./schema.ts";
export * from "./signing.ts";
