import { execFile } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  eventually,
  everythingEntry,
  registerStdioServer,
  type Stack,
  startEverythingServer,
  startStack,
} from "../../../packages/testing/src/index.ts";

const run = promisify(execFile);
/** The MCP Inspector's command-line client (the Inspector's `--cli` mode), a test dependency. */
const inspectorCli = join(
  dirname(
    createRequire(new URL("../../../packages/testing/package.json", import.meta.url)).resolve(
      "@modelcontextprotocol/inspector-cli/package.json",
    ),
  ),
  "build",
  "index.js",
);

/** What the CLI prints: the method's result (each test reads the fields of its method). */
interface InspectorAnswer {
  tools: Array<{ name: string }>;
  prompts: unknown[];
  resources: Array<{ uri: string }>;
  resourceTemplates: Array<{ uriTemplate: string }>;
  content: unknown;
  contents: unknown;
}

/**
 * The Inspector against a namespace of two servers (server-everything over HTTP and over stdio).
 * On connect it sets the log level when the endpoint advertises `logging`; every call below
 * would fail if the namespace advertised what it does not serve.
 */
describe("MCP Inspector CLI against a namespace", () => {
  let stack: Stack;
  let api: Api;
  let everything: Awaited<ReturnType<typeof startEverythingServer>>;
  let url: string;

  beforeAll(async () => {
    [stack, everything] = await Promise.all([
      startStack({ replicas: 1, env: { MCPGW_STDIO_ALLOWED_COMMANDS: process.execPath } }),
      startEverythingServer(),
    ]);
    api = await stack.api();
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", { name: "Insp", slug: "insp" });
    expect(ns.status).toBe(201);
    const http = await api.call("POST", "/api/v1/servers", {
      namespace_id: ns.body.id,
      name: "web",
      transport: "streamable_http",
      url: everything.url,
    });
    expect(http.status).toBe(201);
    await registerStdioServer(api, {
      namespace_id: ns.body.id,
      name: "local",
      command: process.execPath,
      args: [everythingEntry, "stdio"],
    });
    url = `${stack.dataPlanes[0]!.url}/ns/insp/mcp`;
    // Both members are in the replica's snapshot.
    await eventually(
      async () => (await inspector("--method", "tools/list")).tools.some((t) => t.name.startsWith("local__")),
      30_000,
      "the namespace to list the stdio member's tools",
    );
  }, 120_000);

  afterAll(async () => {
    await stack?.stop();
    everything?.proc.stop();
  });

  /** Runs the Inspector CLI with the caller's token; its stdout is the method's JSON result. */
  async function inspector(...args: string[]): Promise<InspectorAnswer> {
    try {
      const { stdout } = await run(
        process.execPath,
        [inspectorCli, url, "--transport", "http", "--header", `Authorization: Bearer ${api.token}`, ...args],
        // It finds its own package.json relative to the working directory.
        { timeout: 60_000, cwd: dirname(inspectorCli) },
      );
      return JSON.parse(stdout) as InspectorAnswer;
    } catch (err) {
      // The CLI's own words, without the command line (it holds the token).
      const e = err as { stderr?: string; stdout?: string; code?: unknown };
      throw new Error(
        `inspector ${args.join(" ")} failed (${String(e.code)}): ${e.stderr ?? ""}${e.stdout ?? ""}`,
      );
    }
  }

  it("connects (setting the log level), lists and calls through the namespace", async () => {
    const { tools } = await inspector("--method", "tools/list");
    expect(tools.map((t) => t.name)).toEqual(expect.arrayContaining(["web__echo", "local__echo"]));
    const called = await inspector(
      "--method",
      "tools/call",
      "--tool-name",
      "local__echo",
      "--tool-arg",
      "message=through the namespace",
    );
    expect(JSON.stringify(called.content)).toContain("through the namespace");
    const setLevel = await inspector("--method", "logging/setLevel", "--log-level", "info");
    expect(setLevel).toEqual({});
    const { prompts } = await inspector("--method", "prompts/list");
    expect(prompts.length).toBeGreaterThan(0);
  }, 120_000);

  it("reads resources and resources made from templates under the member's prefix", async () => {
    const { resources } = await inspector("--method", "resources/list");
    const listed = resources.find((r) => r.uri.startsWith("local__"))!;
    expect(listed, "a stdio member's resource, prefixed").toBeDefined();
    const read = await inspector("--method", "resources/read", "--uri", listed.uri);
    expect(JSON.stringify(read.contents)).toContain(listed.uri);
    const { resourceTemplates } = await inspector("--method", "resources/templates/list");
    const template = resourceTemplates.find((t) => t.uriTemplate.startsWith("web__"))!;
    expect(template, "an HTTP member's template, prefixed").toBeDefined();
    // A URI expanded from the template reaches its member.
    const expanded = template.uriTemplate.replace(/\{[^}]+\}/g, "1");
    const fromTemplate = await inspector("--method", "resources/read", "--uri", expanded);
    expect(JSON.stringify(fromTemplate.contents)).toContain(expanded);
  }, 120_000);
});
