/*
 * The upstream MCP sessions the gateway holds on behalf of callers that have no session of their
 * own: plain JSON-RPC (`/rpc`) callers and 2026-07-28 clients of session-based upstreams. One
 * session per (principal, target, input capabilities), initialized once, reused, re-opened when
 * it ends, closed when idle. Requests go upstream with ids of the gateway's own; what the
 * upstream sends unasked (notifications, server requests) is handed to the hooks.
 */
import { randomUUID } from "node:crypto";
import {
  isNotification,
  isRequest,
  isResponse,
  JsonRpcErrorCode,
  LATEST_SESSION_PROTOCOL_VERSION,
  type RelayedMessage,
} from "@mcpgw/protocol";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { InflightLimit } from "../transports/limits.ts";
import type { SessionContext } from "../transports/message-sessions.ts";
import type { Listener } from "./listen-streams.ts";
import type { Exchange } from "./revision-translator.ts";

/** A JSON-RPC message as the relay handles it (request, notification or response). */
export type Rpc = RelayedMessage;

/** An upstream request waiting for its answer. */
export interface Pending {
  resolve: (message: Record<string, unknown>) => void;
  timer: NodeJS.Timeout;
  /** Restarts the timeout (after a pause while the client was asked for input). */
  rearm: () => void;
}

/**
 * What one client request gives the upstream request answering it: where its progress
 * notifications go, and a signal that the client went away (2026-07-28: closing the response
 * stream cancels the request).
 */
export interface CallStream {
  onProgress?: ((notification: Rpc) => void) | undefined;
  closed?: AbortSignal | undefined;
  /** Told the id the request got upstream. */
  onSent?: ((upstreamId: string) => void) | undefined;
}

/** One upstream MCP session kept by the gateway for a caller. */
export interface UpstreamSession {
  transport: Transport;
  pending: Map<string, Pending>;
  initializeResult: unknown;
  lastUsed: number;
  closed: boolean;
  /** Stateless requests in flight that accept input requests. */
  exchanges: Set<Exchange>;
  /** Open `subscriptions/listen` streams. */
  listeners: Set<Listener>;
  /** Progress token → where that request's progress goes. */
  progress: Map<unknown, (notification: Rpc) => void>;
  /**
   * The caller's requests upstream at once (MAX_INFLIGHT_PER_SESSION): more wait their turn,
   * whether they come in one batch or in many HTTP requests.
   */
  slots: InflightLimit;
}

export interface UpstreamSessionOptions {
  replicaId: string;
  idleTimeoutMs: number;
  /** An upstream notification other than progress (listen streams may want it). */
  onNotification: (session: UpstreamSession, message: Rpc) => void;
  /** A server-to-client request; true when a client will answer it, otherwise it is refused. */
  onServerRequest: (session: UpstreamSession, message: Rpc) => boolean;
}

/** Sends one request upstream and resolves with its answer (an error answer on timeout or failure). */
export function requestUpstream(
  session: UpstreamSession,
  message: Rpc,
  timeoutMs: number,
  call: CallStream = {},
): Promise<Record<string, unknown>> {
  const id = `gw-${randomUUID()}`;
  const token = (message.params?._meta as { progressToken?: unknown } | undefined)?.progressToken;
  if (call.onProgress && token !== undefined) session.progress.set(token, call.onProgress);
  call.onSent?.(id);
  const settled = new Promise<Record<string, unknown>>((resolve) => {
    const expire = () => {
      session.pending.delete(id);
      resolve({
        error: {
          code: JsonRpcErrorCode.UpstreamTimeout,
          message: `upstream did not answer within ${timeoutMs} ms`,
        },
      });
    };
    const pending: Pending = {
      resolve,
      timer: setTimeout(expire, timeoutMs),
      rearm: () => {
        clearTimeout(pending.timer);
        pending.timer = setTimeout(expire, timeoutMs);
      },
    };
    session.pending.set(id, pending);
    call.closed?.addEventListener("abort", () => cancelUpstream(session, id, resolve), { once: true });
    session.transport.send({ ...message, id } as JSONRPCMessage).catch(() => {
      clearTimeout(pending.timer);
      session.pending.delete(id);
      resolve({
        error: {
          code: JsonRpcErrorCode.UpstreamUnavailable,
          message: "upstream MCP server is unavailable",
        },
      });
    });
  });
  if (token !== undefined && call.onProgress) void settled.then(() => session.progress.delete(token));
  return settled;
}

/** The client went away: the upstream is told to stop (notifications/cancelled). */
function cancelUpstream(
  session: UpstreamSession,
  id: string,
  resolve: (message: Record<string, unknown>) => void,
): void {
  const p = session.pending.get(id);
  if (!p) return;
  clearTimeout(p.timer);
  session.pending.delete(id);
  void session.transport
    .send({
      jsonrpc: "2.0",
      method: "notifications/cancelled",
      params: { requestId: id, reason: "the client closed its stream" },
    } as JSONRPCMessage)
    .catch(() => {});
  resolve({ error: { code: JsonRpcErrorCode.InternalError, message: "cancelled by the client" } });
}

