import type { IncomingMessage, ServerResponse } from "node:http";
import { isJsonRpcMessage, JsonRpcErrorCode, MCP_HEADERS } from "@mcpgw/protocol";
import type { SessionEvent } from "@mcpgw/queue";
import { Counter, type Logger, type Registry } from "@mcpgw/telemetry";
import { SSEServerTransport } from "@modelcontextprotocol/sdk/server/sse.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import type { WebSocket } from "ws";
import type { Principal } from "../auth/principal.ts";
import { type ClientSink, SessionBridge } from "../bridge/session-bridge.ts";
import { closeReason, GatewayError, sendGatewayError } from "../pipeline/errors.ts";
import { mintSessionId, sessionOwner } from "../replica-ids.ts";
import type { ReplicaDirectory } from "../replicas.ts";
import type { RoutedServer } from "../snapshot/store.ts";
import { type ConnectDeps, connectUpstream, stdioOwner } from "../upstream/connect.ts";
import { StdioProcess, StdioUnavailable } from "../upstream/stdio-processes.ts";
import {
  boundResponseBacklog,
  MAX_CLIENT_BACKLOG_BYTES,
  type OnSlowClient,
  sendBounded,
} from "./client-backlog.ts";
import { SessionEventStore, STANDALONE_STREAM_ID, setLastEventId } from "./event-store.ts";
import { batchTooLarge, MAX_BATCH_MESSAGES, MAX_INFLIGHT_PER_SESSION } from "./limits.ts";
import type { ProxyHooks } from "./streamable-http.ts";

/** The org already has as many sessions as its plan allows. */
export class SessionQuotaExceeded extends Error {
  override name = "SessionQuotaExceeded";
  constructor(limit: number) {
    super(`the organization's plan allows at most ${limit} concurrent MCP sessions`);
  }
}

export type ClientTransportKind = "streamable_http" | "sse" | "websocket";

/** What a message-level session is bound to. */
export interface SessionContext {
  /** What the session serves: a server id, or `ns:<namespace id>` for an aggregate. */
  target: string;
  principal: Principal;
  guards: Pick<ProxyHooks, "authorizeTool" | "keepTool" | "admit" | "sessions" | "standing">;
  /** Opens the session's upstream (a server's, or a namespace aggregate). */
  open: (sessionId: string) => Promise<Transport>;
  /** Budget for one upstream answer. */
  timeoutMs: number;
  /** Where the session belongs, for session records. */
  org_id: string;
  namespace_id: string | null;
  server_id: string | null;
}

/** The context of a session with one server. */
export function serverContext(
  routed: RoutedServer,
  principal: Principal,
  guards: SessionContext["guards"],
  deps: ConnectDeps,
): SessionContext {
  return {
    target: routed.server.id,
    principal,
    guards,
    open: (sessionId) => connectUpstream(routed.server, sessionId, deps, stdioOwner(routed, principal)),
    timeoutMs: routed.server.timeout_ms,
    org_id: routed.org.org_id,
    namespace_id: routed.namespace.id,
    server_id: routed.server.id,
  };
}

interface Session {
  id: string;
  kind: ClientTransportKind;
  orgId: string;
  serverId: string;
  principalId: string;
  bridge: SessionBridge;
  lastSeen: number;
  /** For Streamable HTTP and SSE clients: the SDK server transport that owns the client side. */
  http?: StreamableHTTPServerTransport;
  /** Whether the Streamable HTTP client has opened its GET stream yet. */
  getStreamOpened?: boolean;
  sse?: SSEServerTransport;
  ws?: WebSocket;
}

export interface MessageSessionsOptions {
  /** Reaches sessions that live in another replica. */
  replicas?: ReplicaDirectory | undefined;
  /** Session starts and ends, for the worker's session records. */
  report?: ((event: Omit<SessionEvent, "at" | "replica">) => void) | undefined;
  replicaId: string;
  logger: Logger;
  /** Sessions idle for longer are closed (clients rarely send DELETE). */
  idleTimeoutMs: number;
  maxMessageBytes: number;
  /** Where `mcpgw_slow_client_disconnects_total` is registered; none: not exported. */
  metrics?: Registry | undefined;
}

