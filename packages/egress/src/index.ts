export * from "./addresses.ts";
export * from "./connect.ts";
