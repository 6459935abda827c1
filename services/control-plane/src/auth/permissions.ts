import type { Actor, Role } from "../context.ts";
import { forbidden } from "../errors.ts";

/**
 * The one permission table. `admin` manages everything in its org, including stdio servers
 * (made from the platform's catalog; they run on data-plane hosts); `operator` manages
 * namespaces and HTTP servers;
 * `user`, `viewer` and `api_user` read configuration (and use servers through the data plane).
 */
export const PERMISSIONS = {
  "namespaces:read": ["admin", "operator", "user", "viewer", "api_user"],
  "namespaces:write": ["admin", "operator"],
  "servers:read": ["admin", "operator", "user", "viewer", "api_user"],
  "servers:write": ["admin", "operator"],
  "servers:stdio": ["admin"],
  "users:read": ["admin", "operator"],
  "users:write": ["admin"],
  "api_keys:create": ["admin", "operator", "user", "viewer", "api_user"],
  "api_keys:create_a2a": ["admin"],
  "api_keys:manage_all": ["admin"],
  "policies:read": ["admin", "operator"],
  "policies:write": ["admin"],
  "identity_providers:read": ["admin", "operator"],
  "identity_providers:write": ["admin"],
  "audit:read": ["admin", "operator"],
  "rate_limits:read": ["admin", "operator"],
  "rate_limits:write": ["admin", "operator"],
} as const satisfies Record<string, readonly Role[]>;

export type Permission = keyof typeof PERMISSIONS;

/** True when the actor's role grants `permission`. */
export function can(actor: Actor, permission: Permission): boolean {
  return (PERMISSIONS[permission] as readonly Role[]).includes(actor.role);
}

/** Platform administrators manage organizations; no org role grants that. */
export function authorizePlatformAdmin(
  actor: Actor,
  why = "only platform administrators manage organizations",
): void {
  if (!actor.platform_admin) throw forbidden(why);
}

/** Throws Forbidden unless the actor's role grants `permission`. */
export function authorize(actor: Actor, permission: Permission): void {
  if (!can(actor, permission)) throw forbidden(`role '${actor.role}' lacks permission '${permission}'`);
}
