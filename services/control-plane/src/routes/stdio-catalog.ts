import { z } from "@hono/zod-openapi";
import { stdioParameterSchema } from "@mcpgw/snapshot";
import type { ControlPlaneDeps } from "../env.ts";
import {
  createCatalogEntry,
  deleteCatalogEntry,
  getCatalogEntry,
  listCatalog,
  updateCatalogEntry,
} from "../verbs/stdio-catalog.ts";
import { crudRoutes } from "./crud.ts";
import { DisplayName, Slug } from "./schemas.ts";

const EnvName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "environment variable names are letters, digits and _");

// The declaration contract is the snapshot's (data planes check values against the same schema).
const Parameter = z.strictObject(stdioParameterSchema.shape).openapi("StdioParameter");

const CatalogEntry = z
  .object({
    id: z.string(),
    slug: z.string(),
    name: z.string(),
    description: z.string().nullable(),
    command: z.string(),
    args: z.array(z.string()),
    env: z.record(z.string(), z.string()),
    parameters: z.array(Parameter),
    enabled: z.boolean(),
    created_at: z.string(),
    updated_at: z.string(),
  })
  .openapi("StdioCatalogEntry");

const fields = {
  slug: Slug,
  name: DisplayName.max(128),
  description: z.string().max(2000).nullable().optional(),
  command: z.string().min(1).max(1024).openapi({
    description:
      "A bare name (found on the data plane's PATH) or an absolute path; must be on each data plane's MCPGW_STDIO_ALLOWED_COMMANDS",
  }),
  args: z
    .array(z.string().max(4096))
    .max(64)
    .optional()
    .openapi({ description: "Argument template: `{{name}}` is replaced by the parameter's value" }),
  env: z
    .record(EnvName, z.string().max(8192))
    .optional()
    .openapi({ description: "Fixed environment, visible to org admins: put secrets in secret parameters" }),
  parameters: z.array(Parameter).max(64).optional(),
  enabled: z.boolean().optional(),
};

const Input = z.strictObject(fields).openapi("StdioCatalogEntryInput");
const Patch = z.strictObject(fields).partial().openapi("StdioCatalogEntryPatch");

/**
 * `/api/v1/stdio-catalog`: the launchable stdio servers. Platform administrators define them;
 * org admins create stdio servers from them by filling their parameters.
 */
export function stdioCatalogRoutes(deps: ControlPlaneDeps) {
  return crudRoutes(deps, {
    tags: ["stdio catalog"],
    item: CatalogEntry,
    input: Input,
    patch: Patch,
    descriptions: {
      create: "Adds a launchable stdio server (platform administrators only).",
      update: "Changes an entry; data planes launch the new definition for every server of it.",
      remove: "Removes an entry no server uses.",
    },
    verbs: {
      list: (ctx, page) => listCatalog({ ctx, page }),
      create: (ctx, input) => createCatalogEntry({ ctx, input }),
      get: (ctx, id) => getCatalogEntry({ ctx, id }),
      update: (ctx, id, patch) => updateCatalogEntry({ ctx, id, patch }),
      remove: (ctx, id) => deleteCatalogEntry({ ctx, id }),
    },
  });
}
