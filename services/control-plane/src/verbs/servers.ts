import { randomUUID } from "node:crypto";
import { schema, type UpstreamEndpoint } from "@mcpgw/db";
import {
  checkStdioValues,
  credentialsSealContext,
  StdioLaunchError,
  type StdioValue,
  stdioSecretsContext,
  type UpstreamCredentialsSpec,
} from "@mcpgw/snapshot";
import { and, count, eq } from "drizzle-orm";
import { recordAudit } from "../audit.ts";
import { authorize } from "../auth/permissions.ts";
import type { VerbContext } from "../context.ts";
import { AppError, assertChanges, conflict, notFound, validation } from "../errors.ts";
import { bumpOrgVersion } from "./config-version.ts";
import { type Page, type PageRequest, pageQuery, toPage } from "./pagination.ts";
import { findCatalogEntry } from "./stdio-catalog.ts";
import { assertSafeUpstreamUrl } from "./upstream-url.ts";

type ServerRow = typeof schema.mcpServers.$inferSelect;
type Transport = ServerRow["transport"];

export interface ServerInput {
  namespace_id: string;
  name: string;
  description?: string | null | undefined;
  transport: Transport;
  url?: string | null | undefined;
  endpoints?: UpstreamEndpoint[] | undefined;
  /** stdio servers: the catalog entry (id or slug) and values for the parameters it declares. */
  catalog_entry_id?: string | undefined;
  /** Merged into the stored values on update; `null` removes one. Secret ones are write-only. */
  parameters?: Record<string, StdioValue | null> | undefined;
  version?: string | null | undefined;
  timeout_ms?: number | undefined;
  connect_timeout_ms?: number | undefined;
  retries?: number | undefined;
  health_check_enabled?: boolean | undefined;
  health_check_interval_s?: number | undefined;
  health_check_timeout_ms?: number | undefined;
  tags?: string[] | undefined;
  metadata?: Record<string, unknown> | undefined;
  enabled?: boolean | undefined;
  credentials?: UpstreamCredentials | null | undefined;
}

export type UpstreamCredentials = UpstreamCredentialsSpec;

export type ServerPatch = Partial<Omit<ServerInput, "namespace_id" | "transport" | "catalog_entry_id">>;

export interface ServerDto
  extends Omit<
    ServerRow,
    | "credentials_sealed"
    | "secrets_sealed"
    | "created_at"
    | "updated_at"
    | "last_health_check_at"
    | "data_plane_reports"
  > {
  /** stdio servers: each data plane's last report of running the command. */
  data_planes: Array<{ replica: string; ok: boolean; error: string | null; reported_at: string }>;
  has_credentials: boolean;
  /** Whether secret parameters are set (their values are never returned). */
  has_secrets: boolean;
  last_health_check_at: string | null;
  created_at: string;
  updated_at: string;
}

/** The API shape of a server: never the sealed credentials, only whether there are any. */
export function toServerDto(r: ServerRow): ServerDto {
  const { credentials_sealed, secrets_sealed, data_plane_reports, ...rest } = r;
  return {
    ...rest,
    data_planes: Object.entries(data_plane_reports ?? {})
      .map(([replica, d]) => ({ replica, ok: d.ok, error: d.error, reported_at: d.at }))
      .sort((a, b) => a.replica.localeCompare(b.replica)),
    has_credentials: credentials_sealed != null,
    has_secrets: secrets_sealed != null,
    last_health_check_at: r.last_health_check_at?.toISOString() ?? null,
    created_at: r.created_at.toISOString(),
    updated_at: r.updated_at.toISOString(),
  };
}

const inOrg = (ctx: VerbContext, id: string) =>
  and(eq(schema.mcpServers.id, id), eq(schema.mcpServers.org_id, ctx.actor.org_id));

type ServerFields = Omit<ServerPatch, "credentials" | "parameters"> & {
  credentials_sealed?: string | null;
  catalog_entry_id?: string;
  parameters?: Record<string, StdioValue>;
  secrets_sealed?: string | null;
};

/**
 * A stdio server's launch: the catalog entry and the org's values, checked against the entry's
 * declarations; secret values sealed for this server only. On update the given values are
 * merged into the stored ones.
 */
