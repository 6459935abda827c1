import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { clientIp, requireAuth, verbContext } from "../auth/middleware.ts";
import type { AppEnv, ControlPlaneDeps } from "../env.ts";
import { validation } from "../errors.ts";
import { createApiKey } from "../verbs/api-keys.ts";
import { exchangeA2aKey, getProfile, login, logout, refresh, updateProfile } from "../verbs/auth.ts";
import { ApiKey, ApiKeyInput } from "./api-keys.ts";
import { DisplayName, errorResponses, json, jsonBody } from "./schemas.ts";

const Password = z.string().min(12, "at least 12 characters").max(1024);
const LoginInput = z
  .strictObject({ email: z.string().email().max(320), password: z.string().min(1).max(1024) })
  .openapi("LoginInput");
const TokenResponse = z
  .object({
    access_token: z.string(),
    token_type: z.literal("Bearer"),
    expires_in: z.number().int(),
    refresh_token: z.string(),
    user: z.object({
      id: z.string(),
      email: z.string(),
      name: z.string(),
      role: z.string(),
      org_id: z.string(),
    }),
  })
  .openapi("TokenResponse");
const Profile = z
  .object({
    id: z.string(),
    org_id: z.string(),
    email: z.string(),
    name: z.string(),
    role: z.string(),
    platform_admin: z.boolean(),
    last_login_at: z.string().nullable(),
    created_at: z.string(),
  })
  .openapi("Profile");
const A2aTokenResponse = z
  .object({
    access_token: z.string(),
    token_type: z.literal("Bearer"),
    expires_in: z.number().int(),
    scope: z.string(),
  })
  .openapi("A2aTokenResponse");

const tags = ["Auth"];
const rateLimited = { 429: errorResponses[429] };

/** `/auth/*` and the JWKS the data planes and others verify tokens with. */
export function authRoutes(deps: ControlPlaneDeps) {
  const app = new OpenAPIHono<AppEnv>();
  const authDeps = { db: deps.db, tokens: deps.tokens, throttle: deps.throttle, publisher: deps.publisher };
  const auth = requireAuth(deps);
  app.use("/auth/logout", auth);
  app.use("/auth/profile", auth);
  app.use("/auth/api-keys", auth);

  app.openapi(
    createRoute({
      method: "post",
      path: "/auth/login",
      tags,
      security: [],
      request: { body: jsonBody(LoginInput) },
      responses: {
        200: json(TokenResponse),
        400: errorResponses[400],
        401: errorResponses[401],
        ...rateLimited,
      },
    }),
    async (c) =>
      c.json(
        await login(authDeps, c.req.valid("json"), {
          ip: clientIp(c),
          request_id: c.get("requestId"),
          user_agent: c.req.header("user-agent"),
        }),
        200,
      ),
  );

  app.openapi(
    createRoute({
      method: "post",
      path: "/auth/refresh",
      tags,
      security: [],
      description:
        "Rotates a refresh token. Presenting an already-used refresh token revokes its whole family.",
      request: { body: jsonBody(z.strictObject({ refresh_token: z.string().min(1).max(512) })) },
      responses: { 200: json(TokenResponse), 400: errorResponses[400], 401: errorResponses[401] },
    }),
    async (c) => c.json(await refresh(authDeps, c.req.valid("json").refresh_token), 200),
  );

  app.openapi(
    createRoute({
      method: "post",
      path: "/auth/logout",
      tags,
      description:
        "Revokes the access token used for this call (data planes reject it within a second) and the refresh token's family.",
      request: {
        body: {
          required: false,
          content: {
            "application/json": { schema: z.strictObject({ refresh_token: z.string().max(512).optional() }) },
          },
        },
      },
      responses: { 204: { description: "Logged out" }, ...errorResponses },
    }),
    async (c) => {
      const ctx = verbContext(c, deps);
      const raw = await c.req.text();
      let refreshToken: string | undefined;
      if (raw) {
        try {
          refreshToken = (JSON.parse(raw) as { refresh_token?: string }).refresh_token;
        } catch {
          throw validation("malformed request body: expected valid JSON");
        }
      }
      await logout(authDeps, ctx.actor, ctx.meta, refreshToken);
      return c.body(null, 204);
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/auth/profile",
      tags,
      responses: { 200: json(Profile), ...errorResponses },
    }),
    async (c) => c.json(await getProfile(deps.db, c.get("actor")), 200),
  );

  app.openapi(
    createRoute({
      method: "put",
      path: "/auth/profile",
      tags,
      request: {
        body: jsonBody(
          z.strictObject({
            name: DisplayName.optional(),
            password: Password.optional(),
            current_password: z.string().max(1024).optional(),
          }),
        ),
      },
      responses: { 200: json(Profile), ...errorResponses },
    }),
    async (c) => {
      const ctx = verbContext(c, deps);
      return c.json(
        await updateProfile(deps.db, ctx.actor, ctx.meta, c.req.valid("json"), deps.publisher),
        200,
      );
    },
  );

  app.openapi(
    createRoute({
      method: "post",
      path: "/auth/api-keys",
      tags,
      description: "Creates an API key. The `key` is returned once and stored only as a hash.",
      request: { body: jsonBody(ApiKeyInput) },
      responses: { 201: json(ApiKey.extend({ key: z.string() }), "Created"), ...errorResponses },
    }),
    async (c) => {
      return c.json(await createApiKey({ ctx: verbContext(c, deps), input: c.req.valid("json") }), 201);
    },
  );

  app.openapi(
    createRoute({
      method: "post",
      path: "/auth/a2a/token",
      tags,
      security: [],
      description:
        "Client-credentials exchange for app-to-app keys: JSON `{client_secret}` or form `grant_type=client_credentials&client_secret=…` (the a2a key is the secret).",
      responses: {
        200: json(A2aTokenResponse),
        400: errorResponses[400],
        401: errorResponses[401],
        ...rateLimited,
      },
    }),
    async (c) => {
      await deps.throttle.check(clientIp(c));
      const type = c.req.header("content-type") ?? "";
      let secret: string | undefined;
      if (type.startsWith("application/x-www-form-urlencoded")) {
        const form = new URLSearchParams(await c.req.text());
        if (form.get("grant_type") !== "client_credentials")
          throw validation("grant_type must be client_credentials");
        secret = form.get("client_secret") ?? undefined;
      } else {
        try {
          secret = ((await c.req.json()) as { client_secret?: unknown }).client_secret as string | undefined;
        } catch {
          throw validation("malformed request body: expected JSON or a form");
        }
      }
      if (typeof secret !== "string" || secret.length === 0 || secret.length > 512)
        throw validation("client_secret is required");
      return c.json(await exchangeA2aKey(authDeps, secret), 200);
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/.well-known/jwks.json",
      tags,
      security: [],
      responses: { 200: json(z.object({ keys: z.array(z.record(z.string(), z.unknown())) })) },
    }),
    async (c) => c.json({ keys: (await deps.tokens.publicKeys()) as Record<string, unknown>[] }, 200),
  );

  return app;
}
