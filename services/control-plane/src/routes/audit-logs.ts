import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { verbContext } from "../auth/middleware.ts";
import type { AppEnv, ControlPlaneDeps } from "../env.ts";
import { listAuditLogs } from "../verbs/audit-logs.ts";
import { errorResponses, listResponse, PageQuery } from "./schemas.ts";

const AuditLog = z
  .object({
    id: z.string(),
    org_id: z.string().nullable(),
    actor_type: z.string(),
    actor_id: z.string().nullable(),
    action: z.string(),
    resource_type: z.string(),
    resource_id: z.string().nullable(),
    ip: z.string().nullable(),
    request_id: z.string().nullable(),
    user_agent: z.string().nullable(),
    diff: z.object({ before: z.unknown().optional(), after: z.unknown().optional() }),
    created_at: z.string(),
  })
  .openapi("AuditLog");

const Filters = PageQuery.extend({
  actor_id: z.string().max(200).optional(),
  action: z.string().max(100).optional(),
  resource_type: z.string().max(100).optional(),
  resource_id: z.string().max(200).optional(),
  since: z.iso.datetime({ offset: true }).optional(),
  until: z.iso.datetime({ offset: true }).optional(),
});

/** `GET /api/v1/audit-logs`: who changed what, newest first. */
export function auditLogRoutes(deps: ControlPlaneDeps) {
  const app = new OpenAPIHono<AppEnv>();
  app.openapi(
    createRoute({
      method: "get",
      path: "/",
      tags: ["Audit"],
      request: { query: Filters },
      responses: { 200: listResponse(AuditLog), ...errorResponses },
    }),
    async (c) => c.json(await listAuditLogs({ ctx: verbContext(c, deps), query: c.req.valid("query") }), 200),
  );
  return app;
}
