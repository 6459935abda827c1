import { existsSync } from "node:fs";
import { type Browser, chromium } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Stack, startStack } from "../../../packages/testing/src/index.ts";

/** Debian's Chromium, which CI installs (.ci/run); elsewhere the test says why it did not run. */
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const available = existsSync(CHROMIUM) || process.env.CI === "true";

/**
 * `/docs` in a real browser on a machine without internet: every request that leaves the
 * control plane's origin is refused, as in an air-gapped network, and the API reference must
 * still render, with no Content-Security-Policy violation and nothing asked of another origin.
 */
describe.skipIf(!available)("API reference at /docs in Chromium", () => {
  let stack: Stack;
  let browser: Browser;

  beforeAll(async () => {
    [stack, browser] = await Promise.all([
      startStack({ replicas: 0 }),
      chromium.launch({
        executablePath: CHROMIUM,
        args: [
          "--no-sandbox",
          "--disable-gpu",
          "--disable-quic",
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
        ],
      }),
    ]);
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await stack?.stop();
  });

  it("renders from the control plane's own assets, with a CSP that allows no other origin", async () => {
    const origin = new URL(stack.cpUrl).origin;
    const context = await browser.newContext();
    const elsewhere: string[] = [];
    await context.route("**/*", (route) => {
      const url = route.request().url();
      if (new URL(url).origin === origin || url.startsWith("data:")) return route.continue();
      elsewhere.push(url);
      return route.abort("internetdisconnected");
    });
    const page = await context.newPage();
    const problems: string[] = [];
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(m.text());
    });
    page.on("pageerror", (err) => problems.push(err.message));

    const response = await page.goto(`${origin}/docs`, { waitUntil: "load" });
    expect(response?.status()).toBe(200);
    const csp = response?.headers()["content-security-policy"] ?? "";
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp, "the policy names no other origin").not.toMatch(/https?:|\*/);

    const title = page.locator(".swagger-ui .info .title");
    await title.waitFor({ timeout: 30_000 });
    expect(await title.textContent()).toContain("MCP Gateway control plane");
    // The operations of the document are listed (the document itself loaded and parsed).
    await page.locator(".opblock").first().waitFor({ timeout: 30_000 });
    expect(await page.locator(".opblock").count()).toBeGreaterThan(20);

    expect(elsewhere, "requests to other origins").toEqual([]);
    expect(problems, "console errors (CSP violations included)").toEqual([]);
    await context.close();
  }, 90_000);

  it("serves only the reference UI's own files under /docs/assets", async () => {
    const bundle = await fetch(`${stack.cpUrl}/docs/assets/swagger-ui-bundle.js`);
    expect(bundle.status).toBe(200);
    expect(bundle.headers.get("content-type")).toMatch(/javascript/);
    await bundle.arrayBuffer();
    for (const path of [
      "/docs/assets/package.json",
      "/docs/assets/..%2Fpackage.json",
      "/docs/assets/index.html",
      "/docs/assets/constructor",
      "/docs/assets/__proto__",
    ]) {
      const res = await fetch(`${stack.cpUrl}${path}`);
      expect(res.status, path).toBe(404);
      await res.arrayBuffer();
    }
  });
});
