import { createRoute, z } from "@hono/zod-openapi";
import { POLICY_EFFECTS } from "@mcpgw/policy";
import { verbContext } from "../auth/middleware.ts";
import type { ControlPlaneDeps } from "../env.ts";
import {
  createPolicy,
  deletePolicy,
  evaluatePolicies,
  getPolicy,
  listPolicies,
  updatePolicy,
} from "../verbs/policies.ts";
import { crudRoutes } from "./crud.ts";
import { DisplayName, errorResponses, json, jsonBody, NO_CONTROL_CHARACTERS } from "./schemas.ts";

const Pattern = z
  .string()
  .min(1)
  .max(256)
  .regex(NO_CONTROL_CHARACTERS, "must not contain control characters");
const Patterns = z.array(Pattern).min(1).max(64);

const Policy = z
  .object({
    id: z.string(),
    org_id: z.string(),
    name: z.string(),
    description: z.string().nullable(),
    effect: z.enum(POLICY_EFFECTS),
    priority: z.number().int(),
    principals: z.array(z.string()),
    namespaces: z.array(z.string()),
    servers: z.array(z.string()),
    tools: z.array(z.string()),
    enabled: z.boolean(),
    created_at: z.string(),
    updated_at: z.string(),
  })
  .openapi("Policy");

const PolicyInput = z
  .strictObject({
    name: DisplayName.max(128),
    description: z.string().max(2000).nullable().optional(),
    effect: z.enum(POLICY_EFFECTS),
    priority: z.number().int().min(0).max(100_000).optional(),
    principals: Patterns.optional().openapi({
      description: "`*`, `role:<role>`, `user:<id>`, `key:<id>`, `a2a:<id>`, `idp:<id>`; globs allowed",
    }),
    namespaces: Patterns.optional().openapi({ description: "namespace slugs or ids; globs allowed" }),
    servers: Patterns.optional().openapi({ description: "server names or ids; globs allowed" }),
    tools: Patterns.optional().openapi({ description: "tool names; globs allowed" }),
    enabled: z.boolean().optional(),
  })
  .openapi("PolicyInput");

const EvaluateInput = z
  .strictObject({
    principal: z.strictObject({
      role: z.enum(["admin", "operator", "user", "viewer", "api_user"]),
      user_id: z.string().max(200).optional(),
      key_id: z.string().max(200).optional(),
      a2a_key_id: z.string().max(200).optional(),
      idp_id: z.string().max(200).optional(),
    }),
    server_id: z.uuid(),
    tool: z.string().min(1).max(256).optional(),
  })
  .openapi("PolicyEvaluateInput");

const Decision = z
  .object({
    allowed: z.boolean(),
    rule: z.object({ id: z.string(), name: z.string(), effect: z.enum(POLICY_EFFECTS) }).nullable(),
    reason: z.string(),
  })
  .openapi("PolicyDecision");

const tags = ["Policies"];

/** `/api/v1/policies`: allow/deny rules (deny wins) and a dry-run evaluator. */
export function policyRoutes(deps: ControlPlaneDeps) {
  const app = crudRoutes(deps, {
    tags,
    item: Policy,
    input: PolicyInput,
    patch: PolicyInput.partial(),
    verbs: {
      list: (ctx, page) => listPolicies({ ctx, page }),
      create: (ctx, input) => createPolicy({ ctx, input }),
      get: (ctx, id) => getPolicy({ ctx, id }),
      update: (ctx, id, patch) => updatePolicy({ ctx, id, patch }),
      remove: (ctx, id) => deletePolicy({ ctx, id }),
    },
  });
  app.openapi(
    createRoute({
      method: "post",
      path: "/evaluate",
      tags,
      description:
        "Would this principal be allowed to call this tool on this server, and by which rule? Calls nothing.",
      request: { body: jsonBody(EvaluateInput) },
      responses: { 200: json(Decision), ...errorResponses },
    }),
    async (c) =>
      c.json(await evaluatePolicies({ ctx: verbContext(c, deps), input: c.req.valid("json") }), 200),
  );
  return app;
}
