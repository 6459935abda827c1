export * from "./client.ts";
export * as schema from "./schema.ts";
export type { UpstreamEndpoint } from "./schema.ts";