/** The gateway-held upstream sessions of one replica, reaped when idle. */
export class UpstreamSessionPool {
  private readonly sessions = new Map<string, Promise<UpstreamSession>>();
  private readonly reaper: NodeJS.Timeout;

  constructor(private readonly o: UpstreamSessionOptions) {
    this.reaper = setInterval(() => void this.reap(), Math.min(30_000, Math.max(1000, o.idleTimeoutMs / 4)));
    this.reaper.unref();
  }

  /**
   * The caller's upstream session. Stateless callers able to answer server requests get one
   * initialized with those capabilities (servers offer some tools only to such clients).
   */
  async get(ctx: SessionContext, capabilities: Record<string, unknown> = {}): Promise<UpstreamSession> {
    const key = `${ctx.principal.id}\u0000${ctx.target}\u0000${Object.keys(capabilities).sort().join(",")}`;
    let pending = this.sessions.get(key);
    if (pending) {
      const existing = await pending.catch(() => undefined);
      if (existing && !existing.closed) {
        existing.lastUsed = Date.now();
        return existing;
      }
      this.sessions.delete(key);
    }
    pending = this.open(ctx, capabilities);
    this.sessions.set(key, pending);
    pending.catch(() => this.sessions.delete(key));
    return pending;
  }

  /** Closes every session (the replica shuts down). */
  async shutdown(): Promise<void> {
    clearInterval(this.reaper);
    for (const pending of this.sessions.values()) {
      const session = await pending.catch(() => undefined);
      await session?.transport.close().catch(() => {});
    }
    this.sessions.clear();
  }

  private async open(ctx: SessionContext, capabilities: Record<string, unknown>): Promise<UpstreamSession> {
    const transport = await ctx.open(`rpc.${this.o.replicaId}.${randomUUID()}`);
    const session: UpstreamSession = {
      transport,
      pending: new Map(),
      initializeResult: undefined,
      lastUsed: Date.now(),
      closed: false,
      exchanges: new Set(),
      listeners: new Set(),
      progress: new Map(),
      slots: new InflightLimit(),
    };
    transport.onmessage = (message) => this.route(session, message as Rpc);
    transport.onclose = () => ended(session);
    await initialize(session, capabilities, ctx.timeoutMs);
    return session;
  }

  /** What the upstream sent: an answer to a pending request, a notification or a request of its own. */
  private route(session: UpstreamSession, m: Rpc): void {
    if (isNotification(m)) {
      if (m.method === "notifications/progress") session.progress.get(m.params?.progressToken)?.(m);
      else this.o.onNotification(session, m);
      return;
    }
    if (isResponse(m) && typeof m.id === "string") {
      const p = session.pending.get(m.id);
      if (p) {
        clearTimeout(p.timer);
        session.pending.delete(m.id);
        p.resolve(m);
      }
    } else if (isRequest(m)) {
      if (m.method === "ping") {
        void session.transport
          .send({ jsonrpc: "2.0", id: m.id, result: {} } as JSONRPCMessage)
          .catch(() => {});
        return;
      }
      if (this.o.onServerRequest(session, m)) return;
      void session.transport
        .send({
          jsonrpc: "2.0",
          id: m.id,
          error: {
            code: JsonRpcErrorCode.MethodNotFound,
            message: "the client behind this gateway cannot answer server requests",
          },
        } as JSONRPCMessage)
        .catch(() => {});
    }
  }

  private async reap() {
    const cutoff = Date.now() - this.o.idleTimeoutMs;
    for (const [key, pending] of this.sessions) {
      const session = await pending.catch(() => undefined);
      if (!session || session.closed || (session.lastUsed < cutoff && session.listeners.size === 0)) {
        this.sessions.delete(key);
        await session?.transport.close().catch(() => {});
      }
    }
  }
}

/** The upstream session is gone: listeners end (and listen again on a fresh one), requests fail. */
function ended(session: UpstreamSession): void {
  session.closed = true;
  for (const l of session.listeners) l.res.end();
  session.listeners.clear();
  for (const p of session.pending.values()) {
    clearTimeout(p.timer);
    p.resolve({
      error: { code: JsonRpcErrorCode.UpstreamUnavailable, message: "upstream session ended" },
    });
  }
  session.pending.clear();
}

/** The MCP handshake, on the caller's behalf: the session is closed if the upstream refuses it. */
async function initialize(
  session: UpstreamSession,
  capabilities: Record<string, unknown>,
  timeoutMs: number,
): Promise<void> {
  const init = await requestUpstream(
    session,
    {
      jsonrpc: "2.0",
      method: "initialize",
      params: {
        protocolVersion: LATEST_SESSION_PROTOCOL_VERSION,
        capabilities,
        clientInfo: { name: "mcpgw-json-rpc", version: "1.0.0" },
      },
    },
    timeoutMs,
  );
  if (!("result" in init)) {
    await session.transport.close().catch(() => {});
    throw new Error("upstream refused initialize");
  }
  session.initializeResult = init.result;
  await session.transport.send({ jsonrpc: "2.0", method: "notifications/initialized" } as JSONRPCMessage);
}
