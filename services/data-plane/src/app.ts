import type { IncomingMessage, RequestListener, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { getRequestListener } from "@hono/node-server";
import { Hono } from "hono";
import type { DataPlaneEnv } from "./env.ts";
import { createContext, type DataPlaneDeps } from "./pipeline/context.ts";
import { GatewayError, refuseUpgrade, sendGatewayError } from "./pipeline/errors.ts";
import { requestIdOf } from "./pipeline/observe.ts";
import { createResolver } from "./pipeline/resolve.ts";
import type { OriginGuard } from "./request-origin.ts";
import { mountHealthRoutes, mountMetadataRoutes } from "./routes/health.ts";
import { injectRequest } from "./routes/in-process.ts";
import { namespaceRoutes } from "./routes/namespaces.ts";
import { serverRoutes } from "./routes/servers.ts";
import { matchRoute } from "./routes/table.ts";

export type { DataPlaneDeps } from "./pipeline/context.ts";
export type { NamespaceInspection } from "./routes/namespaces.ts";

/**
 * Builds the data plane from its dependencies: the shared context (pipeline/context.ts), the
 * pipeline's resolving stages (pipeline/resolve.ts), and the route families (routes/*.ts).
 * The node listeners below match each request once against routes/table.ts.
 *
 * The pipeline, in order, and why:
 *   observe (pipeline/observe.ts) opens the frame first, so every request — refusals included —
 *     has a request id, a span and a count, and it closes last;
 *   Host/Origin guard (request-origin.ts) before any credential is read: a DNS-rebound browser
 *     request is refused without touching the caller's identity;
 *   authenticate → resolve the target → authorize the target (pipeline/resolve.ts), against the
 *     snapshot read once for the request: a target is looked up only in the caller's org, so
 *     another org's server is "not found", never "forbidden";
 *   per message: authorize the tool/prompt/resource → rate-limit → session quota
 *     (pipeline/guards.ts), cheapest and most specific first, each read from the *current*
 *     snapshot so open sessions obey a changed policy within a snapshot's arrival;
 *   relay (transports/*, bridge/*, aggregate/*), the only stage that talks to an upstream.
 * Errors at any stage are GatewayErrors (pipeline/errors.ts), written by the transport's mapper.
 */
export function createDataPlaneApp(deps: DataPlaneDeps) {
  const cx = createContext(deps);
  const app = new Hono<DataPlaneEnv>();
  // `app.request()` (no node request behind it) goes through the node listener, so in-process
  // callers reach every route with the same route table, guard and observe frame as sockets do.
  app.use("*", async (c, next) => {
    if (c.env?.incoming) return next();
    return injectRequest(dp.listener ?? createRequestListener(dp), c.req.raw);
  });
  mountHealthRoutes(app, cx);
  mountMetadataRoutes(app, cx);
  const resolver = createResolver(cx);
  const servers = serverRoutes(cx, resolver);
  const namespaces = namespaceRoutes(cx, resolver);

  const dp = Object.assign(
    { app, observer: cx.observer, listener: undefined as RequestListener | undefined },
    servers,
    namespaces,
  );

  app.notFound((c) =>
    c.json(new GatewayError("not_found", `no route for ${c.req.path}`).toJsonRpc(null), 404),
  );
  app.onError((err, c) => {
    deps.logger.error({ err }, "unhandled data-plane error");
    return c.json(new GatewayError("internal", "internal gateway error").toJsonRpc(null), 500);
  });

  return dp;
}

/**
 * The node request listener of a data plane: each request is matched once against the route
 * table (routes/table.ts) and served inside the observe frame (pipeline/observe.ts: request id,
 * span, metrics); MCP endpoints go straight to their handlers, everything else (health,
 * metrics, metadata, operator endpoints) through Hono.
 */
export function createRequestListener(dp: ReturnType<typeof createDataPlaneApp>, guard?: OriginGuard) {
  const hono = getRequestListener(dp.app.fetch);
  const listener = (req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? "";
    const route = matchRoute(url);
    dp.observer.http(req, res, route, () => {
      const refused = guard?.(url, req.headers);
      if (refused) {
        req.resume();
        sendGatewayError(res, new GatewayError("forbidden", refused));
        return;
      }
      const family = route.name.slice(0, route.name.indexOf("."));
      if (route.name === "server.mcp") void dp.handleServerMcp(req, res, route.target!);
      else if (family === "server" && route.endpoint !== "ws")
        void dp.handleServerTransport(req, res, route.target!, route.endpoint!, route.query!);
      else if (family === "namespace" && route.endpoint !== "ws")
        void dp.handleNamespace(req, res, route.target, route.endpoint!, route.query!);
      else if (route.endpoint === "ws") {
        req.resume();
        sendGatewayError(
          res,
          new GatewayError("upgrade_required", "this endpoint speaks WebSocket: send an Upgrade request", {
            headers: { upgrade: "websocket", connection: "Upgrade" },
          }),
        );
      } else void hono(req, res);
    });
  };
  dp.listener = listener;
  return listener;
}

/** The node `upgrade` listener: WebSocket sessions at `/servers/{id}/ws` and `/ns/{slug}/ws`. */
export function createUpgradeListener(dp: ReturnType<typeof createDataPlaneApp>, guard?: OriginGuard) {
  return (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const route = matchRoute(req.url ?? "");
    dp.observer.upgrade(req, route, (settled) => {
      const refused = guard?.(req.url ?? "", req.headers);
      if (refused) {
        settled(403);
        return refuseUpgrade(socket, requestIdOf(req), new GatewayError("forbidden", refused));
      }
      if (route.name === "namespace.ws")
        return void dp.handleNamespaceUpgrade(req, socket, head, route.target, settled);
      if (route.name === "server.ws") return void dp.handleUpgrade(req, socket, head, route.target!, settled);
      settled(404);
      refuseUpgrade(
        socket,
        requestIdOf(req),
        new GatewayError("not_found", `no WebSocket endpoint at ${route.name}`),
      );
    });
  };
}
