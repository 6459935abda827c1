export * from "./versions.ts";
export * from "./json-rpc.ts";
