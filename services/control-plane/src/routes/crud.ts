import { createRoute, OpenAPIHono, type z } from "@hono/zod-openapi";
import { verbContext } from "../auth/middleware.ts";
import type { VerbContext } from "../context.ts";
import type { AppEnv, ControlPlaneDeps } from "../env.ts";
import { errorResponses, IdParam, json, jsonBody, listResponse, PageQuery } from "./schemas.ts";

/** The verbs behind a resource's standard routes; any left out has no route. */
export interface CrudVerbs<Input, Patch, Query> {
  list?: (ctx: VerbContext, query: Query) => Promise<unknown>;
  create?: (ctx: VerbContext, input: Input) => Promise<unknown>;
  get?: (ctx: VerbContext, id: string) => Promise<unknown>;
  update?: (ctx: VerbContext, id: string, patch: Patch) => Promise<unknown>;
  remove?: (ctx: VerbContext, id: string) => Promise<void>;
}

export interface CrudOptions<I extends z.ZodType, P extends z.ZodType, Q extends z.ZodType> {
  tags: string[];
  /** The resource as returned. */
  item: z.ZodType;
  input?: I;
  patch?: P;
  /** List filters on top of `cursor`/`limit`. */
  listQuery?: Q;
  descriptions?: Partial<Record<"list" | "create" | "get" | "update" | "remove", string>>;
  verbs: CrudVerbs<z.infer<I>, z.infer<P>, z.infer<Q>>;
}

/**
 * The standard routes of an org-scoped resource: `GET /`, `POST /`, `GET /{id}`, `PATCH /{id}`,
 * `DELETE /{id}`, each translating HTTP to one verb call, documented in the OpenAPI spec with the
 * shared error responses. Resource-specific routes are added to the returned app.
 */
export function crudRoutes<I extends z.ZodType, P extends z.ZodType, Q extends z.ZodType = typeof PageQuery>(
  deps: ControlPlaneDeps,
  o: CrudOptions<I, P, Q>,
): OpenAPIHono<AppEnv> {
  const app = new OpenAPIHono<AppEnv>();
  const { tags, item, verbs, descriptions: d = {} } = o;
  const ctx = (c: Parameters<typeof verbContext>[0]) => verbContext(c, deps);

  if (verbs.list) {
    const list = verbs.list;
    app.openapi(
      createRoute({
        method: "get",
        path: "/",
        tags,
        description: d.list,
        request: { query: (o.listQuery ?? PageQuery) as typeof PageQuery },
        responses: { 200: listResponse(item), ...errorResponses },
      }),
      async (c) => c.json((await list(ctx(c), c.req.valid("query") as z.infer<Q>)) as never, 200),
    );
  }
  if (verbs.create && o.input) {
    const create = verbs.create;
    app.openapi(
      createRoute({
        method: "post",
        path: "/",
        tags,
        description: d.create,
        request: { body: jsonBody(o.input as unknown as z.ZodObject) },
        responses: { 201: json(item, "Created"), ...errorResponses },
      }),
      async (c) => c.json((await create(ctx(c), c.req.valid("json") as z.infer<I>)) as never, 201),
    );
  }
  if (verbs.get) {
    const get = verbs.get;
    app.openapi(
      createRoute({
        method: "get",
        path: "/{id}",
        tags,
        description: d.get,
        request: { params: IdParam },
        responses: { 200: json(item), ...errorResponses },
      }),
      async (c) => c.json((await get(ctx(c), c.req.valid("param").id)) as never, 200),
    );
  }
  if (verbs.update && o.patch) {
    const update = verbs.update;
    app.openapi(
      createRoute({
        method: "patch",
        path: "/{id}",
        tags,
        description: d.update,
        request: { params: IdParam, body: jsonBody(o.patch as unknown as z.ZodObject) },
        responses: { 200: json(item), ...errorResponses },
      }),
      async (c) =>
        c.json(
          (await update(ctx(c), c.req.valid("param").id, c.req.valid("json") as z.infer<P>)) as never,
          200,
        ),
    );
  }
  if (verbs.remove) {
    const remove = verbs.remove;
    app.openapi(
      createRoute({
        method: "delete",
        path: "/{id}",
        tags,
        description: d.remove,
        request: { params: IdParam },
        responses: { 204: { description: "Deleted" }, ...errorResponses },
      }),
      async (c) => {
        await remove(ctx(c), c.req.valid("param").id);
        return c.body(null, 204);
      },
    );
  }
  return app;
}
