/*
 * `subscriptions/listen` (2026-07-28) for a session-based upstream: an SSE stream acknowledging
 * the filters the upstream can honour (its `listChanged` and `subscribe` capabilities), then
 * carrying the matching notifications of the caller's gateway-held upstream session, until the
 * client closes it. Resource subscriptions are made upstream (`resources/subscribe`) while a
 * stream wants them, and dropped (`resources/unsubscribe`) when the last one that wants it ends.
 */
import type { ServerResponse } from "node:http";
import { JsonRpcErrorCode, type JsonRpcId, jsonRpcError, STATELESS_META } from "@mcpgw/protocol";
import type { Logger } from "@mcpgw/telemetry";
import { GatewayError, sendGatewayError } from "../pipeline/errors.ts";
import { boundResponseBacklog } from "../transports/client-backlog.ts";
import type { SessionContext } from "../transports/message-sessions.ts";
import { inputCapabilities } from "./revision-translator.ts";
import {
  type Rpc,
  requestUpstream,
  type UpstreamSession,
  type UpstreamSessionPool,
} from "./upstream-sessions.ts";

/** An open `subscriptions/listen` stream of a stateless client, fed from its upstream session. */
export interface Listener {
  res: ServerResponse;
  /** Acknowledged: notifications may flow. */
  ready: boolean;
  subscriptionId: JsonRpcId;
  filter: { tools: boolean; prompts: boolean; resources: boolean; uris: Set<string> };
}

/** Upstream notifications a listen stream carries, by the filter flag that opts in to each. */
const LISTENED: Record<string, "tools" | "prompts" | "resources" | "uris"> = {
  "notifications/tools/list_changed": "tools",
  "notifications/prompts/list_changed": "prompts",
  "notifications/resources/list_changed": "resources",
  "notifications/resources/updated": "uris",
};

/** What a listen request asks to hear about. */
interface Wanted {
  toolsListChanged?: boolean;
  promptsListChanged?: boolean;
  resourcesListChanged?: boolean;
  resourceSubscriptions?: unknown;
}

/** Hands an upstream notification to the listen streams that asked for it (others are dropped). */
export function deliverToListeners(session: UpstreamSession, m: Rpc): void {
  const flag = LISTENED[m.method ?? ""];
  if (!flag) return;
  for (const l of session.listeners) {
    if (!l.ready) continue;
    const wants = flag === "uris" ? l.filter.uris.has(String(m.params?.uri ?? "")) : l.filter[flag];
    if (wants) writeEvent(l, { jsonrpc: "2.0", method: m.method, params: { ...m.params } });
  }
}

/** One SSE event on a listen stream, tagged with its subscription id. */
function writeEvent(
  l: Listener,
  notification: { jsonrpc: string; method?: string; params: Record<string, unknown> },
) {
  const meta = { ...((notification.params._meta as Record<string, unknown> | undefined) ?? {}) };
  meta[STATELESS_META.subscriptionId] = l.subscriptionId;
  l.res.write(
    `event: message\ndata: ${JSON.stringify({ ...notification, params: { ...notification.params, _meta: meta } })}\n\n`,
  );
}

/** The listener a request asks for, narrowed to what the upstream and the caller's policy allow. */
function newListener(
  message: Rpc,
  session: UpstreamSession,
  res: ServerResponse,
  ctx: SessionContext,
): Listener {
  const wanted = (message.params?.notifications ?? {}) as Wanted;
  const caps =
    (
      session.initializeResult as {
        capabilities?: Record<string, { listChanged?: boolean; subscribe?: boolean }>;
      }
    )?.capabilities ?? {};
  // Resources the caller may not read are not subscribed (nor acknowledged).
  const readable = (uri: string) =>
    !ctx.guards.authorizeTool || ctx.guards.authorizeTool(`resource:${uri}`).allowed;
  const uris = Array.isArray(wanted.resourceSubscriptions)
    ? wanted.resourceSubscriptions.filter((u): u is string => typeof u === "string" && readable(u))
    : [];
  return {
    res,
    ready: false,
    subscriptionId: message.id ?? null,
    filter: {
      tools: wanted.toolsListChanged === true && caps.tools?.listChanged === true,
      prompts: wanted.promptsListChanged === true && caps.prompts?.listChanged === true,
      resources: wanted.resourcesListChanged === true && caps.resources?.listChanged === true,
      uris: new Set(caps.resources?.subscribe === true ? uris : []),
    },
  };
}

