export * from "./json-rpc.ts";
export * from "./stateless.ts";
export * from "./versions.ts";
