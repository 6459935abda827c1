import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { verbContext } from "../auth/middleware.ts";
import type { AppEnv, ControlPlaneDeps } from "../env.ts";
import { createApiKey, getApiKey, listApiKeys, revokeApiKey } from "../verbs/api-keys.ts";
import { DisplayName, errorResponses, IdParam, json, jsonBody, listResponse, PageQuery } from "./schemas.ts";

export const ApiKey = z
  .object({
    id: z.string(),
    org_id: z.string(),
    user_id: z.string().nullable(),
    namespace_id: z.string().nullable(),
    name: z.string(),
    prefix: z.string(),
    kind: z.enum(["user", "a2a"]),
    permissions: z.array(z.string()),
    expires_at: z.string().nullable(),
    last_used_at: z.string().nullable(),
    active: z.boolean(),
    created_at: z.string(),
  })
  .openapi("ApiKey");

export const ApiKeyInput = z
  .strictObject({
    name: DisplayName,
    kind: z.enum(["user", "a2a"]).optional(),
    namespace_id: z.uuid().nullable().optional(),
    permissions: z
      .array(z.string().regex(/^[a-z_]+:[a-z_*]+$/, "permissions look like `mcp:use`"))
      .max(32)
      .optional(),
    expires_at: z.iso.datetime({ offset: true }).nullable().optional(),
  })
  .openapi("ApiKeyInput");

const tags = ["API keys"];

/** `/api/v1/api-keys`: list and revoke keys (create with `POST /auth/api-keys` or here). */
export function apiKeyRoutes(deps: ControlPlaneDeps) {
  const app = new OpenAPIHono<AppEnv>();
  app.openapi(
    createRoute({
      method: "get",
      path: "/",
      tags,
      request: { query: PageQuery },
      responses: { 200: listResponse(ApiKey), ...errorResponses },
    }),
    async (c) => c.json(await listApiKeys({ ctx: verbContext(c, deps), page: c.req.valid("query") }), 200),
  );
  app.openapi(
    createRoute({
      method: "post",
      path: "/",
      tags,
      request: { body: jsonBody(ApiKeyInput) },
      responses: {
        201: json(ApiKey.extend({ key: z.string() }), "Created; `key` is shown only now"),
        ...errorResponses,
      },
    }),
    async (c) => c.json(await createApiKey({ ctx: verbContext(c, deps), input: c.req.valid("json") }), 201),
  );
  app.openapi(
    createRoute({
      method: "get",
      path: "/{id}",
      tags,
      request: { params: IdParam },
      responses: { 200: json(ApiKey), ...errorResponses },
    }),
    async (c) => c.json(await getApiKey({ ctx: verbContext(c, deps), id: c.req.valid("param").id }), 200),
  );
  app.openapi(
    createRoute({
      method: "delete",
      path: "/{id}",
      tags,
      description: "Revokes the key; data planes stop accepting it within a second.",
      request: { params: IdParam },
      responses: { 204: { description: "Revoked" }, ...errorResponses },
    }),
    async (c) => {
      await revokeApiKey({ ctx: verbContext(c, deps), id: c.req.valid("param").id });
      return c.body(null, 204);
    },
  );
  return app;
}
