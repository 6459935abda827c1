export * from "./client.ts";
export type { UpstreamEndpoint } from "./schema.ts";
export * as schema from "./schema.ts";
