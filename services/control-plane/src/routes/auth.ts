import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv, ControlPlaneDeps } from "../env.ts";
import { login } from "../verbs/auth.ts";
import { errorResponses, json, jsonBody } from "./schemas.ts";

const LoginInput = z
  .strictObject({ email: z.string().email().max(320), password: z.string().min(1).max(1024) })
  .openapi("LoginInput");
const TokenResponse = z
  .object({
    access_token: z.string(),
    token_type: z.literal("Bearer"),
    expires_in: z.number().int(),
    user: z.object({
      id: z.string(),
      email: z.string(),
      name: z.string(),
      role: z.string(),
      org_id: z.string(),
    }),
  })
  .openapi("TokenResponse");

/** `/auth/*` and the JWKS the data planes and others verify tokens with. */
export function authRoutes(deps: ControlPlaneDeps) {
  const app = new OpenAPIHono<AppEnv>();

  app.openapi(
    createRoute({
      method: "post",
      path: "/auth/login",
      tags: ["Auth"],
      security: [],
      request: { body: jsonBody(LoginInput) },
      responses: { 200: json(TokenResponse), 400: errorResponses[400], 401: errorResponses[401] },
    }),
    async (c) => {
      const { email, password } = c.req.valid("json");
      return c.json(await login({ db: deps.db, tokens: deps.tokens, email, password }), 200);
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/.well-known/jwks.json",
      tags: ["Auth"],
      security: [],
      responses: { 200: json(z.object({ keys: z.array(z.record(z.string(), z.unknown())) })) },
    }),
    async (c) => c.json({ keys: (await deps.tokens.publicKeys()) as Record<string, unknown>[] }, 200),
  );

  return app;
}
