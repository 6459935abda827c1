import { OpenAPIHono } from "@hono/zod-openapi";
import { Counter, Histogram, scrapeAllowed } from "@mcpgw/telemetry";
import { bodyLimit } from "hono/body-limit";
import { requestId } from "hono/request-id";
import { requireAuth } from "./auth/middleware.ts";
import type { AppEnv, ControlPlaneDeps } from "./env.ts";
import { problem, toProblem } from "./errors.ts";
import { apiKeyRoutes } from "./routes/api-keys.ts";
import { auditLogRoutes } from "./routes/audit-logs.ts";
import { authRoutes } from "./routes/auth.ts";
import { mountDocs } from "./routes/docs.ts";
import { identityProviderRoutes } from "./routes/identity-providers.ts";
import { namespaceRoutes } from "./routes/namespaces.ts";
import { organizationRoutes } from "./routes/organizations.ts";
import { policyRoutes } from "./routes/policies.ts";
import { rateLimitRoutes } from "./routes/rate-limits.ts";
import { serverRoutes } from "./routes/servers.ts";
import { stdioCatalogRoutes } from "./routes/stdio-catalog.ts";
import { userRoutes } from "./routes/users.ts";

/** Builds the control-plane HTTP app from its dependencies. */
export function createControlPlaneApp(deps: ControlPlaneDeps) {
  const app = new OpenAPIHono<AppEnv>({
    // Validation failures become problem+json listing each field that failed.
    defaultHook: (result, c) => {
      if (!result.success) {
        const errors = result.error.issues.map((i) => ({ path: i.path.join("."), message: i.message }));
        return problem(c, 400, "request validation failed", { errors });
      }
    },
  });

  const requests = new Counter({
    name: "mcpgw_cp_http_requests_total",
    help: "Control-plane HTTP requests",
    labelNames: ["method", "route", "status"] as const,
    registers: [deps.metrics],
  });
  const duration = new Histogram({
    name: "mcpgw_cp_http_request_duration_seconds",
    help: "Control-plane HTTP request duration",
    labelNames: ["method", "route"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [deps.metrics],
  });

  app.use("*", requestId());
  app.use("*", async (c, next) => {
    const started = performance.now();
    c.set("logger", deps.logger.child({ request_id: c.get("requestId") }));
    await next();
    const route = c.req.routePath;
    requests.inc({ method: c.req.method, route, status: String(c.res.status) });
    duration.observe({ method: c.req.method, route }, (performance.now() - started) / 1000);
  });
  app.use(
    "*",
    bodyLimit({
      maxSize: deps.maxBodyBytes ?? 1024 * 1024,
      onError: (c) => problem(c, 413, `request body exceeds ${deps.maxBodyBytes ?? 1024 * 1024} bytes`),
    }),
  );

  app.get("/health", (c) => c.json({ status: "ok" }));
  app.get("/ready", async (c) => {
    const ready = await deps.ready().catch(() => false);
    return c.json({ status: ready ? "ready" : "not_ready" }, ready ? 200 : 503);
  });
  app.get("/metrics", async (c) => {
    if (!scrapeAllowed(c.req.header("authorization"), deps.metricsToken))
      return problem(c, 401, "metrics need Authorization: Bearer <MCPGW_METRICS_TOKEN>");
    return c.text(await deps.metrics.metrics(), 200, { "content-type": deps.metrics.contentType });
  });

  app.route("/", authRoutes(deps));
  app.use("/api/v1/*", requireAuth(deps));
  app.route("/api/v1/namespaces", namespaceRoutes(deps));
  app.route("/api/v1/servers", serverRoutes(deps));
  app.route("/api/v1/stdio-catalog", stdioCatalogRoutes(deps));
  app.route("/api/v1/users", userRoutes(deps));
  app.route("/api/v1/organizations", organizationRoutes(deps));
  app.route("/api/v1/api-keys", apiKeyRoutes(deps));
  app.route("/api/v1/policies", policyRoutes(deps));
  app.route("/api/v1/identity-providers", identityProviderRoutes(deps));
  app.route("/api/v1/audit-logs", auditLogRoutes(deps));
  app.route("/api/v1/rate-limits", rateLimitRoutes(deps));

  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", {
    type: "http",
    scheme: "bearer",
    bearerFormat: "JWT",
  });
  app.doc31("/openapi.json", {
    openapi: "3.1.0",
    info: { title: "MCP Gateway control plane", version: "0.1.0" },
    security: [{ bearer: [] }],
  });
  mountDocs(app);

  app.notFound((c) => problem(c, 404, `no route for ${c.req.method} ${c.req.path}`));
  app.onError((err, c) => toProblem(err, c));
  return app;
}

export type ControlPlaneApp = ReturnType<typeof createControlPlaneApp>;
