import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { Context, Env, Hono } from "hono";

/*
 * The API reference UI at /docs, served whole by the control plane: Swagger UI's assets come
 * from the `swagger-ui-dist` package (read once, on first use), never from a CDN, so the page
 * works in air-gapped and locked-down networks. Its Content-Security-Policy lets the page load
 * nothing from any other origin, and no inline script runs (the initializer is a file too).
 */

const require = createRequire(import.meta.url);
const DIST = dirname(require.resolve("swagger-ui-dist/package.json"));

/** The files the page uses, by the name it asks for, with their media types. */
const ASSETS: Record<string, { file: string; type: string } | undefined> = {
  "swagger-ui.css": { file: join(DIST, "swagger-ui.css"), type: "text/css; charset=utf-8" },
  "swagger-ui-bundle.js": {
    file: join(DIST, "swagger-ui-bundle.js"),
    type: "text/javascript; charset=utf-8",
  },
  "favicon-32x32.png": { file: join(DIST, "favicon-32x32.png"), type: "image/png" },
};

/** Starts Swagger UI on the document of this control plane; a file, so CSP needs no inline script. */
const INITIALIZER = `window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: "none",
    presets: [SwaggerUIBundle.presets.apis],
  });
});
`;

const PAGE = `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <title>MCP Gateway control plane API</title>
    <link rel="stylesheet" href="/docs/assets/swagger-ui.css" />
    <link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png" />
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="/docs/assets/swagger-ui-bundle.js"></script>
    <script src="/docs/assets/docs-init.js"></script>
  </body>
</html>
`;

/**
 * Nothing from another origin: scripts, styles, images, fonts and the document fetch all come
 * from this control plane. Swagger UI sets `style` attributes (hence 'unsafe-inline' for styles
 * only) and draws some icons from `data:` URIs.
 */
export const DOCS_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const loaded = new Map<string, Promise<Buffer>>();

function asset(name: string): Promise<Buffer> | undefined {
  // Own keys only: `constructor` or `__proto__` are no assets.
  const entry = Object.hasOwn(ASSETS, name) ? ASSETS[name] : undefined;
  if (!entry) return undefined;
  let body = loaded.get(name);
  if (!body) {
    body = readFile(entry.file);
    // A failed read is retried on the next request rather than remembered.
    body.catch(() => loaded.delete(name));
    loaded.set(name, body);
  }
  return body;
}

function secured<E extends Env>(
  c: Context<E>,
  body: string | Uint8Array,
  type: string,
  cache: string,
): Response {
  c.header("content-type", type);
  c.header("content-security-policy", DOCS_CSP);
  c.header("x-content-type-options", "nosniff");
  c.header("referrer-policy", "no-referrer");
  c.header("cache-control", cache);
  return c.body(body as never);
}

/** `GET /docs` and its assets under `/docs/assets/`. */
export function mountDocs<E extends Env>(app: Hono<E>): void {
  app.get("/docs", (c) => secured(c, PAGE, "text/html; charset=utf-8", "no-cache"));
  app.get("/docs/assets/docs-init.js", (c) =>
    secured(c, INITIALIZER, "text/javascript; charset=utf-8", "no-cache"),
  );
  app.get("/docs/assets/:name", async (c) => {
    const name = c.req.param("name");
    const body = asset(name);
    if (!body) return c.notFound();
    // The package version is in the lockfile: an hour of caching is safe across upgrades.
    return secured(c, await body, ASSETS[name]!.type, "public, max-age=3600");
  });
}
