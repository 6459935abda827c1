import { execFile } from "node:child_process";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Api,
  repoRoot,
  type Stack,
  startEverythingServer,
  startStack,
  waitForServer,
} from "../../../packages/testing/src/index.ts";

const run = promisify(execFile);

/** The fenced ```js blocks of the README, in order. */
async function readmeSnippets(): Promise<string[]> {
  const readme = await readFile(join(repoRoot, "README.md"), "utf8");
  return [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

/**
 * The README's walkthrough as a new user runs it: its SDK snippets saved as `.mjs` files and run
 * with `node`, reading the exported `SERVER` and `KEY` variables, against a gateway with the
 * walkthrough's server behind it. A snippet that stops working fails here, not for a user.
 */
describe("README walkthrough snippets", () => {
  let stack: Stack;
  let api: Api;
  let everything: Awaited<ReturnType<typeof startEverythingServer>>;
  let env: Record<string, string>;
  const written: string[] = [];

  beforeAll(async () => {
    [stack, everything] = await Promise.all([startStack({ replicas: 1 }), startEverythingServer()]);
    api = await stack.api();
    const ns = await api.call<{ id: string }>("POST", "/api/v1/namespaces", {
      name: "My team",
      slug: "my-team",
    });
    const server = await api.call<{ id: string }>("POST", "/api/v1/servers", {
      namespace_id: ns.body.id,
      name: "everything",
      transport: "streamable_http",
      url: everything.url,
    });
    const key = await api.call<{ key: string }>("POST", "/auth/api-keys", { name: "walkthrough" });
    expect([ns.status, server.status, key.status]).toEqual([201, 201, 201]);
    env = { PATH: process.env.PATH ?? "", SERVER: server.body.id, KEY: key.body.key };
    await waitForServer(stack.dataPlanes[0]!.url, server.body.id, key.body.key);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(written.map((f) => rm(f, { force: true })));
    await Promise.all([stack?.stop(), everything?.proc.stop()]);
  });

  /**
   * Runs a snippet as `walkthrough.mjs` where `@modelcontextprotocol/sdk` resolves (the test
   * package's dependencies), with the gateway's address in place of the README's 127.0.0.1:8080.
   */
  async function runSnippet(name: string, code: string): Promise<string> {
    const gateway = new URL(stack.dataPlanes[0]!.url);
    const file = join(repoRoot, "packages", "testing", `${name}.mjs`);
    written.push(file);
    await writeFile(file, code.replaceAll("127.0.0.1:8080", gateway.host));
    const { stdout } = await run(process.execPath, [file], { env, timeout: 60_000 });
    return stdout;
  }

  it("the Streamable HTTP snippet lists the tools and calls echo", async () => {
    const [streamable] = await readmeSnippets();
    expect(streamable).toContain("StreamableHTTPClientTransport");
    const out = await runSnippet("walkthrough-readme", streamable!);
    expect(out).toContain("echo");
    expect(out).toContain("hello through the gateway");
  }, 90_000);

  it("the WebSocket snippet authenticates with its first message and calls echo", async () => {
    const ws = (await readmeSnippets()).find((s) => s.includes("WebSocketClientTransport"));
    expect(ws, "the README's WebSocket snippet").toBeDefined();
    // The README shows the transport; the client around it is the one of the snippet above.
    const program = `${ws!.replace(/^await client\.connect\([\s\S]*?\);\n/m, "")}
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { WebSocket } from "ws";
globalThis.WebSocket ??= WebSocket;
const client = new Client({ name: "walkthrough-ws", version: "1.0.0" });
${/^await client\.connect\([\s\S]*?\);$/m.exec(ws!)![0]}
console.log(await client.callTool({ name: "echo", arguments: { message: "hello over a WebSocket" } }));
await client.close();
`;
    const out = await runSnippet("walkthrough-readme-ws", program);
    expect(out).toContain("hello over a WebSocket");
  }, 90_000);
});
