import { createRoute, z } from "@hono/zod-openapi";
import { verbContext } from "../auth/middleware.ts";
import type { ControlPlaneDeps } from "../env.ts";
import {
  createNamespace,
  deleteNamespace,
  getNamespace,
  getNamespaceConflicts,
  listNamespaces,
  updateNamespace,
} from "../verbs/namespaces.ts";
import { listServers } from "../verbs/servers.ts";
import { listNamespaceSessions } from "../verbs/sessions.ts";
import { crudRoutes } from "./crud.ts";
import { DisplayName, errorResponses, IdParam, json, PageQuery, Problem, Slug } from "./schemas.ts";

const Namespace = z
  .object({
    id: z.string(),
    org_id: z.string(),
    name: z.string(),
    slug: z.string(),
    description: z.string().nullable(),
    tool_naming: z.enum(["prefix", "none"]),
    tool_separator: z.string(),
    metadata: z.record(z.string(), z.unknown()),
    created_at: z.string(),
    updated_at: z.string(),
  })
  .openapi("Namespace");

const NamespaceInput = z
  .strictObject({
    name: DisplayName,
    slug: Slug,
    description: z.string().max(2000).nullable().optional(),
    tool_naming: z.enum(["prefix", "none"]).optional(),
    tool_separator: z
      .string()
      .min(1)
      .max(8)
      .regex(/^[A-Za-z0-9_.\-:/]+$/)
      .optional(),
    metadata: z.record(z.string(), z.unknown()).optional(),
  })
  .openapi("NamespaceInput");

const tags = ["Namespaces"];

/** `/api/v1/namespaces`: org-scoped namespace CRUD. */
export function namespaceRoutes(deps: ControlPlaneDeps) {
  const app = crudRoutes(deps, {
    tags,
    item: Namespace,
    input: NamespaceInput,
    patch: NamespaceInput.partial(),
    verbs: {
      list: (ctx, page) => listNamespaces({ ctx, page }),
      create: (ctx, input) => createNamespace({ ctx, input }),
      get: (ctx, id) => getNamespace({ ctx, id }),
      update: (ctx, id, input) => updateNamespace({ ctx, id, input }),
      remove: (ctx, id) => deleteNamespace({ ctx, id }),
    },
  });

  app.openapi(
    createRoute({
      method: "get",
      path: "/{id}/servers",
      tags,
      request: { params: IdParam, query: PageQuery },
      responses: {
        200: json(
          z.object({ items: z.array(z.record(z.string(), z.unknown())), next_cursor: z.string().nullable() }),
        ),
        ...errorResponses,
      },
    }),
    async (c) => {
      const ctx = verbContext(c, deps);
      const { id } = c.req.valid("param");
      await getNamespace({ ctx, id });
      return c.json(await listServers({ ctx, page: c.req.valid("query"), namespaceId: id }), 200);
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/{id}/sessions",
      tags,
      description:
        "MCP sessions of the namespace's servers and aggregate endpoints, as reported by the data planes.",
      request: {
        params: IdParam,
        query: PageQuery.extend({ status: z.enum(["active", "ended"]).optional() }),
      },
      responses: {
        200: json(z.object({ items: z.array(Session), next_cursor: z.string().nullable() })),
        ...errorResponses,
      },
    }),
    async (c) =>
      c.json(
        await listNamespaceSessions({
          ctx: verbContext(c, deps),
          namespaceId: c.req.valid("param").id,
          query: c.req.valid("query"),
        }),
        200,
      ),
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/{id}/conflicts",
      tags,
      description:
        "Names (tools, prompts) that more than one server of the namespace offers: with `tool_naming` " +
        "`none` the first server keeps the name and the others' are hidden. Asked of a data plane " +
        "(the first to answer), over every enabled server of the namespace whatever the policies; " +
        "servers it could not reach are listed in `unavailable`.",
      request: { params: IdParam },
      responses: {
        200: json(NamespaceConflicts),
        ...errorResponses,
        503: {
          description: "No data plane answered within 3 s, or none has this namespace yet",
          content: { "application/problem+json": { schema: Problem } },
        },
      },
    }),
    async (c) =>
      c.json(
        await getNamespaceConflicts({
          ctx: verbContext(c, deps),
          id: c.req.valid("param").id,
          dataPlanes: deps.dataPlanes,
        }),
        200,
      ),
  );

  return app;
}

const NamespaceConflicts = z
  .object({
    namespace_id: z.string(),
    slug: z.string(),
    tool_naming: z.enum(["prefix", "none"]),
    tool_separator: z.string(),
    conflicts: z.array(
      z.object({
        kind: z.string().openapi({ description: "`tools` or `prompts`" }),
        name: z.string(),
        servers: z.array(z.string()).openapi({ description: "Names of the servers offering it, in order" }),
      }),
    ),
    unavailable: z.array(z.object({ server: z.string(), reason: z.string() })),
    replica: z.string().openapi({ description: "The data plane that answered" }),
    snapshot_version: z
      .number()
      .int()
      .openapi({ description: "The org's configuration version the data plane answered from" }),
  })
  .openapi("NamespaceConflicts");

const Session = z
  .object({
    id: z.string(),
    session_id: z.string(),
    namespace_id: z.string().nullable(),
    server_id: z.string().nullable(),
    status: z.string(),
    transport: z.string(),
    protocol_version: z.string().nullable(),
    client_info: z.record(z.string(), z.unknown()).nullable(),
    principal: z.string().nullable(),
    replica: z.string().nullable(),
    process_pid: z.number().int().nullable(),
    process_status: z.string().nullable(),
    started_at: z.string(),
    last_seen_at: z.string().nullable(),
    ended_at: z.string().nullable(),
  })
  .openapi("Session");