/**
 * Client sessions relayed message by message: every client transport other than the
 * byte-level Streamable HTTP fast path (legacy SSE, WebSocket) and every upstream other than
 * Streamable HTTP (stdio, legacy SSE). A session lives in the replica that opened it; its id
 * names that replica (`s1.<replica>.<uuid>`).
 *
 * A client that stops reading is dropped once MAX_CLIENT_BACKLOG_BYTES wait for it on one of its
 * streams (an SSE response, a WebSocket). A legacy SSE session is its stream, so it ends; a
 * Streamable HTTP session outlives a dropped GET or POST stream (the client resumes it with
 * Last-Event-ID from the session's bounded event store, see event-store.ts); a WebSocket session
 * ends.
 *
 * A client that sends faster than its upstream answers is read no further while its session is
 * saturated (see SessionBridge): a WebSocket is paused, an HTTP POST waits before its body is
 * read. Batches carry at most MAX_BATCH_MESSAGES (the SDK's Streamable HTTP transport enforces
 * the same; legacy SSE takes no batches).
 */
export class MessageSessions {
  private readonly sessions = new Map<string, Session>();
  private readonly reaper: NodeJS.Timeout;
  private readonly slowClients: Counter<"transport">;
  private readonly endedSessions: Counter<"transport" | "reason">;

  constructor(private readonly o: MessageSessionsOptions) {
    this.reaper = setInterval(() => this.reap(), Math.min(30_000, Math.max(1000, o.idleTimeoutMs / 4)));
    this.reaper.unref();
    this.slowClients = new Counter({
      name: "mcpgw_slow_client_disconnects_total",
      help: "Client streams (SSE responses, WebSockets) closed because their client stopped reading and its backlog passed the limit",
      labelNames: ["transport"] as const,
      registers: o.metrics ? [o.metrics] : [],
    });
    this.endedSessions = new Counter({
      name: "mcpgw_sessions_ended_total",
      help: "Sessions the gateway ended because their caller lost the right to use the target (revoked credential, disabled or deleted server, policy)",
      labelNames: ["transport", "reason"] as const,
      registers: o.metrics ? [o.metrics] : [],
    });
  }

  /**
   * Holds every open session to the current snapshot (call when one lands): sessions whose
   * caller lost standing end with the reason. Resolves with how many ended.
   */
  async recheck(): Promise<number> {
    const ended = await Promise.all([...this.sessions.values()].map((s) => s.bridge.recheck()));
    return ended.filter(Boolean).length;
  }

  /** Counts and logs a client dropped for reading too slowly (never what it was sent). */
  private slowClient(sessionId: string, kind: ClientTransportKind): OnSlowClient {
    return (buffered) => {
      this.slowClients.inc({ transport: kind });
      this.o.logger.warn(
        {
          session: sessionId,
          transport: kind,
          buffered_bytes: buffered,
          limit_bytes: MAX_CLIENT_BACKLOG_BYTES,
        },
        "dropping a client stream whose client does not read",
      );
    };
  }

  private newId(): string {
    return mintSessionId(this.o.replicaId);
  }

  /** Counts per client transport of one org's sessions, for operators. */
  stats(orgId: string): Record<ClientTransportKind, number> {
    const counts: Record<ClientTransportKind, number> = { streamable_http: 0, sse: 0, websocket: 0 };
    for (const s of this.sessions.values()) if (s.orgId === orgId) counts[s.kind]++;
    return counts;
  }

  /** One org's sessions on this replica, for operators. */
  list(orgId: string) {
    return [...this.sessions.values()]
      .filter((s) => s.orgId === orgId)
      .map((s) => ({
        id: s.id,
        transport: s.kind,
        server_id: s.serverId,
        principal: s.principalId,
        idle_ms: Date.now() - s.lastSeen,
      }));
  }