async function stdioFields(
  ctx: VerbContext,
  serverId: string,
  input: { catalog_entry_id?: string | undefined; parameters?: ServerPatch["parameters"] },
  before?: ServerRow,
): Promise<Pick<ServerFields, "catalog_entry_id" | "parameters" | "secrets_sealed">> {
  // stdio servers run on data-plane hosts: only org admins make or change them.
  authorize(ctx.actor, "servers:stdio");
  const entryRef = input.catalog_entry_id ?? before?.catalog_entry_id;
  if (!entryRef)
    throw validation(
      "a stdio server is made from a catalog entry (`catalog_entry_id`); platform administrators define commands in /api/v1/stdio-catalog",
    );
  const entry = await findCatalogEntry(ctx.db, entryRef);
  if (!entry?.enabled) throw validation(`no enabled stdio catalog entry '${entryRef}'`);
  const stored: Record<string, StdioValue | null> =
    before && before.catalog_entry_id === entry.id
      ? {
          ...before.parameters,
          ...(before.secrets_sealed
            ? (JSON.parse(ctx.keyring.open(before.secrets_sealed, stdioSecretsContext(serverId))) as Record<
                string,
                StdioValue
              >)
            : {}),
        }
      : {};
  const given = Object.fromEntries(
    Object.entries({ ...stored, ...input.parameters }).filter(([, v]) => v !== null),
  );
  try {
    const { values, secrets } = checkStdioValues(entry.parameters, given);
    return {
      catalog_entry_id: entry.id,
      parameters: values,
      secrets_sealed: Object.keys(secrets).length
        ? ctx.keyring.seal(JSON.stringify(secrets), stdioSecretsContext(serverId))
        : null,
    };
  } catch (err) {
    if (err instanceof StdioLaunchError) throw validation(err.message);
    throw err;
  }
}

/** Checks transport-specific fields, normalises `url`/`endpoints`, and seals credentials. */
async function normalise(
  ctx: VerbContext,
  serverId: string,
  transport: Transport,
  input: ServerPatch & { catalog_entry_id?: string | undefined },
  before?: ServerRow,
): Promise<ServerFields> {
  const { credentials, parameters, catalog_entry_id, ...rest } = input;
  const out: ServerFields = { ...rest };
  if (credentials !== undefined) {
    if (credentials?.type === "oauth_client_credentials") {
      await assertSafeUpstreamUrl(credentials.token_url, ctx.allowPrivateUpstreams);
    }
    out.credentials_sealed =
      credentials === null
        ? null
        : ctx.keyring.seal(JSON.stringify(credentials), credentialsSealContext(serverId));
  }
  if (transport !== "stdio" && (catalog_entry_id !== undefined || parameters !== undefined))
    throw validation(`a ${transport} server takes no catalog entry or parameters`);
  if (transport === "streamable_http" || transport === "sse") {
    if (input.url !== undefined || input.endpoints !== undefined) {
      const endpoints = input.endpoints?.length
        ? input.endpoints
        : input.url
          ? [{ url: input.url, weight: 1 }]
          : [];
      if (endpoints.length === 0) throw validation(`a ${transport} server needs a url or endpoints`);
      out.endpoints = await Promise.all(
        endpoints.map(async (e) => ({
          url: await assertSafeUpstreamUrl(e.url, ctx.allowPrivateUpstreams),
          weight: e.weight,
        })),
      );
      out.url = out.endpoints[0]!.url;
    }
  } else if (transport === "stdio") {
    if (input.url != null || input.endpoints?.length)
      throw validation("a stdio server is made from a catalog entry, not a url");
    if (!before || catalog_entry_id !== undefined || parameters !== undefined)
      Object.assign(out, await stdioFields(ctx, serverId, { catalog_entry_id, parameters }, before));
  }
  return out;
}

/** Lists servers of the actor's org, optionally of one namespace, with their status. */
export async function listServers({
  ctx,
  page,
  namespaceId,
}: {
  ctx: VerbContext;
  page: PageRequest;
  namespaceId?: string | undefined;
}): Promise<Page<ServerDto>> {
  authorize(ctx.actor, "servers:read");
  const q = pageQuery(schema.mcpServers, page);
  const rows = await ctx.db
    .select()
    .from(schema.mcpServers)
    .where(
      and(
        eq(schema.mcpServers.org_id, ctx.actor.org_id),
        namespaceId ? eq(schema.mcpServers.namespace_id, namespaceId) : undefined,
        q.where,
      ),
    )
    .orderBy(...q.orderBy)
    .limit(q.limit);
  return toPage(rows, page.limit, toServerDto);
}

/** One server of the actor's org. */
export async function getServer({ ctx, id }: { ctx: VerbContext; id: string }): Promise<ServerDto> {
  authorize(ctx.actor, "servers:read");
  const [row] = await ctx.db.select().from(schema.mcpServers).where(inOrg(ctx, id));
  if (!row) throw notFound("server");
  return toServerDto(row);
}

