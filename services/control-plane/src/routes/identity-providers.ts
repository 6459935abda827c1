import { z } from "@hono/zod-openapi";
import type { ControlPlaneDeps } from "../env.ts";
import {
  createIdentityProvider,
  deleteIdentityProvider,
  getIdentityProvider,
  listIdentityProviders,
  updateIdentityProvider,
} from "../verbs/identity-providers.ts";
import { crudRoutes } from "./crud.ts";
import { DisplayName } from "./schemas.ts";
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
  return crudRoutes(deps, {
    tags,
    item: IdentityProvider,
    input: IdentityProviderInput,
    patch: IdentityProviderInput.partial(),
    verbs: {
      list: (ctx, page) => listIdentityProviders({ ctx, page }),
      create: (ctx, input) => createIdentityProvider({ ctx, input }),
      get: (ctx, id) => getIdentityProvider({ ctx, id }),
      update: (ctx, id, patch) => updateIdentityProvider({ ctx, id, patch }),
      remove: (ctx, id) => deleteIdentityProvider({ ctx, id }),
    },
  });
}
