import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import type { Api } from "./stack.ts";

export interface StdioServerSpec {
  namespace_id: string;
  name: string;
  command: string;
  args?: string[];
  /** Fixed environment of the catalog entry. */
  env?: Record<string, string>;
  /** Any other server fields (timeouts, enabled, …). */
  extra?: Record<string, unknown>;
}

/**
 * Registers a stdio server the way production does: a platform administrator (`platform`)
 * puts the command into the stdio catalog, then `org` (the same or an org admin) creates the
 * server from that entry. Returns the server's id and the entry's.
 */
export async function registerStdioServer(
  platform: Api,
  spec: StdioServerSpec,
  org: Api = platform,
): Promise<{ id: string; entryId: string }> {
  const entry = await platform.call<{ id: string }>("POST", "/api/v1/stdio-catalog", {
    slug: `t-${randomUUID().slice(0, 12)}`,
    name: spec.name,
    command: spec.command,
    args: spec.args ?? [],
    env: spec.env ?? {},
  });
  if (entry.status !== 201) throw new Error(`catalog entry: ${entry.status} ${JSON.stringify(entry.body)}`);
  const server = await org.call<{ id: string }>("POST", "/api/v1/servers", {
    namespace_id: spec.namespace_id,
    name: spec.name,
    transport: "stdio",
    catalog_entry_id: entry.body.id,
    ...spec.extra,
  });
  if (server.status !== 201) throw new Error(`stdio server: ${server.status} ${JSON.stringify(server.body)}`);
  return { id: server.body.id, entryId: entry.body.id };
}

/** The path of a stdio MCP server whose `probe` tool reports what its process can read. */
export const probeStdioServer = fileURLToPath(new URL("./probe-stdio-server.cjs", import.meta.url));
