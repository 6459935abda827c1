export * from "./schema.ts";
export * from "./signing.ts";
export * from "./stdio-launch.ts";
export * from "./upstream-credentials.ts";
