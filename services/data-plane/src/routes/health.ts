import { scrapeAllowed } from "@mcpgw/telemetry";
import type { Hono } from "hono";
import type { DataPlaneEnv } from "../env.ts";
import { type DataPlaneContext, looksLikeUrl, metadataPath } from "../pipeline/context.ts";

/** `/health` (the process answers), `/ready` (it holds configuration), `/metrics` (Prometheus). */
export function mountHealthRoutes(app: Hono<DataPlaneEnv>, { deps }: DataPlaneContext): void {
  app.get("/health", (c) => c.json({ status: "ok", replica: deps.replicaId }));
  app.get("/ready", (c) => {
    const ready = deps.store.ready;
    const state = deps.store.current;
    return c.json(
      {
        status: ready ? "ready" : "not_ready",
        replica: deps.replicaId,
        orgs: state.orgs.size,
        global_version: state.global?.version ?? null,
      },
      ready ? 200 : 503,
    );
  });
  app.get("/metrics", async (c) => {
    if (!scrapeAllowed(c.req.header("authorization"), deps.metricsToken))
      return c.json({ error: "metrics need Authorization: Bearer <MCPGW_METRICS_TOKEN>" }, 401);
    return c.text(await deps.metrics.metrics(), 200, { "content-type": deps.metrics.contentType });
  });
}

/** RFC 9728 protected-resource metadata, for the gateway and per MCP endpoint. */
export function mountMetadataRoutes(app: Hono<DataPlaneEnv>, { deps }: DataPlaneContext): void {
  app.get(metadataPath(), (c) => {
    const issuer = deps.store.current.global?.jwt.issuer;
    return c.json({
      resource: deps.publicUrl,
      authorization_servers: issuer && looksLikeUrl(issuer) ? [issuer] : [],
      bearer_methods_supported: ["header"],
      resource_name: "MCP Gateway",
    });
  });
  app.get("/.well-known/oauth-protected-resource/servers/:id/mcp", (c) => {
    const routed = deps.store.current.servers.get(c.req.param("id"));
    const issuer = deps.store.current.global?.jwt.issuer;
    const issuers = [
      ...(issuer && looksLikeUrl(issuer) ? [issuer] : []),
      ...(routed?.org.identity_providers.map((p) => p.issuer) ?? []),
    ];
    return c.json({
      resource: `${deps.publicUrl}/servers/${c.req.param("id")}/mcp`,
      authorization_servers: [...new Set(issuers)],
      bearer_methods_supported: ["header"],
    });
  });
}
