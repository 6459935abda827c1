import type { Context, MiddlewareHandler } from "hono";
import type { Actor, Role, VerbContext } from "../context.ts";
import type { AppEnv, ControlPlaneDeps } from "../env.ts";
import { unauthorized } from "../errors.ts";
import { isRevoked, principalStillActive } from "../verbs/auth.ts";

/** Requires a valid, unrevoked control-plane access token and sets `actor`. */
export function requireAuth(deps: Pick<ControlPlaneDeps, "tokens" | "db">): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const header = c.req.header("authorization");
    const match = header?.match(/^Bearer\s+(\S+)$/i);
    if (!match) throw unauthorized("missing bearer token");
    let claims: Awaited<ReturnType<typeof deps.tokens.verify>>;
    try {
      claims = await deps.tokens.verify(match[1]!);
    } catch {
      throw unauthorized("invalid or expired token");
    }
    if (await isRevoked(deps.db, claims)) throw unauthorized("token was revoked");
    // A token may outlive its user, key or org: it must not act for them.
    if (!(await principalStillActive(deps.db, claims.sub, claims.key_id)))
      throw unauthorized("the token's user or key no longer exists");
    c.set("actor", {
      user_id: claims.sub,
      org_id: claims.org_id,
      role: claims.role as Role,
      platform_admin: claims.platform_admin === true,
      token: { jti: claims.jti, exp: claims.exp },
    } satisfies Actor);
    await next();
  };
}

/** The client address as the socket saw it (trusted-proxy handling comes with rate limits). */
export function clientIp(c: Context): string | undefined {
  const incoming = (c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming;
  return incoming?.socket?.remoteAddress;
}

/** Builds the verb context of an authenticated request. */
export function verbContext(c: Context<AppEnv>, deps: ControlPlaneDeps): VerbContext {
  return {
    db: deps.db,
    actor: c.get("actor"),
    meta: { ip: clientIp(c), request_id: c.get("requestId"), user_agent: c.req.header("user-agent") },
    publisher: deps.publisher,
    logger: c.get("logger"),
    allowPrivateUpstreams: deps.allowPrivateUpstreams,
    keyring: deps.keyring,
  };
}
