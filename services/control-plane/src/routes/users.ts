import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { verbContext } from "../auth/middleware.ts";
import type { AppEnv, ControlPlaneDeps } from "../env.ts";
import { createUser, deleteUser, getUser, listUsers, updateUser } from "../verbs/users.ts";
import { DisplayName, errorResponses, IdParam, json, jsonBody, listResponse, PageQuery } from "./schemas.ts";

export const RoleEnum = z.enum(["admin", "operator", "user", "viewer", "api_user"]);

const User = z
  .object({
    id: z.string(),
    org_id: z.string(),
    email: z.string(),
    name: z.string(),
    role: RoleEnum,
    active: z.boolean(),
    email_verified: z.boolean(),
    last_login_at: z.string().nullable(),
    created_at: z.string(),
    updated_at: z.string(),
  })
  .openapi("User");

const UserInput = z
  .strictObject({
    email: z.string().email().max(320),
    name: DisplayName.optional(),
    password: z.string().min(12).max(1024).optional(),
    role: RoleEnum,
    active: z.boolean().optional(),
  })
  .openapi("UserInput");

const tags = ["Users"];

/** `/api/v1/users`: admin CRUD of the org's users. */
export function userRoutes(deps: ControlPlaneDeps) {
  const app = new OpenAPIHono<AppEnv>();
  app.openapi(
    createRoute({
      method: "get",
      path: "/",
      tags,
      request: { query: PageQuery },
      responses: { 200: listResponse(User), ...errorResponses },
    }),
    async (c) => c.json(await listUsers({ ctx: verbContext(c, deps), page: c.req.valid("query") }), 200),
  );
  app.openapi(
    createRoute({
      method: "post",
      path: "/",
      tags,
      request: { body: jsonBody(UserInput) },
      responses: { 201: json(User, "Created"), ...errorResponses },
    }),
    async (c) => c.json(await createUser({ ctx: verbContext(c, deps), input: c.req.valid("json") }), 201),
  );
  app.openapi(
    createRoute({
      method: "get",
      path: "/{id}",
      tags,
      request: { params: IdParam },
      responses: { 200: json(User), ...errorResponses },
    }),
    async (c) => c.json(await getUser({ ctx: verbContext(c, deps), id: c.req.valid("param").id }), 200),
  );
  app.openapi(
    createRoute({
      method: "patch",
      path: "/{id}",
      tags,
      request: { params: IdParam, body: jsonBody(UserInput.partial()) },
      responses: { 200: json(User), ...errorResponses },
    }),
    async (c) =>
      c.json(
        await updateUser({
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
      await deleteUser({ ctx: verbContext(c, deps), id: c.req.valid("param").id });
      return c.body(null, 204);
    },
  );
  return app;
}