/** Registers an upstream MCP server in a namespace of the actor's org. */
export async function createServer({
  ctx,
  input,
}: {
  ctx: VerbContext;
  input: ServerInput;
}): Promise<ServerDto> {
  authorize(ctx.actor, "servers:write");
  if (
    (input.transport === "streamable_http" || input.transport === "sse") &&
    !input.url &&
    !input.endpoints?.length
  ) {
    throw validation(`a ${input.transport} server needs a url or endpoints`);
  }
  const id = randomUUID();
  const { namespace_id: _ns, transport: _t, ...patch } = input;
  const fields = await normalise(ctx, id, input.transport, patch);
  const row = await ctx.db.transaction(async (tx) => {
    const [ns] = await tx
      .select({ id: schema.namespaces.id })
      .from(schema.namespaces)
      .where(
        and(eq(schema.namespaces.id, input.namespace_id), eq(schema.namespaces.org_id, ctx.actor.org_id)),
      );
    if (!ns) throw notFound("namespace");
    const [org] = await tx
      .select({ max: schema.organizations.max_servers })
      .from(schema.organizations)
      .where(eq(schema.organizations.id, ctx.actor.org_id))
      .for("update");
    const [{ n } = { n: 0 }] = await tx
      .select({ n: count() })
      .from(schema.mcpServers)
      .where(eq(schema.mcpServers.org_id, ctx.actor.org_id));
    if (org && n >= org.max)
      throw new AppError("Conflict", `the organization's plan allows at most ${org.max} servers`);
    const [dup] = await tx
      .select({ id: schema.mcpServers.id })
      .from(schema.mcpServers)
      .where(
        and(eq(schema.mcpServers.namespace_id, input.namespace_id), eq(schema.mcpServers.name, input.name)),
      );
    if (dup) throw conflict(`a server named '${input.name}' already exists in this namespace`);
    const [created] = await tx
      .insert(schema.mcpServers)
      .values({
        ...fields,
        id,
        namespace_id: input.namespace_id,
        name: input.name,
        transport: input.transport,
        org_id: ctx.actor.org_id,
      })
      .returning();
    await recordAudit(tx, ctx, {
      action: "server.create",
      resource_type: "server",
      resource_id: created!.id,
      after: created,
    });
    await bumpOrgVersion(tx, ctx.actor.org_id);
    return created!;
  });
  ctx.publisher.notify(ctx.actor.org_id);
  return toServerDto(row);
}

/** Changes a server's fields, including `enabled`. */
export async function updateServer({
  ctx,
  id,
  patch,
}: {
  ctx: VerbContext;
  id: string;
  patch: ServerPatch;
}): Promise<ServerDto> {
  authorize(ctx.actor, "servers:write");
  assertChanges(patch);
  const row = await ctx.db.transaction(async (tx) => {
    const [before] = await tx.select().from(schema.mcpServers).where(inOrg(ctx, id)).for("update");
    if (!before) throw notFound("server");
    const fields = await normalise(ctx, id, before.transport, patch, before);
    if (fields.name && fields.name !== before.name) {
      const [dup] = await tx
        .select({ id: schema.mcpServers.id })
        .from(schema.mcpServers)
        .where(
          and(
            eq(schema.mcpServers.namespace_id, before.namespace_id),
            eq(schema.mcpServers.name, fields.name),
          ),
        );
      if (dup) throw conflict(`a server named '${fields.name}' already exists in this namespace`);
    }
    const [after] = await tx.update(schema.mcpServers).set(fields).where(inOrg(ctx, id)).returning();
    const action =
      Object.keys(patch).length === 1 && patch.enabled !== undefined
        ? patch.enabled
          ? "server.enable"
          : "server.disable"
        : "server.update";
    await recordAudit(tx, ctx, { action, resource_type: "server", resource_id: id, before, after });
    await bumpOrgVersion(tx, ctx.actor.org_id);
    return after!;
  });
  ctx.publisher.notify(ctx.actor.org_id);
  return toServerDto(row);
}

/** Removes a server. */
export async function deleteServer({ ctx, id }: { ctx: VerbContext; id: string }): Promise<void> {
  authorize(ctx.actor, "servers:write");
  await ctx.db.transaction(async (tx) => {
    const [before] = await tx.delete(schema.mcpServers).where(inOrg(ctx, id)).returning();
    if (!before) throw notFound("server");
    await recordAudit(tx, ctx, { action: "server.delete", resource_type: "server", resource_id: id, before });
    await bumpOrgVersion(tx, ctx.actor.org_id);
  });
  ctx.publisher.notify(ctx.actor.org_id);
}
