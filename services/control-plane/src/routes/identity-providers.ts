import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { verbContext } from "../auth/middleware.ts";
import type { AppEnv, ControlPlaneDeps } from "../env.ts";
import {
  createIdentityProvider,
  deleteIdentityProvider,
  getIdentityProvider,
  listIdentityProviders,
  updateIdentityProvider,
} from "../verbs/identity-providers.ts";
import { DisplayName, errorResponses, IdParam, json, jsonBody, listResponse, PageQuery } from "./schemas.ts";
import { RoleEnum } from "./users.ts";

const IdentityProvider = z
  .object({
    id: z.string(),
    org_id: z.string(),
    name: z.string(),
    issuer: z.string(),
    jwks_url: z.string(),
    audience: z.string(),
    role_claim: z.string(),
    role_mapping: z.record(z.string(), z.string()),
    default_role: RoleEnum,
    enabled: z.boolean(),
    created_at: z.string(),
    updated_at: z.string(),
  })
  .openapi("IdentityProvider");

const IdentityProviderInput = z
  .strictObject({
    name: DisplayName,
    issuer: z.string().min(1).max(512),
    jwks_url: z.string().url().max(2048),
    audience: z
      .string()
      .min(1)
      .max(512)
      .openapi({ description: "The audience tokens must carry: this gateway's resource URL (RFC 8707)" }),
    role_claim: z.string().min(1).max(128).optional(),
    role_mapping: z.record(z.string().max(256), RoleEnum).optional(),
    default_role: RoleEnum.optional(),
    enabled: z.boolean().optional(),
  })
  .openapi("IdentityProviderInput");

const tags = ["Identity providers"];

/** `/api/v1/identity-providers`: OIDC issuers whose tokens data planes accept for this org. */
export function identityProviderRoutes(deps: ControlPlaneDeps) {
  const app = new OpenAPIHono<AppEnv>();
  app.openapi(
    createRoute({
      method: "get",
      path: "/",
      tags,
      request: { query: PageQuery },
      responses: { 200: listResponse(IdentityProvider), ...errorResponses },
    }),
    async (c) =>
      c.json(await listIdentityProviders({ ctx: verbContext(c, deps), page: c.req.valid("query") }), 200),
  );
  app.openapi(
    createRoute({
      method: "post",
      path: "/",
      tags,
      request: { body: jsonBody(IdentityProviderInput) },
      responses: { 201: json(IdentityProvider, "Created"), ...errorResponses },
    }),
    async (c) =>
      c.json(await createIdentityProvider({ ctx: verbContext(c, deps), input: c.req.valid("json") }), 201),
  );
  app.openapi(
    createRoute({
      method: "get",
      path: "/{id}",
      tags,
      request: { params: IdParam },
      responses: { 200: json(IdentityProvider), ...errorResponses },
    }),
    async (c) =>
      c.json(await getIdentityProvider({ ctx: verbContext(c, deps), id: c.req.valid("param").id }), 200),
  );
  app.openapi(
    createRoute({
      method: "patch",
      path: "/{id}",
      tags,
      request: { params: IdParam, body: jsonBody(IdentityProviderInput.partial()) },
      responses: { 200: json(IdentityProvider), ...errorResponses },
    }),
    async (c) =>
      c.json(
        await updateIdentityProvider({
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
      await deleteIdentityProvider({ ctx: verbContext(c, deps), id: c.req.valid("param").id });
      return c.body(null, 204);
    },
  );
  return app;
}