  /** Sends a message to one session, or to every session of `kind` (operator broadcast). */
  async push(
    message: JSONRPCMessage,
    filter: { orgId: string; sessionId?: string | undefined; kind?: ClientTransportKind | undefined },
  ): Promise<number> {
    let sent = 0;
    for (const s of this.sessions.values()) {
      if (s.orgId !== filter.orgId) continue;
      if (filter.sessionId && s.id !== filter.sessionId) continue;
      if (filter.kind && s.kind !== filter.kind) continue;
      try {
        if (s.http) await s.http.send(message);
        else if (s.sse) await s.sse.send(message);
        else if (s.ws) sendBounded(s.ws, message, this.slowClient(s.id, s.kind));
        sent++;
      } catch {
        // a client that went away
      }
    }
    return sent;
  }

  private async open(id: string, kind: ClientTransportKind, ctx: SessionContext, sink: ClientSink) {
    const gate = ctx.guards.sessions;
    const ticket = gate ? await gate.reserve() : undefined;
    if (gate && ticket === undefined) throw new SessionQuotaExceeded(gate.limit);
    let upstream: Transport;
    try {
      upstream = await ctx.open(id);
    } catch (err) {
      if (ticket !== undefined) gate?.settle(ticket, undefined);
      throw err;
    }
    if (ticket !== undefined) gate?.settle(ticket, id);
    const record = (event: "start" | "end") =>
      this.o.report?.({
        event,
        session_id: id,
        org_id: ctx.org_id,
        namespace_id: ctx.namespace_id,
        server_id: ctx.server_id,
        transport: kind,
        protocol_version: null,
        client_info: null,
        principal: ctx.principal.id,
        process_pid: upstream instanceof StdioProcess ? (upstream.pid ?? null) : null,
      });
    record("start");
    const bridge = makeBridge(sink, upstream, ctx, this.o.logger);
    const session: Session = {
      id,
      kind,
      orgId: ctx.org_id,
      serverId: ctx.target,
      principalId: ctx.principal.id,
      bridge,
      lastSeen: Date.now(),
    };
    this.sessions.set(id, session);
    bridge.onclose = () => {
      this.sessions.delete(id);
      gate?.end(id);
      record("end");
      void session.http?.close().catch(() => {});
      void session.sse?.close().catch(() => {});
      const ended = bridge.endedBy;
      if (ended) {
        this.endedSessions.inc({ transport: kind, reason: ended.kind });
        this.o.logger.info(
          { session: id, transport: kind, reason: ended.kind, detail: ended.message },
          "session ended: its caller may no longer use the target",
        );
      }
      if (session.ws && session.ws.readyState <= 1)
        session.ws.close(ended?.wsCode ?? 1001, ended ? closeReason(ended.message) : "session ended");
    };
    return session;
  }

  /** The session a request names, if it belongs to this server and principal. */
  private find(id: string, ctx: SessionContext): Session | undefined {
    const s = this.sessions.get(id);
    if (!s || s.serverId !== ctx.target || s.principalId !== ctx.principal.id) return undefined;
    s.lastSeen = Date.now();
    ctx.guards.sessions?.touch(id);
    return s;
  }

  private fail(res: ServerResponse, err: unknown) {
    if (err instanceof SessionQuotaExceeded) {
      sendGatewayError(res, new GatewayError("rate_limited", err.message, { retryAfterS: 60 }));
      return;
    }
    if (err instanceof StdioUnavailable) {
      sendGatewayError(
        res,
        new GatewayError("unavailable", err.message, { retryAfterS: err.retryAfterS || undefined }),
      );
      return;
    }
    this.o.logger.warn({ err: (err as Error).message }, "could not open upstream session");
    sendGatewayError(res, new GatewayError("upstream_unavailable", "upstream MCP server is unavailable"));
  }

