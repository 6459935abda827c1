import { z } from "@hono/zod-openapi";
import { stdioValueSchema, type UpstreamCredentialsSpec } from "@mcpgw/snapshot";
import type { ControlPlaneDeps } from "../env.ts";
import { createServer, deleteServer, getServer, listServers, updateServer } from "../verbs/servers.ts";
import { crudRoutes } from "./crud.ts";
import { DisplayName, PageQuery } from "./schemas.ts";

const Endpoint = z.strictObject({
  url: z.string().max(2048),
  weight: z.number().int().min(1).max(1000).default(1),
});
const Transport = z.enum(["streamable_http", "sse", "stdio", "virtual"]);
const ParameterValue = stdioValueSchema;

const Server = z
  .object({
    id: z.string(),
    org_id: z.string(),
    namespace_id: z.string(),
    name: z.string(),
    description: z.string().nullable(),
    transport: Transport,
    url: z.string().nullable(),
    endpoints: z.array(z.object({ url: z.string(), weight: z.number() })),
    catalog_entry_id: z.string().nullable(),
    parameters: z.record(z.string(), ParameterValue),
    has_secrets: z.boolean(),
    version: z.string().nullable(),
    timeout_ms: z.number(),
    connect_timeout_ms: z.number(),
    retries: z.number(),
    status: z.enum(["unknown", "healthy", "unhealthy"]),
    health_check_enabled: z.boolean(),
    health_check_interval_s: z.number(),
    health_check_timeout_ms: z.number(),
    last_health_check_at: z.string().nullable(),
    last_error: z.string().nullable().openapi({
      description:
        "Why the server is unhealthy (the health check's or a data plane's reason, short; never an upstream body); null while healthy",
    }),
    data_planes: z
      .array(
        z.object({
          replica: z.string(),
          ok: z.boolean(),
          error: z.string().nullable(),
          reported_at: z.string(),
        }),
      )
      .openapi({
        description:
          "stdio servers: each data plane's last word on running the command (refused by its allowlist or isolation, crashed at start, or ran)",
      }),
    has_credentials: z.boolean(),
    tags: z.array(z.string()),
    metadata: z.record(z.string(), z.unknown()),
    enabled: z.boolean(),
    created_at: z.string(),
    updated_at: z.string(),
  })
  .openapi("Server");

const Secret = z.string().min(1).max(8192);
/** The API's input limits on the shape `@mcpgw/snapshot` defines (the compiler holds them together). */
const Credentials: z.ZodType<UpstreamCredentialsSpec> = z
  .discriminatedUnion("type", [
    z.strictObject({ type: z.literal("bearer"), token: Secret }),
    z.strictObject({
      type: z.literal("header"),
      name: z.string().regex(/^[A-Za-z0-9-]{1,64}$/, "a header name"),
      value: Secret,
    }),
    z.strictObject({
      type: z.literal("oauth_client_credentials"),
      token_url: z.string().url().max(2048),
      client_id: z.string().min(1).max(512),
      client_secret: Secret,
      scope: z.string().max(1024).optional(),
      audience: z.string().max(1024).optional(),
    }),
  ])
  .openapi("UpstreamCredentials", {
    description: "Write-only: sealed at rest, never returned; `null` removes them",
  });

const serverFields = {
  name: DisplayName.max(128),
  description: z.string().max(2000).nullable().optional(),
  url: z.string().max(2048).nullable().optional(),
  endpoints: z.array(Endpoint).min(1).max(32).optional(),
  parameters: z.record(z.string().max(64), ParameterValue.nullable()).optional().openapi({
    description:
      "stdio servers: values for the catalog entry's parameters, merged on update (`null` removes one); secret ones are write-only",
  }),
  version: z.string().max(64).nullable().optional(),
  timeout_ms: z.number().int().min(100).max(3_600_000).optional(),
  connect_timeout_ms: z.number().int().min(100).max(120_000).optional(),
  retries: z.number().int().min(0).max(10).optional(),
  health_check_enabled: z.boolean().optional(),
  health_check_interval_s: z.number().int().min(5).max(86_400).optional(),
  health_check_timeout_ms: z.number().int().min(100).max(60_000).optional(),
  tags: z.array(z.string().min(1).max(64)).max(32).optional(),
  metadata: z.record(z.string(), z.unknown()).optional(),
  enabled: z.boolean().optional(),
  credentials: Credentials.nullable().optional(),
};

const ServerInput = z
  .strictObject({
    namespace_id: z.uuid(),
    transport: Transport,
    catalog_entry_id: z
      .string()
      .min(1)
      .max(128)
      .optional()
      .openapi({ description: "stdio servers: the id or slug of an entry of /api/v1/stdio-catalog" }),
    ...serverFields,
  })
  .openapi("ServerInput");
const ServerPatch = z.strictObject(serverFields).partial().openapi("ServerPatch");

const tags = ["Servers"];

/** `/api/v1/servers`: register, list, change, enable/disable and remove upstream MCP servers. */
export function serverRoutes(deps: ControlPlaneDeps) {
  return crudRoutes(deps, {
    tags,
    item: Server,
    input: ServerInput,
    patch: ServerPatch,
    listQuery: PageQuery.extend({ namespace_id: z.uuid().optional() }),
    descriptions: {
      update: 'Changes fields of a server; `{"enabled": false}` disables it on every data plane.',
    },
    verbs: {
      list: (ctx, { namespace_id, ...page }) => listServers({ ctx, page, namespaceId: namespace_id }),
      create: (ctx, input) => createServer({ ctx, input }),
      get: (ctx, id) => getServer({ ctx, id }),
      update: (ctx, id, patch) => updateServer({ ctx, id, patch }),
      remove: (ctx, id) => deleteServer({ ctx, id }),
    },
  });
}
