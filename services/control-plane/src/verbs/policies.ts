import { schema } from "@mcpgw/db";
import { evaluatePolicy, type PolicyDecision, type PolicyRule } from "@mcpgw/policy";
import { and, eq } from "drizzle-orm";
import { recordAudit } from "../audit.ts";
import { authorize } from "../auth/permissions.ts";
import type { VerbContext } from "../context.ts";
import { assertChanges, conflict, notFound } from "../errors.ts";
import { bumpOrgVersion } from "./config-version.ts";
import { type Page, type PageRequest, pageQuery, toPage } from "./pagination.ts";

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
  effect: "allow" | "deny";
  priority?: number | undefined;
  principals?: string[] | undefined;
  namespaces?: string[] | undefined;
  servers?: string[] | undefined;
  tools?: string[] | undefined;
  enabled?: boolean | undefined;
}

const inOrg = (ctx: VerbContext, id: string) =>
  and(eq(schema.policies.id, id), eq(schema.policies.org_id, ctx.actor.org_id));

/** Lists the org's policy rules. */
export async function listPolicies({
  ctx,
  page,
}: {
  ctx: VerbContext;
  page: PageRequest;
}): Promise<Page<PolicyDto>> {
  authorize(ctx.actor, "policies:read");
  const q = pageQuery(schema.policies, page);
  const rows = await ctx.db
    .select()
    .from(schema.policies)
    .where(and(eq(schema.policies.org_id, ctx.actor.org_id), q.where))
    .orderBy(...q.orderBy)
    .limit(q.limit);
  return toPage(rows, page.limit, toDto);
}

/** One policy rule. */
export async function getPolicy({ ctx, id }: { ctx: VerbContext; id: string }): Promise<PolicyDto> {
  authorize(ctx.actor, "policies:read");
  const [row] = await ctx.db.select().from(schema.policies).where(inOrg(ctx, id));
  if (!row) throw notFound("policy");
  return toDto(row);
}

/** Creates a policy rule. */
export async function createPolicy({
  ctx,
  input,
}: {
  ctx: VerbContext;
  input: PolicyInput;
}): Promise<PolicyDto> {
  authorize(ctx.actor, "policies:write");
  const [dup] = await ctx.db
    .select({ id: schema.policies.id })
    .from(schema.policies)
    .where(and(eq(schema.policies.org_id, ctx.actor.org_id), eq(schema.policies.name, input.name)));
  if (dup) throw conflict(`a policy named '${input.name}' already exists`);
  const row = await ctx.db.transaction(async (tx) => {
    const [created] = await tx
      .insert(schema.policies)
      .values({ ...input, org_id: ctx.actor.org_id })
      .returning();
    await recordAudit(tx, ctx, {
      action: "policy.create",
      resource_type: "policy",
      resource_id: created!.id,
      after: created,
    });
    await bumpOrgVersion(tx, ctx.actor.org_id);
    return created!;
  });
  ctx.publisher.notify(ctx.actor.org_id);
  return toDto(row);
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
  authorize(ctx.actor, "policies:write");
  assertChanges(patch);
  const row = await ctx.db.transaction(async (tx) => {
    const [before] = await tx.select().from(schema.policies).where(inOrg(ctx, id)).for("update");
    if (!before) throw notFound("policy");
    const [after] = await tx.update(schema.policies).set(patch).where(inOrg(ctx, id)).returning();
    await recordAudit(tx, ctx, {
      action: "policy.update",
      resource_type: "policy",
      resource_id: id,
      before,
      after,
    });
    await bumpOrgVersion(tx, ctx.actor.org_id);
    return after!;
  });
  ctx.publisher.notify(ctx.actor.org_id);
  return toDto(row);
}

/** Deletes a policy rule. */
export async function deletePolicy({ ctx, id }: { ctx: VerbContext; id: string }): Promise<void> {
  authorize(ctx.actor, "policies:write");
  await ctx.db.transaction(async (tx) => {
    const [before] = await tx.delete(schema.policies).where(inOrg(ctx, id)).returning();
    if (!before) throw notFound("policy");
    await recordAudit(tx, ctx, { action: "policy.delete", resource_type: "policy", resource_id: id, before });
    await bumpOrgVersion(tx, ctx.actor.org_id);
  });
  ctx.publisher.notify(ctx.actor.org_id);
}

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