  /** `/servers/{id}/mcp` (Streamable HTTP) for stdio and SSE upstreams. */
  /** `body`: the request body when the caller already read it. */
  async handleStreamableHttp(
    req: IncomingMessage,
    res: ServerResponse,
    ctx: SessionContext,
    body?: unknown,
  ): Promise<void> {
    const sid = req.headers[MCP_HEADERS.sessionId];
    if (typeof sid === "string") {
      const s = this.find(sid, ctx);
      const owner = sessionOwner(sid);
      // A session of another replica (its stdio process lives there): hand the request over.
      if (!s && owner && owner !== this.o.replicaId && (await this.o.replicas?.forward(req, res, owner)))
        return;
      if (!s?.http) {
        req.resume();
        sendGatewayError(res, new GatewayError("not_found", "Session not found"));
        return;
      }
      // A GET stream or a POST's SSE response: either may be left unread.
      boundResponseBacklog(res, this.slowClient(s.id, s.kind));
      if (req.method === "GET") {
        // What the upstream sent before the client's first GET stream (a stdio server's
        // `roots/list` right after `initialized`) waits in the event store: the first stream
        // resumes from the start of the store instead of beginning empty.
        const first = !s.getStreamOpened && req.headers["last-event-id"] === undefined;
        if (first) {
          setLastEventId(req, SessionEventStore.fromStart(STANDALONE_STREAM_ID));
          // A first GET the SDK refused (406, a bad revision) opened no stream: the next replays.
          res.once("finish", () => {
            if (res.statusCode !== 200) s.getStreamOpened = false;
          });
        }
        s.getStreamOpened = true;
      }
      // Backpressure: a POST's body stays unread while the session has no room.
      if (req.method === "POST") await s.bridge.room();
      await s.http.handleRequest(req, res);
      return;
    }
    if (req.method !== "POST") {
      req.resume();
      sendGatewayError(
        res,
        new GatewayError("bad_request", "Bad Request: Mcp-Session-Id header is required"),
      );
      return;
    }
    const id = this.newId();
    let session: Session | undefined;
    const http = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => id,
      onsessionclosed: () => session?.bridge.close(),
      // Broken streams resume with Last-Event-ID, whatever the upstream offers.
      eventStore: new SessionEventStore(),
    });
    try {
      session = await this.open(id, "streamable_http", ctx, {
        send: (m, related) => http.send(m, related === undefined ? undefined : { relatedRequestId: related }),
      });
    } catch (err) {
      req.resume();
      this.fail(res, err);
      return;
    }
    session.http = http;
    http.onmessage = (m) => {
      session!.lastSeen = Date.now();
      void session!.bridge.fromClient(m);
    };
    http.onclose = () => session?.bridge.close();
    boundResponseBacklog(res, this.slowClient(id, "streamable_http"));
    await http.handleRequest(req, res, body);
    // The SDK answers a request that is not a valid initialize without creating the session.
    if (!http.sessionId) session.bridge.close();
  }

  /** `GET /servers/{id}/sse`: the legacy HTTP+SSE transport's event stream. */
  async handleSseStream(
    _req: IncomingMessage,
    res: ServerResponse,
    ctx: SessionContext,
    messagePath: string,
  ): Promise<void> {
    const sse = new SSEServerTransport(`${messagePath}?replica=${encodeURIComponent(this.o.replicaId)}`, res);
    // The stream is the session: a client dropped for not reading loses the session with it.
    boundResponseBacklog(res, this.slowClient(sse.sessionId, "sse"));
    let session: Session;
    try {
      session = await this.open(sse.sessionId, "sse", ctx, { send: (m) => sse.send(m) });
    } catch (err) {
      this.fail(res, err);
      return;
    }
    session.sse = sse;
    sse.onmessage = (m) => {
      session.lastSeen = Date.now();
      void session.bridge.fromClient(m);
    };
    sse.onclose = () => session.bridge.close();
    res.once("close", () => session.bridge.close());
    await sse.start();
  }

  /** `POST /servers/{id}/message?sessionId=…`: a client message of a legacy SSE session. */
  async handleSseMessage(
    req: IncomingMessage,
    res: ServerResponse,
    ctx: SessionContext,
    sessionId: string,
    owner?: string,
  ): Promise<void> {
    const s = this.find(sessionId, ctx);
    if (!s && owner && owner !== this.o.replicaId && (await this.o.replicas?.forward(req, res, owner)))
      return;
    if (!s?.sse) {
      req.resume();
      sendGatewayError(res, new GatewayError("not_found", "Session not found"));
      return;
    }
    // Backpressure: the message stays unread (and unacknowledged) while the session has no room.
    await s.bridge.room();
    await s.sse.handlePostMessage(req, res);
  }

  /** `/servers/{id}/ws`: one WebSocket (subprotocol `mcp`) is one session. */
  async handleWebSocket(ws: WebSocket, ctx: SessionContext): Promise<void> {
    const id = this.newId();
    // Frames can arrive while the upstream is still connecting: held until it is, and no more
    // read meanwhile once a session's worth of requests waits.
    const early: JSONRPCMessage[] = [];
    let session: Session | undefined;
    const deliver = (m: JSONRPCMessage) => {
      if (!session) {
        early.push(m);
        if (early.length >= MAX_INFLIGHT_PER_SESSION) ws.pause();
        return;
      }
      void session.bridge.fromClient(m);
      this.holdWhileSaturated(ws, session.bridge);
    };
    const reply = (code: number, message: string) =>
      ws.send(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code, message } }));
    ws.on("message", (data, isBinary) => {
      if (session) session.lastSeen = Date.now();
      const text = isBinary ? Buffer.from(data as Buffer).toString("utf8") : data.toString();
      let message: unknown;
      try {
        message = JSON.parse(text);
      } catch {
        reply(JsonRpcErrorCode.ParseError, "Parse error: frame is not valid JSON");
        return;
      }
      if (Array.isArray(message) && message.length > MAX_BATCH_MESSAGES) {
        ws.send(JSON.stringify(batchTooLarge(message.length)));
        return;
      }
      for (const m of Array.isArray(message) ? message : [message]) {
        if (isJsonRpcMessage(m)) deliver(m as JSONRPCMessage);
        else reply(JsonRpcErrorCode.InvalidRequest, "Invalid Request: not a JSON-RPC 2.0 message");
      }
    });
    ws.on("close", () => session?.bridge.close());
    ws.on("error", () => session?.bridge.close());
    try {
      const onSlow = this.slowClient(id, "websocket");
      session = await this.open(id, "websocket", ctx, {
        send: async (m) => sendBounded(ws, m, onSlow),
      });
    } catch (err) {
      if (err instanceof SessionQuotaExceeded) ws.close(1008, err.message.slice(0, 120));
      else
        ws.close(
          1011,
          err instanceof StdioUnavailable ? err.message.slice(0, 120) : "upstream MCP server is unavailable",
        );
      return;
    }
    session.ws = ws;
    if (ws.readyState !== ws.OPEN) {
      session.bridge.close();
      return;
    }
    for (const m of early.splice(0)) void session.bridge.fromClient(m);
    ws.resume();
    this.holdWhileSaturated(ws, session.bridge);
  }

  /**
   * Backpressure for a WebSocket: no more frames are read while its session is saturated (frames
   * the socket already read still arrive, and wait for a slot), until answers make room.
   */
  private holdWhileSaturated(ws: WebSocket, bridge: SessionBridge): void {
    if (ws.isPaused || !bridge.saturated) return;
    ws.pause();
    void bridge.room().then(() => ws.resume());
  }

  private reap() {
    const cutoff = Date.now() - this.o.idleTimeoutMs;
    for (const s of this.sessions.values()) {
      // A WebSocket or SSE stream that is still open is not idle: the client is connected.
      if (s.lastSeen < cutoff && !s.ws && !s.sse) {
        this.o.logger.info({ session: s.id }, "closing idle session");
        s.bridge.close();
      }
    }
  }

  async shutdown(): Promise<void> {
    clearInterval(this.reaper);
    for (const s of this.sessions.values()) s.bridge.close();
  }
}

function makeBridge(
  sink: ClientSink,
  upstream: Awaited<ReturnType<typeof connectUpstream>>,
  ctx: SessionContext,
  logger: Logger,
): SessionBridge {
  return new SessionBridge(sink, upstream, ctx.guards, logger, { timeoutMs: ctx.timeoutMs });
}
