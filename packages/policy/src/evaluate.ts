import { z } from "zod";

export const POLICY_EFFECTS = ["allow", "deny"] as const;
export type PolicyEffect = (typeof POLICY_EFFECTS)[number];

/** A policy rule as stored and as carried in snapshots: the one definition of its shape. */
export const policyRuleSchema = z.object({
  id: z.string(),
  name: z.string(),
  effect: z.enum(POLICY_EFFECTS),
  priority: z.number().int(),
  /** `*`, `role:<role>`, `user:<id>`, `key:<api key id>`, `a2a:<api key id>`, `idp:<provider id>` (globs allowed). */
  principals: z.array(z.string()),
  /** Namespace slugs or ids (globs allowed). */
  namespaces: z.array(z.string()),
  /** Server names or ids (globs allowed). */
  servers: z.array(z.string()),
  /** Tool, prompt or resource names (globs allowed). */
  tools: z.array(z.string()),
  enabled: z.boolean(),
});
export type PolicyRule = z.infer<typeof policyRuleSchema>;

/** Who asks, expressed as the identifiers rules can name. */
export interface PolicyPrincipal {
  role: string;
  user_id?: string | undefined;
  key_id?: string | undefined;
  a2a_key_id?: string | undefined;
  idp_id?: string | undefined;
}

export interface PolicyRequest {
  principal: PolicyPrincipal;
  namespace: { id: string; slug: string };
  server: { id: string; name: string };
  /** The tool being called or listed; absent for server-level access (initialize, ping, …). */
  tool?: string | undefined;
}

export interface PolicyDecision {
  allowed: boolean;
  /** The rule that decided, or null when the org's default did. */
  rule: { id: string; name: string; effect: PolicyEffect } | null;
  reason: string;
}

const globCache = new Map<string, RegExp>();

/** `*` matches any run of characters, `?` one character; everything else is literal. */
export function globToRegExp(glob: string): RegExp {
  let re = globCache.get(glob);
  if (!re) {
    const body = glob
      .replace(/[.+^${}()|[\]\\]/g, "\\$&")
      .replace(/\*/g, ".*")
      .replace(/\?/g, ".");
    re = new RegExp(`^${body}$`, "s");
    if (globCache.size > 10_000) globCache.clear();
    globCache.set(glob, re);
  }
  return re;
}

const anyMatch = (patterns: string[], values: string[]) =>
  patterns.some((p) => p === "*" || values.some((v) => globToRegExp(p).test(v)));

function principalIds(p: PolicyPrincipal): string[] {
  const ids = [`role:${p.role}`];
  if (p.user_id) ids.push(`user:${p.user_id}`);
  if (p.key_id) ids.push(`key:${p.key_id}`);
  if (p.a2a_key_id) ids.push(`a2a:${p.a2a_key_id}`);
  if (p.idp_id) ids.push(`idp:${p.idp_id}`);
  return ids;
}

function matches(rule: PolicyRule, req: PolicyRequest, principal: string[]): boolean {
  if (!anyMatch(rule.principals, principal)) return false;
  if (!anyMatch(rule.namespaces, [req.namespace.slug, req.namespace.id])) return false;
  if (!anyMatch(rule.servers, [req.server.name, req.server.id])) return false;
  if (req.tool === undefined) {
    // Server-level access: a deny must cover every tool to shut the server; any allow opens it.
    return rule.effect === "allow" || rule.tools.includes("*");
  }
  return anyMatch(rule.tools, [req.tool]);
}

const byPriority = (a: PolicyRule, b: PolicyRule) => a.priority - b.priority || a.name.localeCompare(b.name);

/**
 * Decides a request against an org's rules: any matching deny wins; otherwise a matching allow
 * allows; otherwise the org's default applies. Among matching rules of the deciding effect, the
 * lowest priority number (then name) is reported.
 */
export function evaluatePolicy(
  rules: readonly PolicyRule[],
  defaultEffect: PolicyEffect,
  req: PolicyRequest,
): PolicyDecision {
  const principal = principalIds(req.principal);
  let allow: PolicyRule | undefined;
  let deny: PolicyRule | undefined;
  for (const rule of rules) {
    if (!rule.enabled || !matches(rule, req, principal)) continue;
    if (rule.effect === "deny") {
      if (!deny || byPriority(rule, deny) < 0) deny = rule;
    } else if (!allow || byPriority(rule, allow) < 0) {
      allow = rule;
    }
  }
  const what =
    req.tool === undefined
      ? `server '${req.server.name}'`
      : `tool '${req.tool}' on server '${req.server.name}'`;
  if (deny) return { allowed: false, rule: pick(deny), reason: `${what} denied by policy '${deny.name}'` };
  if (allow) return { allowed: true, rule: pick(allow), reason: `${what} allowed by policy '${allow.name}'` };
  return {
    allowed: defaultEffect === "allow",
    rule: null,
    reason: `${what} ${defaultEffect === "allow" ? "allowed" : "denied"} by the organization's default (no policy matched)`,
  };
}

const pick = (r: PolicyRule) => ({ id: r.id, name: r.name, effect: r.effect });

/**
 * True when no rule can deny any tool of this server to this principal, so tool lists need no
 * filtering (the common case, kept off the hot path).
 */
export function allowsEveryTool(
  rules: readonly PolicyRule[],
  defaultEffect: PolicyEffect,
  req: Omit<PolicyRequest, "tool">,
): boolean {
  const principal = principalIds(req.principal);
  let allowAll = defaultEffect === "allow";
  for (const rule of rules) {
    if (!rule.enabled) continue;
    if (!anyMatch(rule.principals, principal)) continue;
    if (!anyMatch(rule.namespaces, [req.namespace.slug, req.namespace.id])) continue;
    if (!anyMatch(rule.servers, [req.server.name, req.server.id])) continue;
    if (rule.effect === "deny") return false;
    if (rule.tools.includes("*")) allowAll = true;
  }
  return allowAll;
}
