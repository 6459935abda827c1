export * from "./json-rpc.ts";
export * from "./versions.ts";
