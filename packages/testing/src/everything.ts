import { createRequire } from "node:module";
import { freePort, type ManagedProcess, startProcess } from "./processes.ts";

const require = createRequire(import.meta.url);

/** The entry point of `@modelcontextprotocol/server-everything` (`node <it> stdio|sse|streamableHttp`). */
export const everythingEntry = require.resolve("@modelcontextprotocol/server-everything/dist/index.js");

/** The entry point of `@modelcontextprotocol/server-filesystem` (`node <it> <allowed dir>…`, stdio). */
export const filesystemEntry = require.resolve("@modelcontextprotocol/server-filesystem/dist/index.js");

/** `@modelcontextprotocol/server-everything` in its streamableHttp mode on a free port. */
export async function startEverythingServer(): Promise<{ url: string; proc: ManagedProcess }> {
  const port = await freePort();
  const proc = startProcess(process.execPath, [everythingEntry, "streamableHttp"], { PORT: String(port) });
  const deadline = Date.now() + 20_000;
  while (!proc.output().includes("listening on port")) {
    if (Date.now() > deadline || proc.child.exitCode !== null)
      throw new Error(`server-everything did not start:\n${proc.output()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `http://127.0.0.1:${port}/mcp`, proc };
}
