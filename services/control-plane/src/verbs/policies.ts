import { schema } from "@mcpgw/db";
import type { PolicyEffect } from "@mcpgw/policy";
import { evaluatePolicy, type PolicyDecision, type PolicyRule } from "@mcpgw/policy";
import { and, eq } from "drizzle-orm";
import { authorize } from "../auth/permissions.ts";
import type { VerbContext } from "../context.ts";
import { notFound } from "../errors.ts";
import { orgResource } from "./org-resource.ts";
import type { Page, PageRequest } from "./pagination.ts";

type PolicyRow = typeof schema.policies.$inferSelect;

export interface PolicyDto extends PolicyRule {
  org_id: string;
  description: string | null;
  created_at: string;
  updated_at: string;
}

const toDto = (p: PolicyRow): PolicyDto => ({
  id: p.id,
  org_id: p.org_id,
  name: p.name,
  description: p.description,
  effect: p.effect,
  priority: p.priority,
  principals: p.principals,
  namespaces: p.namespaces,
  servers: p.servers,
  tools: p.tools,
  enabled: p.enabled,
  created_at: p.created_at.toISOString(),
  updated_at: p.updated_at.toISOString(),
});

export interface PolicyInput {
  name: string;
  description?: string | null | undefined;
  effect: PolicyEffect;
  priority?: number | undefined;
  principals?: string[] | undefined;
  namespaces?: string[] | undefined;
  servers?: string[] | undefined;
  tools?: string[] | undefined;
  enabled?: boolean | undefined;
}

const policies = orgResource({
  table: schema.policies,
  resource: "policy",
  label: "policy",
  read: "policies:read",
  write: "policies:write",
  toDto,
  inSnapshot: true,
});

/** Lists the org's policy rules. */
export const listPolicies = ({
  ctx,
  page,
}: {
  ctx: VerbContext;
  page: PageRequest;
}): Promise<Page<PolicyDto>> => policies.list(ctx, page);

/** One policy rule. */
export const getPolicy = ({ ctx, id }: { ctx: VerbContext; id: string }): Promise<PolicyDto> =>
  policies.get(ctx, id);

/** Creates a policy rule. */
export async function createPolicy({
  ctx,
  input,
}: {
  ctx: VerbContext;
  input: PolicyInput;
}): Promise<PolicyDto> {
  authorize(ctx.actor, "policies:write");
  await policies.assertNameFree(ctx, input.name);
  return policies.create(ctx, { ...input });
}

/** Changes a policy rule. */
export async function updatePolicy({
  ctx,
  id,
  patch,
}: {
  ctx: VerbContext;
  id: string;
  patch: Partial<PolicyInput>;
}): Promise<PolicyDto> {
  if (patch.name) await policies.assertNameFree(ctx, patch.name, id);
  return policies.update(ctx, id, { ...patch });
}

/** Deletes a policy rule. */
export const deletePolicy = ({ ctx, id }: { ctx: VerbContext; id: string }): Promise<void> =>
  policies.remove(ctx, id);

export interface EvaluateInput {
  principal: {
    role: string;
    user_id?: string | undefined;
    key_id?: string | undefined;
    a2a_key_id?: string | undefined;
    idp_id?: string | undefined;
  };
  server_id: string;
  tool?: string | undefined;
}

/**
 * Answers "would this principal be allowed to call this tool on this server, and by which rule",
 * with the same evaluator the data planes run, without calling anything.
 */
export async function evaluatePolicies({
  ctx,
  input,
}: {
  ctx: VerbContext;
  input: EvaluateInput;
}): Promise<PolicyDecision> {
  authorize(ctx.actor, "policies:read");
  const [server] = await ctx.db
    .select({
      id: schema.mcpServers.id,
      name: schema.mcpServers.name,
      ns_id: schema.namespaces.id,
      ns_slug: schema.namespaces.slug,
    })
    .from(schema.mcpServers)
    .innerJoin(schema.namespaces, eq(schema.namespaces.id, schema.mcpServers.namespace_id))
    .where(and(eq(schema.mcpServers.id, input.server_id), eq(schema.mcpServers.org_id, ctx.actor.org_id)));
  if (!server) throw notFound("server");
  const [org] = await ctx.db
    .select({ def: schema.organizations.policy_default })
    .from(schema.organizations)
    .where(eq(schema.organizations.id, ctx.actor.org_id));
  const rules = await ctx.db
    .select()
    .from(schema.policies)
    .where(eq(schema.policies.org_id, ctx.actor.org_id));
  return evaluatePolicy(rules.map(toDto), org?.def ?? "allow", {
    principal: input.principal,
    namespace: { id: server.ns_id, slug: server.ns_slug },
    server: { id: server.id, name: server.name },
    tool: input.tool,
  });
}
