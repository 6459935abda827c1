import { allowsEveryTool, evaluatePolicy, type PolicyRequest } from "@mcpgw/policy";
import type { NamespaceEntry, OrgSnapshot } from "@mcpgw/snapshot";
import type { Counter } from "@mcpgw/telemetry";
import type { Authenticator } from "../auth/authenticator.ts";
import type { Principal } from "../auth/principal.ts";
import type { RateLimits, RateLimitVerdict } from "../rate-limit/rate-limits.ts";
import type { GatewayState, RoutedServer, SnapshotStore } from "../snapshot/store.ts";
import { GatewayError } from "./errors.ts";

/** What the guards need of the data plane. */
export interface GuardEnv {
  store: SnapshotStore;
  authenticator: Authenticator;
  rateLimits: RateLimits;
  /** `mcpgw_dp_policy_denials_total{server}`. */
  policyDenials: Counter<"server">;
  /** The `server` label of a server id (tenant ids only where the operator opted in). */
  label: (serverId: string) => string;
}

/** What a request or session is for. */
export type GuardTarget = { server: string } | { namespace: string };

export interface ToolDecision {
  allowed: boolean;
  reason: string;
  rule: unknown;
}

/** The messages the rate limits see: a JSON-RPC method, and the tool of a tools/call. */
export interface RpcSubject {
  method?: string | undefined;
  tool?: string | undefined;
  /** Named in the rejection's log line where no request context carries it. */
  requestId?: string | undefined;
}

/**
 * The checks every relay applies, for one caller and one target, always against the snapshot
 * the data plane holds *now* (never the one of the moment a session opened):
 *
 * - `standing()`: may the caller still use the target at all — the credential is not revoked,
 *   expired by its key, or changed in rights; the server (or namespace) still exists, is enabled,
 *   its org active, in the credential's namespace scope, and server-level policy admits the
 *   caller. A session whose standing fails is ended; a request is refused.
 * - `authorize(target)` / `keep(target)`: tool, prompt (`prompt:<name>`) and resource
 *   (`resource:<uri>`) policy, for calls and for filtering lists.
 * - `admit(rpc)`: the org's rate-limit rules.
 *
 * Evaluations that depend on the snapshot alone are memoized per snapshot, so a check per
 * message costs a pointer comparison until configuration changes.
 */
export class Guards {
  private memoState: GatewayState | undefined;
  private memoStanding: GatewayError | undefined;
  private memoEveryTool = true;
  /** The routed server (or namespace) as of the memoized snapshot. */
  private routed: RoutedServer | undefined;
  private namespace: { org: OrgSnapshot; entry: NamespaceEntry } | undefined;

  constructor(
    private readonly env: GuardEnv,
    readonly principal: Principal,
    readonly target: GuardTarget,
    /** The client's address, for per-IP rules. */
    private readonly ip: string,
  ) {}

  /** The server this guards, as the current snapshot has it (undefined for namespaces or once gone). */
  get server(): RoutedServer | undefined {
    this.refresh();
    return this.routed;
  }

  /** Why the caller may no longer use the target; undefined while it may. */
  standing(): GatewayError | undefined {
    this.refresh();
    if (this.memoStanding) return this.memoStanding;
    // Time-bound, so not memoized: an API key past its expiry.
    const expired = this.env.authenticator.expiry(this.principal);
    return expired ? new GatewayError("unauthorized", `Unauthorized: ${expired}`) : undefined;
  }

  /** True when policy lets this caller use every tool of the server (lists need no filtering). */
  get allowsEverything(): boolean {
    this.refresh();
    return this.memoEveryTool;
  }

  /**
   * Tool/prompt/resource policy for one target name; a denial is counted. (A namespace's own
   * guards admit everything: its members' guards decide, per member.)
   */
  authorize(target: string): ToolDecision {
    if (!("server" in this.target)) return { allowed: true, reason: "namespace", rule: null };
    const routed = this.server;
    if (!routed) return { allowed: false, reason: "server not found", rule: null };
    const { org } = routed;
    const decision = evaluatePolicy(org.policies, org.org.policy_default, {
      ...policyRequest(this.principal, routed),
      tool: target,
    });
    if (!decision.allowed) this.env.policyDenials.inc({ server: this.env.label(routed.server.id) });
    return decision;
  }

