import { isRequest, isResponse, JsonRpcErrorCode, type RelayedMessage } from "@mcpgw/protocol";
import type { Logger } from "@mcpgw/telemetry";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage, RequestId } from "@modelcontextprotocol/sdk/types.js";
import type { GatewayError } from "../pipeline/errors.ts";
import { denied, rateLimited } from "../pipeline/guards.ts";
import { filterListResult, isFilteredList, policyTarget } from "../policy-targets.ts";
import { InflightLimit, type Release, tooManyWaiting } from "../transports/limits.ts";
import type { ProxyHooks } from "../transports/streamable-http.ts";

/** Where messages for the client go, whatever its transport. */
export interface ClientSink {
  /** `relatedRequestId` lets stream-based transports put a message on the stream of that request. */
  send(message: JSONRPCMessage, relatedRequestId?: RequestId): Promise<void>;
}

/** The SDK transports carry string or number ids only. */
type Msg = RelayedMessage & { id?: RequestId };

/** Gap kept between a request's last progress notification and its response. */
const PROGRESS_GAP_MS = 15;

/** How long a client asked for input (a person, maybe) may take before its request times out. */
const CLIENT_ANSWER_MS = 10 * 60_000;

export interface BridgeOptions {
  /** How long the upstream may stay silent about a request (no answer, no progress) before it times out. */
  timeoutMs: number;
}

