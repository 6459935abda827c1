import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { type Member, NamespaceUpstream } from "../aggregate/namespace-upstream.ts";
import type { DataPlaneContext } from "../pipeline/context.ts";
import { GatewayError, sendGatewayError } from "../pipeline/errors.ts";
import type { Resolver } from "../pipeline/resolve.ts";
import { connectUpstream, stdioOwner } from "../upstream/connect.ts";
import { rpcIntrospection, sendJsonBody, sseMessage, upgradeWebSocket } from "./shared-endpoints.ts";

/** The namespace routes: `/ns/{slug}/…` and the caller's default namespace (`/mcp`, `/sse`, …). */
export function namespaceRoutes(cx: DataPlaneContext, r: Resolver) {
  const { deps } = cx;
  const { resolveNamespace, refuse } = r;

  /** A namespace endpoint: Streamable HTTP, legacy SSE and its message endpoint, JSON-RPC. */
  async function handleNamespace(
    req: IncomingMessage,
    res: ServerResponse,
    slug: string | undefined,
    kind: string,
    query: URLSearchParams,
  ) {
    try {
      const r = await resolveNamespace(req, slug);
      if (!r.ok) return refuse(req, res, r);
      const base = slug ? `/ns/${encodeURIComponent(slug)}` : "";
      switch (kind) {
        case "mcp":
          return await deps.sessions.handleStreamableHttp(req, res, r.ctx);
        case "sse":
          return await deps.sessions.handleSseStream(req, res, r.ctx, `${base}/message`);
        case "message":
          return await sseMessage(cx, req, res, r.ctx, query);
        case "rpc":
        case "rpc/batch":
          return await deps.rpc.handle(req, res, r.ctx);
        case "rpc/introspection":
          return await rpcIntrospection(cx, req, res, r.ctx);
        case "conflicts": {
          req.resume();
          const aggregate = (await r.ctx.open(`inspect-${Date.now()}`)) as NamespaceUpstream;
          try {
            sendJsonBody(res, { namespace: slug, ...(await aggregate.inspect()) });
          } finally {
            await aggregate.close();
          }
          return;
        }
      }
    } catch (err) {
      deps.logger.error({ err, namespace: slug }, "data-plane request failed");
      sendGatewayError(res, new GatewayError("internal", "internal gateway error"));
    }
  }

  /** WebSocket upgrades of namespace endpoints. */
  const handleNamespaceUpgrade = (
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    slug: string | undefined,
    settled?: (status: number) => void,
  ) =>
    upgradeWebSocket(cx, () => resolveNamespace(req, slug), req, socket, head, settled, { namespace: slug });

  /**
   * The conflicts report of one namespace for the control plane (asked over the bus): the same
   * aggregate and `inspect()` as `/ns/{slug}/conflicts`, but for no caller. It is an admin view
   * of the configuration, so every enabled member takes part and no policy hides servers or
   * tools: a name that collides for some callers is reported even if the asker's policy would
   * hide one side. Rate limits do not apply either (one connection per member, then closed).
   */
  async function inspectNamespace(
    orgId: string,
    namespaceId: string,
    options: { deadline?: number | undefined } = {},
  ): Promise<NamespaceInspection> {
    const org = deps.store.current.orgs.get(orgId);
    const namespace = org?.namespaces.find((n) => n.id === namespaceId);
    if (!org || !namespace) return { status: "unknown_namespace", snapshot_version: org?.version ?? null };
    // A disabled org's namespaces are not served; its upstreams are not contacted either.
    if (!org.org.active) return { status: "org_disabled", snapshot_version: org.version };
    const members: Member[] = org.servers
      .filter((s) => s.namespace_id === namespace.id && s.enabled && s.transport !== "virtual")
      .map((server) => ({ server, guards: {} }));
    const sessionId = `inspect-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
    const aggregate = new NamespaceUpstream({
      namespace,
      members,
      // Inspection is the control plane's: it counts as the org's, for no principal of it.
      connect: (server) =>
        connectUpstream(server, `${sessionId}.${server.id}`, deps.connect, {
          ...stdioOwner({ org }, { id: "inspect" }),
        }),
      memberTimeoutMs: deps.aggregateMemberTimeoutMs,
      deadline: options.deadline,
      logger: deps.logger,
    });
    try {
      await aggregate.start();
      return {
        status: "ok",
        snapshot_version: org.version,
        namespace: {
          id: namespace.id,
          slug: namespace.slug,
          tool_naming: namespace.tool_naming,
          tool_separator: namespace.tool_separator,
        },
        ...(await aggregate.inspect()),
      };
    } finally {
      await aggregate.close();
    }
  }

  return { handleNamespace, handleNamespaceUpgrade, inspectNamespace };
}

/** What a data plane reports about one namespace to the control plane (`inspectNamespace`). */
export type NamespaceInspection =
  | { status: "unknown_namespace" | "org_disabled"; snapshot_version: number | null }
  | {
      status: "ok";
      /** The org's snapshot version the report was made from. */
      snapshot_version: number;
      namespace: { id: string; slug: string; tool_naming: string; tool_separator: string };
      conflicts: Array<{ kind: string; name: string; servers: string[] }>;
      unavailable: Array<{ server: string; reason: string }>;
    };
