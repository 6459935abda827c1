import { JsonRpcErrorCode } from "@mcpgw/protocol";
import type { Logger } from "@mcpgw/telemetry";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage, RequestId } from "@modelcontextprotocol/sdk/types.js";
import { filterListResult, isFilteredList, policyTarget } from "../policy-targets.ts";
import type { ProxyHooks } from "../transports/streamable-http.ts";

/** Where messages for the client go, whatever its transport. */
export interface ClientSink {
  /** `relatedRequestId` lets stream-based transports put a message on the stream of that request. */
  send(message: JSONRPCMessage, relatedRequestId?: RequestId): Promise<void>;
}

type Msg = Record<string, unknown> & {
  jsonrpc: "2.0";
  id?: RequestId;
  method?: string;
  params?: Record<string, unknown>;
};

/** Gap kept between a request's last progress notification and its response. */
const PROGRESS_GAP_MS = 15;

const isRequest = (m: Msg) => typeof m.method === "string" && m.id !== undefined;
const isResponse = (m: Msg) => m.method === undefined && m.id !== undefined;

/**
 * Relays JSON-RPC messages between one client session and one upstream connection, in both
 * directions and unchanged, except where the gateway must act: policy on `tools/call` and
 * `tools/list`, rate limits on each client request, and placing upstream messages on the right
 * client stream (progress by token, other server-initiated messages with the request in flight,
 * per MCP 2025-11-25 §streamable-http: they belong on that request's stream, not the GET stream).
 */
export class SessionBridge {
  /** Client requests in flight, oldest first: id → method (and tool). */
  private readonly inflight = new Map<RequestId, { method: string; tool?: string | undefined }>();
  private readonly progress = new Map<string | number, RequestId>();
  private readonly lastProgressAt = new Map<RequestId, number>();
  private closed = false;
  onclose?: () => void;

  constructor(
    private readonly client: ClientSink,
    readonly upstream: Transport,
    private readonly guards: Pick<ProxyHooks, "authorizeTool" | "keepTool" | "admit">,
    private readonly logger: Logger,
  ) {
    upstream.onmessage = (m) => void this.fromUpstream(m as Msg);
    upstream.onclose = () => this.close();
    upstream.onerror = (err) => logger.debug({ err: err.message }, "upstream transport error");
  }

  /** A message from the client: checked, then forwarded upstream. */
  async fromClient(message: JSONRPCMessage): Promise<void> {
    const m = message as Msg;
    if (isRequest(m)) {
      const method = m.method!;
      const tool =
        method === "tools/call" && typeof m.params?.name === "string" ? (m.params.name as string) : undefined;
      const target = policyTarget(method, m.params);
      if (target !== undefined && this.guards.authorizeTool) {
        const decision = this.guards.authorizeTool(target);
        if (!decision.allowed)
          return this.reply(m.id!, JsonRpcErrorCode.Forbidden, decision.reason, { policy: decision.rule });
      }
      if (this.guards.admit) {
        const admission = await this.guards.admit({ method, tool });
        if (admission && !admission.allowed) {
          return this.reply(
            m.id!,
            JsonRpcErrorCode.RateLimited,
            `rate limit exceeded (${admission.rule?.name ?? "limit"}); retry in ${admission.retryAfterS}s`,
            {
              retry_after: admission.retryAfterS,
              rule: admission.rule,
            },
          );
        }
      }
      this.inflight.set(m.id!, { method, tool });
      const token = (m.params?._meta as { progressToken?: string | number } | undefined)?.progressToken;
      if (token !== undefined) this.progress.set(token, m.id!);
    }
    try {
      await this.upstream.send(message);
    } catch (err) {
      if (isRequest(m)) {
        this.inflight.delete(m.id!);
        await this.reply(m.id!, JsonRpcErrorCode.UpstreamUnavailable, "upstream MCP server is unavailable");
      }
      this.logger.warn({ err: (err as Error).message }, "could not forward to upstream");
    }
  }

  private async fromUpstream(m: Msg): Promise<void> {
    if (isResponse(m)) {
      const request = this.inflight.get(m.id!);
      if (!request) {
        // A response to nothing the client asked: never relayed (MCP forbids unsolicited responses).
        this.logger.debug({ id: m.id }, "dropping upstream response to an unknown id");
        return;
      }
      this.inflight.delete(m.id!);
      for (const [token, id] of this.progress) if (id === m.id) this.progress.delete(token);
      // SDK clients handle a notification a microtask after a response read in the same chunk,
      // and drop the request's progress handler with the response: a progress update relayed
      // just before would be lost. Long-running calls send progress; a few ms cost them nothing.
      const sinceProgress = Date.now() - (this.lastProgressAt.get(m.id!) ?? 0);
      this.lastProgressAt.delete(m.id!);
      if (sinceProgress < PROGRESS_GAP_MS)
        await new Promise((resolve) => setTimeout(resolve, PROGRESS_GAP_MS - sinceProgress));
      let out: Msg = m;
      if (this.guards.keepTool && isFilteredList(request.method) && m.result !== undefined) {
        out = { ...m, result: filterListResult(request.method, m.result, this.guards.keepTool) };
      }
      await this.safeSend(out as JSONRPCMessage, m.id);
      return;
    }
    const token = (m.params as { progressToken?: string | number } | undefined)?.progressToken;
    const related =
      m.method === "notifications/progress" && token !== undefined
        ? this.progress.get(token)
        : this.latestInflight();
    if (m.method === "notifications/progress" && related !== undefined)
      this.lastProgressAt.set(related, Date.now());
    await this.safeSend(m as JSONRPCMessage, related);
  }

  private latestInflight(): RequestId | undefined {
    let last: RequestId | undefined;
    for (const id of this.inflight.keys()) last = id;
    return last;
  }

  private async reply(id: RequestId, code: number, message: string, data?: unknown) {
    await this.safeSend(
      {
        jsonrpc: "2.0",
        id,
        error: { code, message, ...(data === undefined ? {} : { data }) },
      } as JSONRPCMessage,
      id,
    );
  }

  private async safeSend(message: JSONRPCMessage, related?: RequestId) {
    try {
      await this.client.send(message, related);
    } catch (err) {
      this.logger.debug(
        { err: (err as Error).message },
        "client went away before a message could be delivered",
      );
    }
  }

  /** Ends both sides (idempotent). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    void this.upstream.close().catch(() => {});
    this.onclose?.();
  }
}