/** A client request on its way upstream: it holds one of the session's slots until it is answered. */
interface InFlight {
  method: string;
  tool?: string | undefined;
  release: Release;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Relays JSON-RPC messages between one client session and one upstream connection, in both
 * directions and unchanged, except where the gateway must act: policy on `tools/call` and
 * `tools/list`, rate limits on each client request, and placing upstream messages on the right
 * client stream (progress by token, other server-initiated messages with the request in flight,
 * per MCP 2025-11-25 §streamable-http: they belong on that request's stream, not the GET stream).
 *
 * A session has at most MAX_INFLIGHT_PER_SESSION requests upstream; later ones wait for a slot
 * (at most MAX_WAITING_PER_SESSION of them, then they are refused), and the client transport
 * stops reading while the session is `saturated` (see `room`). A request the upstream stays
 * silent about for `timeoutMs` is answered with a timeout and cancelled upstream, so slots
 * always come back. Client responses and notifications never wait: an upstream request in
 * flight may be waiting for exactly that answer.
 */
export class SessionBridge {
  /** Client requests in flight, oldest first. */
  private readonly inflight = new Map<RequestId, InFlight>();
  private readonly progress = new Map<string | number, RequestId>();
  private readonly lastProgressAt = new Map<RequestId, number>();
  private readonly slots = new InflightLimit();
  /** Client requests waiting for a slot that the client cancelled meanwhile. */
  private readonly cancelledWhileWaiting = new Set<RequestId>();
  private readonly waitingIds = new Set<RequestId>();
  /** Upstream requests to the client not answered yet → the client request they belong to. */
  private readonly asked = new Map<RequestId, RequestId>();
  private readonly roomWaiters: Array<() => void> = [];
  private closed = false;
  /** Why the gateway ended the session (its caller lost standing), if it did. */
  endedBy: GatewayError | undefined;
  onclose?: () => void;

  constructor(
    private readonly client: ClientSink,
    readonly upstream: Transport,
    private readonly guards: Pick<ProxyHooks, "authorizeTool" | "keepTool" | "admit" | "standing">,
    private readonly logger: Logger,
    private readonly options: BridgeOptions,
  ) {
    upstream.onmessage = (m) => void this.fromUpstream(m as Msg);
    upstream.onclose = () => this.close();
    upstream.onerror = (err) => logger.debug({ err: err.message }, "upstream transport error");
  }

  /**
   * Every slot is taken and no upstream request waits for the client: its transport should stop
   * reading until `room()` resolves.
   */
  get saturated(): boolean {
    return !this.closed && this.slots.full && this.asked.size === 0;
  }

  /** Resolves once the session takes requests again (at once when it does). */
  room(): Promise<void> {
    if (!this.saturated) return Promise.resolve();
    return new Promise((resolve) => this.roomWaiters.push(resolve));
  }

  /** A message from the client: checked, then forwarded upstream. */
  async fromClient(message: JSONRPCMessage): Promise<void> {
    const m = message as Msg;
    if (!isRequest(m)) return this.passThrough(m);
    const id = m.id!;
    const method = m.method!;
    const tool =
      method === "tools/call" && typeof m.params?.name === "string" ? (m.params.name as string) : undefined;
    const lost = this.guards.standing?.();
    if (lost) {
      await this.replyError(id, lost);
      return this.end(lost);
    }
    const target = policyTarget(method, m.params);
    if (target !== undefined && this.guards.authorizeTool) {
      const decision = this.guards.authorizeTool(target);
      if (!decision.allowed) return this.replyError(id, denied(decision));
    }
    // The slot is taken before the rate-limit check: requests waiting on it count too.
    const release = this.slots.tryAcquire() ?? (await this.waitForSlot(id));
    if (!release) return;
    if (this.guards.admit) {
      const admission = await this.guards.admit({ method, tool });
      if (admission && !admission.allowed) {
        this.giveBack(release);
        return this.replyError(id, rateLimited(admission));
      }
    }
    // An id the client reuses while it is in flight replaces the older request (its slot comes back).
    this.settle(id);
    this.inflight.set(id, { method, tool, release, timer: undefined });
    this.arm(id);
    const token = (m.params?._meta as { progressToken?: string | number } | undefined)?.progressToken;
    if (token !== undefined) this.progress.set(token, id);
    try {
      await this.upstream.send(message);
    } catch (err) {
      this.settle(id);
      await this.reply(id, JsonRpcErrorCode.UpstreamUnavailable, "upstream MCP server is unavailable");
      this.logger.warn({ err: (err as Error).message }, "could not forward to upstream");
    }
  }

  /** Client responses and notifications: straight upstream (never behind waiting requests). */
  private async passThrough(m: Msg): Promise<void> {
    if (m.method === undefined && m.id !== undefined && this.asked.has(m.id)) {
      // The client answered: the request it was asked for works (and may time out) again.
      const related = this.asked.get(m.id)!;
      this.asked.delete(m.id);
      this.arm(related);
    }
    if (m.method === "notifications/cancelled") {
      const requestId = m.params?.requestId as RequestId | undefined;
      if (requestId !== undefined && this.waitingIds.has(requestId)) {
        // Never sent upstream: it simply is not.
        this.cancelledWhileWaiting.add(requestId);
        return;
      }
    }
    try {
      await this.upstream.send(m as JSONRPCMessage);
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, "could not forward to upstream");
    }
  }

  /** Waits for a slot; undefined (the client answered already, or not at all) when there is none. */
  private async waitForSlot(id: RequestId): Promise<Release | undefined> {
    this.waitingIds.add(id);
    const release = await this.slots.acquire();
    this.waitingIds.delete(id);
    const cancelled = this.cancelledWhileWaiting.delete(id);
    if (release && (cancelled || this.closed)) {
      this.giveBack(release);
      return undefined;
    }
    if (!release && !this.closed) await this.safeSend(tooManyWaiting(id) as unknown as JSONRPCMessage, id);
    return release;
  }

  /** (Re)starts the time the upstream has to answer a request, or to say something about it. */
  private arm(id: RequestId, ms = this.options.timeoutMs): void {
    const entry = this.inflight.get(id);
    if (!entry || this.closed) return;
    clearTimeout(entry.timer);
    entry.timer = setTimeout(() => void this.expire(id, ms), ms);
    entry.timer.unref();
  }

  /** The upstream said nothing about a request in time: the client is answered, the upstream told to stop. */
  private async expire(id: RequestId, ms: number): Promise<void> {
    if (!this.inflight.has(id)) return;
    this.settle(id);
    this.lastProgressAt.delete(id);
    void this.upstream
      .send({
        jsonrpc: "2.0",
        method: "notifications/cancelled",
        params: { requestId: id, reason: "the gateway timed out waiting for an answer" },
      } as JSONRPCMessage)
      .catch(() => {});
    await this.reply(id, JsonRpcErrorCode.UpstreamTimeout, `upstream did not answer within ${ms} ms`);
  }

  /** Forgets a request in flight and gives its slot back; the request it was, if any. */
  private settle(id: RequestId): InFlight | undefined {
    const entry = this.inflight.get(id);
    if (!entry) return undefined;
    this.inflight.delete(id);
    clearTimeout(entry.timer);
    for (const [token, owner] of this.progress) if (owner === id) this.progress.delete(token);
    for (const [asked, owner] of this.asked) if (owner === id) this.asked.delete(asked);
    this.giveBack(entry.release);
    return entry;
  }

  private giveBack(release: Release): void {
    release();
    this.wake();
  }

  /** Lets the client transport read again once the session has room. */
  private wake(): void {
    if (this.saturated) return;
    for (const resolve of this.roomWaiters.splice(0)) resolve();
  }

  private async fromUpstream(m: Msg): Promise<void> {
    if (isResponse(m)) {
      const request = this.settle(m.id!);
      if (!request) {
        // A response to nothing the client asked (or answered already, timed out): never relayed
        // (MCP forbids unsolicited responses).
        this.logger.debug({ id: m.id }, "dropping upstream response to an unknown id");
        return;
      }
      // SDK clients handle a notification a microtask after a response read in the same chunk,
      // and drop the request's progress handler with the response: a progress update relayed
      // just before would be lost. Long-running calls send progress; a few ms cost them nothing.
      const sinceProgress = Date.now() - (this.lastProgressAt.get(m.id!) ?? 0);
      this.lastProgressAt.delete(m.id!);
      if (sinceProgress < PROGRESS_GAP_MS)
        await new Promise((resolve) => setTimeout(resolve, PROGRESS_GAP_MS - sinceProgress));
      let out: Msg = m;
      if (this.guards.keepTool && isFilteredList(request.method) && m.result !== undefined) {
        out = {
          ...m,
          result: filterListResult(request.method, m.result, this.guards.keepTool) as Record<string, unknown>,
        };
      }
      await this.safeSend(out as JSONRPCMessage, m.id);
      return;
    }
    const token = (m.params as { progressToken?: string | number } | undefined)?.progressToken;
    const related =
      m.method === "notifications/progress" && token !== undefined
        ? this.progress.get(token)
        : this.latestInflight();
    if (m.method === "notifications/progress" && related !== undefined) {
      this.lastProgressAt.set(related, Date.now());
      this.arm(related);
    }
    if (m.id !== undefined && related !== undefined) {
      // The upstream asks the client (sampling, elicitation) for a request in flight: the client
      // must be read until it answers, and a person may take a while.
      this.asked.set(m.id, related);
      this.arm(related, Math.max(this.options.timeoutMs, CLIENT_ANSWER_MS));
      this.wake();
    }
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

  private async replyError(id: RequestId, err: GatewayError) {
    await this.safeSend(err.toJsonRpc(id) as unknown as JSONRPCMessage, id);
  }

  /**
   * Re-checks the caller's standing (after a snapshot landed): a caller who lost it has every
   * request in flight answered with the reason, and the session ends. True when it ended.
   */
  async recheck(): Promise<boolean> {
    if (this.closed) return false;
    const lost = this.guards.standing?.();
    if (!lost) return false;
    await this.end(lost);
    return true;
  }

  /** Ends the session for `err`: requests in flight are answered with it, the upstream closed. */
  async end(err: GatewayError): Promise<void> {
    if (this.closed) return;
    this.endedBy = err;
    const pending = [...this.inflight.keys()];
    for (const id of pending) this.settle(id);
    await Promise.all(pending.map((id) => this.replyError(id, err)));
    this.close();
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
    for (const entry of this.inflight.values()) clearTimeout(entry.timer);
    this.slots.close();
    for (const resolve of this.roomWaiters.splice(0)) resolve();
    void this.upstream.close().catch(() => {});
    this.onclose?.();
  }
}
