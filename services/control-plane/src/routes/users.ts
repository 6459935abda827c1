import { z } from "@hono/zod-openapi";
import type { ControlPlaneDeps } from "../env.ts";
import { createUser, deleteUser, getUser, listUsers, updateUser } from "../verbs/users.ts";
import { crudRoutes } from "./crud.ts";
import { DisplayName } from "./schemas.ts";

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
  return crudRoutes(deps, {
    tags,
    item: User,
    input: UserInput,
    patch: UserInput.partial(),
    verbs: {
      list: (ctx, page) => listUsers({ ctx, page }),
      create: (ctx, input) => createUser({ ctx, input }),
      get: (ctx, id) => getUser({ ctx, id }),
      update: (ctx, id, patch) => updateUser({ ctx, id, patch }),
      remove: (ctx, id) => deleteUser({ ctx, id }),
    },
  });
}
