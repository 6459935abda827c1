import { z } from "@hono/zod-openapi";
import { POLICY_EFFECTS } from "@mcpgw/policy";
import type { ControlPlaneDeps } from "../env.ts";
import {
  createOrganization,
  deleteOrganization,
  getOrganization,
  listOrganizations,
  updateOrganization,
} from "../verbs/organizations.ts";
import { crudRoutes } from "./crud.ts";
import { DisplayName, Slug } from "./schemas.ts";

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
    policy_default: z.enum(POLICY_EFFECTS),
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
  policy_default: z.enum(POLICY_EFFECTS).optional(),
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
  return crudRoutes(deps, {
    tags,
    item: Organization,
    input: OrganizationInput,
    patch: OrganizationPatch,
    verbs: {
      list: (ctx, page) => listOrganizations({ ctx, page }),
      create: (ctx, input) => createOrganization({ ctx, input }),
      get: (ctx, id) => getOrganization({ ctx, id }),
      update: (ctx, id, patch) => updateOrganization({ ctx, id, patch }),
      remove: (ctx, id) => deleteOrganization({ ctx, id }),
    },
  });
}