  /** Whether a list keeps an item (not counted as a denial). */
  keep(target: string): boolean {
    if (!("server" in this.target)) return true;
    const routed = this.server;
    if (!routed) return false;
    if (this.memoEveryTool) return true;
    const { org } = routed;
    return evaluatePolicy(org.policies, org.org.policy_default, {
      ...policyRequest(this.principal, routed),
      tool: target,
    }).allowed;
  }

  /** The org's rate-limit rules for one message (none apply: undefined). */
  admit(rpc: RpcSubject): Promise<RateLimitVerdict | undefined> {
    const routed = this.server;
    if (!routed) return Promise.resolve(undefined);
    return this.env.rateLimits.check({ ip: this.ip, principal: this.principal, routed, ...rpc });
  }

  private refresh(): void {
    const state = this.env.store.current;
    if (state === this.memoState) return;
    this.memoState = state;
    this.memoEveryTool = true;
    this.routed = undefined;
    this.namespace = undefined;
    this.memoStanding = this.evaluate(state);
  }

  private evaluate(state: GatewayState): GatewayError | undefined {
    const revoked = this.env.authenticator.revocation(this.principal);
    if (revoked) return new GatewayError("unauthorized", `Unauthorized: ${revoked}`);
    const p = this.principal;
    if ("server" in this.target) {
      const routed = state.servers.get(this.target.server);
      if (!routed || routed.org.org_id !== p.org_id)
        return new GatewayError("not_found", `unknown server ${this.target.server}`);
      this.routed = routed;
      const { server, org } = routed;
      if (p.namespace_id && p.namespace_id !== server.namespace_id)
        return new GatewayError("forbidden", "this credential is scoped to another namespace");
      if (!server.enabled || !org.org.active)
        return new GatewayError("forbidden", `server '${server.name}' is disabled`);
      const base = policyRequest(p, routed);
      const access = evaluatePolicy(org.policies, org.org.policy_default, base);
      if (!access.allowed) {
        this.env.policyDenials.inc({ server: this.env.label(server.id) });
        return new GatewayError("forbidden", access.reason, { data: { policy: access.rule } });
      }
      this.memoEveryTool = allowsEveryTool(org.policies, org.org.policy_default, base);
      return undefined;
    }
    const { namespace } = this.target;
    const org = state.orgs.get(p.org_id);
    const entry = org?.namespaces.find((n) => n.id === namespace);
    if (!org || !entry) return new GatewayError("not_found", "unknown namespace");
    this.namespace = { org, entry };
    if (p.namespace_id && p.namespace_id !== entry.id)
      return new GatewayError("forbidden", "this credential is scoped to another namespace");
    if (!org.org.active) return new GatewayError("forbidden", "organization is disabled");
    return undefined;
  }

  /** The namespace this guards and its org, as the current snapshot has them. */
  get namespaceEntry(): { org: OrgSnapshot; entry: NamespaceEntry } | undefined {
    this.refresh();
    return this.namespace;
  }
}

/** The policy engine's view of a caller and a server. */
export function policyRequest(principal: Principal, routed: RoutedServer): Omit<PolicyRequest, "tool"> {
  return {
    principal: {
      role: principal.role,
      user_id: principal.user_id,
      key_id: principal.key_id,
      a2a_key_id: principal.a2a_key_id,
      idp_id: principal.idp_id,
    },
    namespace: { id: routed.namespace.id, slug: routed.namespace.slug },
    server: { id: routed.server.id, name: routed.server.name },
  };
}

/** The JSON-RPC error of a rate-limit rejection, the same on every transport. */
export function rateLimited(verdict: RateLimitVerdict): GatewayError {
  return new GatewayError(
    "rate_limited",
    `rate limit exceeded (${verdict.rule?.name ?? "limit"}); retry in ${verdict.retryAfterS}s`,
    {
      data: { retry_after: verdict.retryAfterS, rule: verdict.rule },
      retryAfterS: verdict.retryAfterS,
      headers: verdict.headers,
    },
  );
}

/** The JSON-RPC error of a policy denial of one tool, prompt or resource. */
export function denied(decision: ToolDecision): GatewayError {
  return new GatewayError("forbidden", decision.reason, { data: { policy: decision.rule } });
}