/** Whether another listener of the session already holds the upstream subscription to `uri`. */
function subscribedByOthers(session: UpstreamSession, listener: Listener, uri: string): boolean {
  return [...session.listeners].some((l) => l !== listener && l.filter.uris.has(uri));
}

export class ListenStreams {
  constructor(
    private readonly sessions: UpstreamSessionPool,
    private readonly logger: Logger,
  ) {}

  /** Serves one `subscriptions/listen` request until the client or the upstream session ends it. */
  async listen(message: Rpc, res: ServerResponse, ctx: SessionContext): Promise<void> {
    // Registered first: a client gone during the awaits below must not leave a listener behind.
    const stream: { gone: boolean; release: (() => void) | undefined } = { gone: false, release: undefined };
    res.once("close", () => {
      stream.gone = true;
      stream.release?.();
    });
    const id = message.id ?? null;
    if (await this.refuseOverLimit(id, res, ctx)) return;
    const session = await this.sessionFor(message, id, res, ctx);
    if (!session) return;
    const listener = newListener(message, session, res, ctx);
    stream.release = this.register(session, listener, ctx);
    if (stream.gone) return stream.release();
    for (const uri of listener.filter.uris)
      if (!subscribedByOthers(session, listener, uri))
        await requestUpstream(
          session,
          { jsonrpc: "2.0", method: "resources/subscribe", params: { uri } },
          ctx.timeoutMs,
        );
    if (stream.gone || res.destroyed) return stream.release();
    this.acknowledge(listener, ctx);
  }

  /** Answers 429 when the rate limits refuse the stream (true: refused). */
  private async refuseOverLimit(id: JsonRpcId, res: ServerResponse, ctx: SessionContext): Promise<boolean> {
    if (!ctx.guards.admit) return false;
    const admission = await ctx.guards.admit({ method: "subscriptions/listen" });
    if (!admission || admission.allowed) return false;
    const text = JSON.stringify(
      jsonRpcError(
        id,
        JsonRpcErrorCode.RateLimited,
        `rate limit exceeded; retry in ${admission.retryAfterS}s`,
        {
          retry_after: admission.retryAfterS,
          rule: admission.rule,
        },
      ),
    );
    res.writeHead(429, { ...admission.headers, "content-type": "application/json" });
    res.end(text);
    return true;
  }

  /**
   * The same upstream session as the caller's other requests (notifications are per session);
   * undefined after answering 502 when it cannot be had.
   */
  private async sessionFor(
    message: Rpc,
    id: JsonRpcId,
    res: ServerResponse,
    ctx: SessionContext,
  ): Promise<UpstreamSession | undefined> {
    try {
      return await this.sessions.get(ctx, inputCapabilities(message));
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, "listen: upstream session failed");
      sendGatewayError(
        res,
        new GatewayError("upstream_unavailable", "upstream MCP server is unavailable"),
        id,
      );
      return undefined;
    }
  }

  /** Adds the listener to its session; the returned release removes it and drops its subscriptions. */
  private register(session: UpstreamSession, listener: Listener, ctx: SessionContext): () => void {
    session.listeners.add(listener);
    session.lastUsed = Date.now();
    return () => {
      if (!session.listeners.delete(listener)) return;
      session.lastUsed = Date.now();
      for (const uri of listener.filter.uris)
        if (!session.closed && !subscribedByOthers(session, listener, uri))
          void requestUpstream(
            session,
            { jsonrpc: "2.0", method: "resources/unsubscribe", params: { uri } },
            ctx.timeoutMs,
          );
    };
  }

  /** Opens the SSE stream with the filters it got; notifications flow from then on. */
  private acknowledge(listener: Listener, ctx: SessionContext): void {
    const { res } = listener;
    boundResponseBacklog(res, (buffered) =>
      this.logger.warn(
        { buffered, target: ctx.target },
        "dropping a listen stream whose client does not read",
      ),
    );
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const acknowledged: Record<string, unknown> = {};
    if (listener.filter.tools) acknowledged.toolsListChanged = true;
    if (listener.filter.prompts) acknowledged.promptsListChanged = true;
    if (listener.filter.resources) acknowledged.resourcesListChanged = true;
    if (listener.filter.uris.size > 0) acknowledged.resourceSubscriptions = [...listener.filter.uris];
    writeEvent(listener, {
      jsonrpc: "2.0",
      method: "notifications/subscriptions/acknowledged",
      params: { notifications: acknowledged },
    });
    listener.ready = true;
  }
}
