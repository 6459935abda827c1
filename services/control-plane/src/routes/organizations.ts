import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { verbContext } from "../auth/middleware.ts";
import type { AppEnv, ControlPlaneDeps } from "../env.ts";
import {
  createOrganization,
  deleteOrganization,
  getOrganization,
  listOrganizations,
  updateOrganization,
} from "../verbs/organizations.ts";
import {
  DisplayName,
  errorResponses,
  IdParam,
  json,
  jsonBody,
  listResponse,
  PageQuery,
  Slug,
} from "./schemas.ts";

const Organization = z
  .object({
    id: z.string(),
    name: z.string(),
    slug: z.string(),
    plan: z.string(),
    max_servers: z.number().int(),
    max_sessions: z.number().int(),
    log_retention_days: z.number().int(),
    active: z.boolean(),
    policy_default: z.enum(["allow", "deny"]),
    config_version: z.number().int(),
    published_version: z.number().int(),
    created_at: z.string(),
    updated_at: z.string(),
  })
  .openapi("Organization");

const fields = {
  name: DisplayName,
  slug: Slug,
  plan: z
    .string()
    .min(1)
    .max(32)
    .regex(/^[a-z0-9_-]+$/)
    .optional(),
  max_servers: z.number().int().min(0).max(100_000).optional(),
  max_sessions: z.number().int().min(0).max(10_000_000).optional(),
  log_retention_days: z.number().int().min(1).max(3650).optional(),
  active: z.boolean().optional(),
  policy_default: z.enum(["allow", "deny"]).optional(),
};
const OrganizationInput = z
  .strictObject({
    ...fields,
    admin: z
      .strictObject({
        email: z.string().email().max(320),
        password: z.string().min(12).max(1024),
        name: DisplayName.optional(),
      })
      .optional(),
  })
  .openapi("OrganizationInput");
const OrganizationPatch = z.strictObject(fields).partial().openapi("OrganizationPatch");

const tags = ["Organizations"];

/** `/api/v1/organizations`: platform administrators manage tenants. */
export function organizationRoutes(deps: ControlPlaneDeps) {
  const app = new OpenAPIHono<AppEnv>();
  app.openapi(
    createRoute({
      method: "get",
      path: "/",
      tags,
      request: { query: PageQuery },
      responses: { 200: listResponse(Organization), ...errorResponses },
    }),
    async (c) =>
      c.json(await listOrganizations({ ctx: verbContext(c, deps), page: c.req.valid("query") }), 200),
  );
  app.openapi(
    createRoute({
      method: "post",
      path: "/",
      tags,
      request: { body: jsonBody(OrganizationInput) },
      responses: { 201: json(Organization, "Created"), ...errorResponses },
    }),
    async (c) =>
      c.json(await createOrganization({ ctx: verbContext(c, deps), input: c.req.valid("json") }), 201),
  );
  app.openapi(
    createRoute({
      method: "get",
      path: "/{id}",
      tags,
      request: { params: IdParam },
      responses: { 200: json(Organization), ...errorResponses },
    }),
    async (c) =>
      c.json(await getOrganization({ ctx: verbContext(c, deps), id: c.req.valid("param").id }), 200),
  );
  app.openapi(
    createRoute({
      method: "patch",
      path: "/{id}",
      tags,
      request: { params: IdParam, body: jsonBody(OrganizationPatch) },
      responses: { 200: json(Organization), ...errorResponses },
    }),
    async (c) =>
      c.json(
        await updateOrganization({
          ctx: verbContext(c, deps),
          id: c.req.valid("param").id,
          patch: c.req.valid("json"),
        }),
        200,
      ),
  );
  app.openapi(
    createRoute({
      method: "delete",
      path: "/{id}",
      tags,
      request: { params: IdParam },
      responses: { 204: { description: "Deleted" }, ...errorResponses },
    }),
    async (c) => {
      await deleteOrganization({ ctx: verbContext(c, deps), id: c.req.valid("param").id });
      return c.body(null, 204);
    },
  );
  return app;
}
