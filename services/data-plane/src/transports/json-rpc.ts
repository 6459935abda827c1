import { randomUUID } from "node:crypto";
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import {
  decodeHeaderValue,
  isJsonRpcMessage,
  JsonRpcErrorCode,
  type JsonRpcId,
  jsonRpcError,
  PROTOCOL_META_PREFIX,
  STATELESS_META,
  STATELESS_PROTOCOL_VERSION,
} from "@mcpgw/protocol";
import type { Logger } from "@mcpgw/telemetry";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { filterListResult, policyTarget } from "../policy-targets.ts";
import { StdioUnavailable } from "../upstream/stdio-processes.ts";
import { boundResponseBacklog } from "./client-backlog.ts";
import { sendJsonRpcError } from "./http-errors.ts";
import { batchTooLarge, InflightLimit, MAX_BATCH_MESSAGES, tooManyWaiting } from "./limits.ts";
import type { SessionContext } from "./message-sessions.ts";

const PROTOCOL_VERSION = "2025-11-25";

/** MCP methods a plain JSON-RPC client can use through `/rpc` (no server-to-client requests). */
export const RPC_METHODS = [
  "initialize",
  "ping",
  "tools/list",
  "tools/call",
  "resources/list",
  "resources/templates/list",
  "resources/read",
  "prompts/list",
  "prompts/get",
  "completion/complete",
  "logging/setLevel",
] as const;

interface Pending {
  resolve: (message: Record<string, unknown>) => void;
  timer: NodeJS.Timeout;
  /** Restarts the timeout (after a pause while the client was asked for input). */
  rearm: () => void;
}

/** How long a client asked for input (a person, maybe) may take before the exchange is dropped. */
const CLIENT_ANSWER_MS = 10 * 60_000;

/** Requests a 2026-07-28 server may ask its client to answer (returned as `InputRequiredResult`). */
const INPUT_METHODS: Record<string, "elicitation" | "sampling" | "roots"> = {
  "elicitation/create": "elicitation",
  "sampling/createMessage": "sampling",
  "roots/list": "roots",
};
/** Requests whose result may be `input_required` (multi round-trip requests). */
const MRTR_METHODS = new Set(["tools/call", "prompts/get", "resources/read"]);

/**
 * A stateless client's request in flight on a session-based upstream that may ask for input:
 * server-to-client requests the upstream sends meanwhile are queued here and handed to the
 * client as an `InputRequiredResult`.
 */
interface Exchange {
  capabilities: Record<string, unknown>;
  queued: Rpc[];
  wake: (() => void) | undefined;
  /** The HTTP exchange of the client's latest leg (its progress goes there). */
  leg: CallStream | undefined;
  /** Cancels the upstream request (the client closed a leg's stream before its answer). */
  cancel: AbortController;
  /** The upstream request's id (its timeout pauses while the client is asked). */
  upstreamId: string | undefined;
}

/**
 * What one client request gives the upstream request answering it: where its progress
 * notifications go, and a signal that the client went away (2026-07-28: closing the response
 * stream cancels the request).
 */
interface CallStream {
  onProgress?: ((notification: Rpc) => void) | undefined;
  closed?: AbortSignal | undefined;
  /** Told the id the request got upstream. */
  onSent?: ((upstreamId: string) => void) | undefined;
}

/** An open `subscriptions/listen` stream of a stateless client, fed from its upstream session. */
interface Listener {
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

/** The rest of an exchange after the client was asked for input, until it retries. */
interface Continuation {
  pool: PooledUpstream;
  exchange: Exchange;
  reply: Promise<Record<string, unknown>>;
  /** The method of the request the exchange answers. */
  method: string;
  /** Input request key → the id the upstream gave its request. */
  asked: Map<string, JsonRpcId>;
  principalId: string;
  target: string;
  timer: NodeJS.Timeout;
}

/** One upstream MCP session kept by the gateway for a plain JSON-RPC caller. */
interface PooledUpstream {
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

export interface RpcOptions {
  replicaId: string;
  logger: Logger;
  maxBodyBytes: number;
  idleTimeoutMs: number;
  /** Carries a stateless retry to the replica holding its continuation. */
  replicas?: {
    forward(req: IncomingMessage, res: ServerResponse, owner: string, body?: Buffer): Promise<boolean>;
  };
}

type Rpc = Record<string, unknown> & { id?: JsonRpcId; method?: string; params?: Record<string, unknown> };

/**
 * The input capabilities (elicitation, sampling, roots) a 2026-07-28 request declares in its
 * `_meta`: the caller's upstream session is initialized with them.
 */
function inputCapabilities(message: Rpc): Record<string, unknown> {
  const meta = message.params?._meta as Record<string, unknown> | undefined;
  const declared = meta?.[STATELESS_META.clientCapabilities];
  const capabilities: Record<string, unknown> = {};
  if (declared && typeof declared === "object")
    for (const c of Object.values(INPUT_METHODS))
      if (c in declared) capabilities[c] = (declared as Record<string, unknown>)[c];
  return capabilities;
}

/** Results that are cacheable in 2026-07-28 (`ttlMs` and `cacheScope` required). */
const CACHEABLE_METHODS = new Set([
  "tools/list",
  "prompts/list",
  "resources/list",
  "resources/templates/list",
  "resources/read",
  "server/discover",
]);

/**
 * A session-based answer in 2026-07-28 terms: a result is marked complete, and a cacheable one
 * says it may not be cached (a session-based upstream gives no cache hints; the answer may
 * depend on the caller's policy).
 */
function complete(
  answer: Record<string, unknown> | undefined,
  method: string,
): Record<string, unknown> | undefined {
  const result = answer?.result as Record<string, unknown> | undefined;
  if (!result || typeof result !== "object") return answer;
  const cache = CACHEABLE_METHODS.has(method) ? { ttlMs: 0, cacheScope: "private" } : {};
  return { ...answer, result: { resultType: "complete", ...cache, ...result } };
}

/** Session-era methods a 2026-07-28 client must not send (answered 404, method not found). */
const REMOVED_IN_STATELESS = new Set([
  "initialize",
  "ping",
  "logging/setLevel",
  "resources/subscribe",
  "resources/unsubscribe",
]);

/**
 * The checks a 2026-07-28 server makes before it answers (routing headers agree with the body,
 * `_meta` names the revision and the client's capabilities, session-era methods are gone), made
 * by the gateway for requests it answers by translation. Undefined: the request may go on.
 */
export function checkStatelessRequest(
  headers: IncomingHttpHeaders,
  body: unknown,
): { status: number; error: ReturnType<typeof jsonRpcError> } | undefined {
  if (Array.isArray(body))
    return {
      status: 400,
      error: jsonRpcError(
        null,
        JsonRpcErrorCode.InvalidRequest,
        "Invalid Request: 2026-07-28 has no batches",
      ),
    };
  const m = body as Rpc | null;
  if (!m || typeof m !== "object" || m.id === undefined || typeof m.method !== "string") return undefined;
  const id = m.id;
  const refuse = (status: number, code: number, message: string) => ({
    status,
    error: jsonRpcError(id, code, message),
  });
  if (REMOVED_IN_STATELESS.has(m.method))
    return refuse(
      404,
      JsonRpcErrorCode.MethodNotFound,
      `Method not found: ${m.method} is not part of 2026-07-28`,
    );
  if (headers["mcp-method"] !== m.method)
    return refuse(
      400,
      JsonRpcErrorCode.HeaderMismatch,
      "Mcp-Method header is missing or does not match the body",
    );
  const named =
    m.method === "tools/call" || m.method === "prompts/get"
      ? m.params?.name
      : m.method === "resources/read"
        ? m.params?.uri
        : undefined;
  if (named !== undefined) {
    const given = headers["mcp-name"];
    if (typeof given !== "string" || decodeHeaderValue(given) !== named)
      return refuse(
        400,
        JsonRpcErrorCode.HeaderMismatch,
        "Mcp-Name header is missing or does not match the body",
      );
  }
  const meta = m.params?._meta as Record<string, unknown> | undefined;
  const version = meta?.[STATELESS_META.protocolVersion];
  const capabilities = meta?.[STATELESS_META.clientCapabilities];
  if (typeof version !== "string" || !capabilities || typeof capabilities !== "object")
    return refuse(
      400,
      JsonRpcErrorCode.InvalidParams,
      "params._meta must name io.modelcontextprotocol/protocolVersion and clientCapabilities",
    );
  if (version !== headers["mcp-protocol-version"])
    return refuse(
      400,
      JsonRpcErrorCode.HeaderMismatch,
      "MCP-Protocol-Version header does not match params._meta",
    );
  return undefined;
}

/**
 * Plain JSON-RPC over HTTP (`POST /servers/{id}/rpc`, single requests or batches): the gateway
 * keeps an MCP session with the upstream on the caller's behalf (initialized once, reused,
 * re-opened when it ends), relays each request with an id of its own and answers with the
 * upstream's response. Server-to-client requests (sampling, elicitation) cannot reach such a
 * caller and are refused upstream with an error.
 */
export class JsonRpcGateway {
  private readonly pools = new Map<string, Promise<PooledUpstream>>();
  private readonly continuations = new Map<string, Continuation>();
  private readonly reaper: NodeJS.Timeout;

  constructor(private readonly o: RpcOptions) {
    this.reaper = setInterval(() => void this.reap(), Math.min(30_000, Math.max(1000, o.idleTimeoutMs / 4)));
    this.reaper.unref();
  }

  private async open(ctx: SessionContext, capabilities: Record<string, unknown>): Promise<PooledUpstream> {
    const transport = await ctx.open(`rpc.${this.o.replicaId}.${randomUUID()}`);
    const pool: PooledUpstream = {
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
    transport.onmessage = (message) => {
      const m = message as Rpc;
      if (m.method !== undefined && m.id === undefined) {
        if (m.method === "notifications/progress") pool.progress.get(m.params?.progressToken)?.(m);
        else if (LISTENED[m.method]) this.notifyListeners(pool, m);
        return;
      }
      if (m.method === undefined && typeof m.id === "string") {
        const p = pool.pending.get(m.id);
        if (p) {
          clearTimeout(p.timer);
          pool.pending.delete(m.id);
          p.resolve(m);
        }
      } else if (m.method !== undefined && m.id !== undefined) {
        if (m.method === "ping") {
          void transport.send({ jsonrpc: "2.0", id: m.id, result: {} } as JSONRPCMessage).catch(() => {});
          return;
        }
        // Asked while exactly one request is in flight, from a stateless client able to answer:
        // that request's client is asked (InputRequiredResult). Anything else cannot be attributed.
        const [exchange] = pool.exchanges;
        const capability = INPUT_METHODS[m.method];
        if (
          exchange &&
          capability &&
          pool.exchanges.size === 1 &&
          pool.pending.size === 1 &&
          exchange.capabilities[capability] !== undefined
        ) {
          exchange.queued.push(m);
          exchange.wake?.();
          return;
        }
        void transport
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
    };
    transport.onclose = () => {
      pool.closed = true;
      // The upstream session is gone: listeners end, and listen again on a fresh one.
      for (const l of pool.listeners) l.res.end();
      pool.listeners.clear();
      for (const p of pool.pending.values()) {
        clearTimeout(p.timer);
        p.resolve({
          error: { code: JsonRpcErrorCode.UpstreamUnavailable, message: "upstream session ended" },
        });
      }
      pool.pending.clear();
    };
    const init = await this.request(
      pool,
      {
        jsonrpc: "2.0",
        method: "initialize",
        params: {
          protocolVersion: PROTOCOL_VERSION,
          capabilities,
          clientInfo: { name: "mcpgw-json-rpc", version: "1.0.0" },
        },
      },
      ctx.timeoutMs,
    );
    if (!("result" in init)) {
      await transport.close().catch(() => {});
      throw new Error("upstream refused initialize");
    }
    pool.initializeResult = init.result;
    await transport.send({ jsonrpc: "2.0", method: "notifications/initialized" } as JSONRPCMessage);
    return pool;
  }

  private request(
    pool: PooledUpstream,
    message: Rpc,
    timeoutMs: number,
    call: CallStream = {},
  ): Promise<Record<string, unknown>> {
    const id = `gw-${randomUUID()}`;
    const token = (message.params?._meta as { progressToken?: unknown } | undefined)?.progressToken;
    if (call.onProgress && token !== undefined) pool.progress.set(token, call.onProgress);
    call.onSent?.(id);
    const settled = new Promise<Record<string, unknown>>((resolve) => {
      const expire = () => {
        pool.pending.delete(id);
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
      pool.pending.set(id, pending);
      // The client went away: the upstream is told to stop (notifications/cancelled).
      call.closed?.addEventListener(
        "abort",
        () => {
          const p = pool.pending.get(id);
          if (!p) return;
          clearTimeout(p.timer);
          pool.pending.delete(id);
          void pool.transport
            .send({
              jsonrpc: "2.0",
              method: "notifications/cancelled",
              params: { requestId: id, reason: "the client closed its stream" },
            } as JSONRPCMessage)
            .catch(() => {});
          resolve({ error: { code: JsonRpcErrorCode.InternalError, message: "cancelled by the client" } });
        },
        { once: true },
      );
      pool.transport.send({ ...message, id } as JSONRPCMessage).catch(() => {
        clearTimeout(pending.timer);
        pool.pending.delete(id);
        resolve({
          error: {
            code: JsonRpcErrorCode.UpstreamUnavailable,
            message: "upstream MCP server is unavailable",
          },
        });
      });
    });
    if (token !== undefined && call.onProgress) void settled.then(() => pool.progress.delete(token));
    return settled;
  }

  /**
   * The caller's upstream session. Stateless callers able to answer server requests get one
   * initialized with those capabilities (servers offer some tools only to such clients).
   */
  private async pool(
    ctx: SessionContext,
    capabilities: Record<string, unknown> = {},
  ): Promise<PooledUpstream> {
    const key = `${ctx.principal.id}\u0000${ctx.target}\u0000${Object.keys(capabilities).sort().join(",")}`;
    let pending = this.pools.get(key);
    if (pending) {
      const existing = await pending.catch(() => undefined);
      if (existing && !existing.closed) {
        existing.lastUsed = Date.now();
        return existing;
      }
      this.pools.delete(key);
    }
    pending = this.open(ctx, capabilities);
    this.pools.set(key, pending);
    pending.catch(() => this.pools.delete(key));
    return pending;
  }

  /** Answers one message (undefined for notifications). */
  private async answer(
    message: Rpc,
    ctx: SessionContext,
    stateless = false,
    capabilities: Record<string, unknown> = {},
    call: CallStream = {},
  ): Promise<Record<string, unknown> | undefined> {
    const id = message.id ?? null;
    if (stateless) return this.answerStateless(message, ctx, call);
    const isRequest = message.id !== undefined;
    const method = message.method;
    if (method === undefined) return undefined; // responses have nowhere to go
    if (method === "notifications/initialized") return undefined;
    const pool = await this.pool(ctx, capabilities);
    if (!isRequest) {
      await pool.transport.send(message as JSONRPCMessage).catch(() => {});
      return undefined;
    }
    // The gateway already initialized the upstream session: answer from it.
    if (method === "initialize") return { jsonrpc: "2.0", id, result: pool.initializeResult };
    const tool =
      method === "tools/call" && typeof message.params?.name === "string"
        ? (message.params.name as string)
        : undefined;
    const target = policyTarget(method, message.params);
    if (target !== undefined && ctx.guards.authorizeTool) {
      const decision = ctx.guards.authorizeTool(target);
      if (!decision.allowed)
        return jsonRpcError(id, JsonRpcErrorCode.Forbidden, decision.reason, {
          policy: decision.rule,
        }) as unknown as Record<string, unknown>;
    }
    // The slot is taken before the rate-limit check: requests waiting on it count too.
    const release = await pool.slots.acquire();
    if (!release) return tooManyWaiting(id) as unknown as Record<string, unknown>;
    let reply: Record<string, unknown>;
    try {
      const refused = await this.admit(id, method, tool, ctx);
      if (refused) return refused;
      reply = await this.request(pool, message, ctx.timeoutMs, call);
    } finally {
      release();
    }
    const result = ctx.guards.keepTool
      ? filterListResult(method, reply.result, ctx.guards.keepTool)
      : reply.result;
    return "error" in reply ? { jsonrpc: "2.0", id, error: reply.error } : { jsonrpc: "2.0", id, result };
  }

  /** The rate limits' refusal of one request, if they refuse it. */
  private async admit(
    id: JsonRpcId,
    method: string,
    tool: string | undefined,
    ctx: SessionContext,
  ): Promise<Record<string, unknown> | undefined> {
    const admission = await ctx.guards.admit?.({ method, tool });
    if (!admission || admission.allowed) return undefined;
    return jsonRpcError(
      id,
      JsonRpcErrorCode.RateLimited,
      `rate limit exceeded; retry in ${admission.retryAfterS}s`,
      {
        retry_after: admission.retryAfterS,
        rule: admission.rule,
      },
    ) as unknown as Record<string, unknown>;
  }

  /**
   * MCP 2026-07-28 (stateless) for an upstream that speaks a session-based revision: the gateway
   * keeps the upstream session on the client's behalf; `server/discover` is answered from it,
   * every other request is relayed and its result marked complete. Server-to-client requests
   * the upstream sends while a tool call, prompt or resource read is in flight become an
   * `InputRequiredResult`; the client's retry carries the answers back to the waiting upstream.
   */
  private async answerStateless(
    message: Rpc,
    ctx: SessionContext,
    call: CallStream = {},
  ): Promise<Record<string, unknown> | undefined> {
    const id = message.id ?? null;
    if (message.method === undefined || message.id === undefined) return undefined;
    const givenMeta = (message.params?._meta as Record<string, unknown> | undefined) ?? {};
    const capabilities = inputCapabilities(message);
    const pool = await this.pool(ctx, capabilities);
    if (message.method === "server/discover") {
      const init = pool.initializeResult as
        | { capabilities?: unknown; serverInfo?: unknown; instructions?: unknown }
        | undefined;
      return {
        jsonrpc: "2.0",
        id,
        result: {
          resultType: "complete",
          ttlMs: 0,
          cacheScope: "private",
          supportedVersions: [STATELESS_PROTOCOL_VERSION],
          capabilities: init?.capabilities ?? {},
          ...(init?.instructions ? { instructions: init.instructions } : {}),
          _meta: { [STATELESS_META.serverInfo]: init?.serverInfo ?? {} },
        },
      };
    }
    // Per-request negotiation keys mean nothing to a session-based server.
    const meta = { ...givenMeta };
    for (const key of Object.keys(meta)) if (key.startsWith(PROTOCOL_META_PREFIX)) delete meta[key];
    let params: Record<string, unknown> | undefined;
    if (message.params) {
      const { _meta: _dropped, inputResponses, requestState, ...rest } = message.params;
      if (requestState !== undefined || inputResponses !== undefined)
        return this.resume(id, requestState, inputResponses, ctx, call);
      params = Object.keys(meta).length > 0 ? { ...rest, _meta: meta } : rest;
    }
    const relayed = { ...message, ...(params ? { params } : {}) };
    const asks = MRTR_METHODS.has(message.method) && Object.keys(capabilities).length > 0;
    if (!asks) return complete(await this.answer(relayed, ctx, false, capabilities, call), message.method);
    // The upstream may ask for input while it works on this request: hand such requests to the
    // client as an InputRequiredResult and keep the upstream request waiting for the answers.
    // It spans several client requests (legs): progress goes to the latest, and a leg closed
    // before its answer cancels it.
    const exchange: Exchange = {
      capabilities,
      queued: [],
      wake: undefined,
      leg: call,
      cancel: new AbortController(),
      upstreamId: undefined,
    };
    call.closed?.addEventListener("abort", () => exchange.cancel.abort(), { once: true });
    pool.exchanges.add(exchange);
    const reply = this.answer(relayed, ctx, false, capabilities, {
      onProgress: (n) => exchange.leg?.onProgress?.(n),
      closed: exchange.cancel.signal,
      onSent: (upstreamId) => {
        exchange.upstreamId = upstreamId;
      },
    }).then(
      (a) => a ?? {},
      // Never a rejection (nobody else awaits it): the upstream session failing is an answer too.
      (err: Error) => {
        this.o.logger.warn({ err: err.message }, "stateless exchange failed upstream");
        return {
          error: {
            code: JsonRpcErrorCode.UpstreamUnavailable,
            message: "upstream MCP server is unavailable",
          },
        };
      },
    );
    return this.settle(id, { pool, exchange, reply, method: message.method }, ctx);
  }

  /** Waits for the upstream's answer or its next questions, whichever comes first. */
  private async settle(
    id: JsonRpcId,
    state: Pick<Continuation, "pool" | "exchange" | "reply" | "method">,
    ctx: SessionContext,
  ): Promise<Record<string, unknown>> {
    const { exchange } = state;
    const next = await new Promise<{ done: Record<string, unknown> } | { ask: Rpc[] }>((resolve) => {
      if (exchange.queued.length > 0) return resolve({ ask: exchange.queued.splice(0) });
      exchange.wake = () => resolve({ ask: exchange.queued.splice(0) });
      void state.reply.then((done) => resolve({ done }));
    });
    exchange.wake = undefined;
    if ("done" in next) {
      state.pool.exchanges.delete(exchange);
      return complete({ ...next.done, id }, state.method) ?? {};
    }
    const key = randomUUID();
    const asked = new Map<string, JsonRpcId>();
    const inputRequests: Record<string, unknown> = {};
    next.ask.forEach((m, i) => {
      asked.set(`input-${i}`, m.id as JsonRpcId);
      inputRequests[`input-${i}`] = { method: m.method, ...(m.params ? { params: m.params } : {}) };
    });
    // The upstream waits for the answers: its timeout is paused until the client comes back.
    const upstream = exchange.upstreamId ? state.pool.pending.get(exchange.upstreamId) : undefined;
    if (upstream) clearTimeout(upstream.timer);
    const timer = setTimeout(
      () => this.abandon(key, "the client did not answer in time"),
      Math.max(ctx.timeoutMs, CLIENT_ANSWER_MS),
    );
    timer.unref();
    this.continuations.set(key, {
      ...state,
      asked,
      principalId: ctx.principal.id,
      target: ctx.target,
      timer,
    });
    return {
      jsonrpc: "2.0",
      id,
      result: {
        resultType: "input_required",
        inputRequests,
        requestState: `mrtr1.${this.o.replicaId}.${key}`,
      },
    };
  }

  /** A retry carrying the client's answers: they go to the upstream, which then goes on. */
  private async resume(
    id: JsonRpcId,
    requestState: unknown,
    inputResponses: unknown,
    ctx: SessionContext,
    call: CallStream = {},
  ): Promise<Record<string, unknown>> {
    const key =
      typeof requestState === "string" ? /^mrtr1\..+\.([0-9a-f-]{36})$/.exec(requestState)?.[1] : undefined;
    const cont = key ? this.continuations.get(key) : undefined;
    // Bound to the principal and target it was issued for: another caller's state is unknown.
    if (!key || !cont || cont.principalId !== ctx.principal.id || cont.target !== ctx.target) {
      return jsonRpcError(
        id,
        JsonRpcErrorCode.InvalidParams,
        "requestState is unknown or expired: send the request again without requestState and inputResponses",
      ) as unknown as Record<string, unknown>;
    }
    this.continuations.delete(key);
    clearTimeout(cont.timer);
    cont.exchange.leg = call;
    // The upstream works again: its timeout runs again.
    if (cont.exchange.upstreamId) cont.pool.pending.get(cont.exchange.upstreamId)?.rearm();
    call.closed?.addEventListener("abort", () => cont.exchange.cancel.abort(), { once: true });
    const responses =
      inputResponses && typeof inputResponses === "object" ? (inputResponses as Record<string, unknown>) : {};
    for (const [inputKey, upstreamId] of cont.asked) {
      const answer = responses[inputKey];
      await cont.pool.transport
        .send(
          (answer && typeof answer === "object"
            ? { jsonrpc: "2.0", id: upstreamId, result: answer }
            : {
                jsonrpc: "2.0",
                id: upstreamId,
                error: {
                  code: JsonRpcErrorCode.InvalidParams,
                  message: `the client gave no answer to ${inputKey}`,
                },
              }) as JSONRPCMessage,
        )
        .catch(() => {});
    }
    return this.settle(id, cont, ctx);
  }

  /**
   * `subscriptions/listen` (2026-07-28) for a session-based upstream: an SSE stream acknowledging
   * the filters the upstream can honour (its `listChanged` and `subscribe` capabilities), then
   * carrying the matching notifications of the caller's upstream session, until the client
   * closes it. Resource subscriptions are made upstream (`resources/subscribe`) while a stream
   * wants them.
   */
  private async listen(message: Rpc, res: ServerResponse, ctx: SessionContext): Promise<void> {
    // Registered first: a client gone during the awaits below must not leave a listener behind.
    let release: (() => void) | undefined;
    let gone = false;
    res.once("close", () => {
      gone = true;
      release?.();
    });
    const id = message.id ?? null;
    if (ctx.guards.admit) {
      const admission = await ctx.guards.admit({ method: "subscriptions/listen" });
      if (admission && !admission.allowed) {
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
        return;
      }
    }
    let pool: PooledUpstream;
    try {
      // The same upstream session as the caller's other requests (notifications are per session).
      pool = await this.pool(ctx, inputCapabilities(message));
    } catch (err) {
      this.o.logger.warn({ err: (err as Error).message }, "listen: upstream session failed");
      sendJsonRpcError(
        res,
        502,
        id,
        JsonRpcErrorCode.UpstreamUnavailable,
        "upstream MCP server is unavailable",
      );
      return;
    }
    const wanted = (message.params?.notifications ?? {}) as {
      toolsListChanged?: boolean;
      promptsListChanged?: boolean;
      resourcesListChanged?: boolean;
      resourceSubscriptions?: unknown;
    };
    const caps =
      (
        pool.initializeResult as {
          capabilities?: Record<string, { listChanged?: boolean; subscribe?: boolean }>;
        }
      )?.capabilities ?? {};
    // Resources the caller may not read are not subscribed (nor acknowledged).
    const readable = (uri: string) =>
      !ctx.guards.authorizeTool || ctx.guards.authorizeTool(`resource:${uri}`).allowed;
    const uris = Array.isArray(wanted.resourceSubscriptions)
      ? wanted.resourceSubscriptions.filter((u): u is string => typeof u === "string" && readable(u))
      : [];
    const listener: Listener = {
      res,
      ready: false,
      subscriptionId: id,
      filter: {
        tools: wanted.toolsListChanged === true && caps.tools?.listChanged === true,
        prompts: wanted.promptsListChanged === true && caps.prompts?.listChanged === true,
        resources: wanted.resourcesListChanged === true && caps.resources?.listChanged === true,
        uris: new Set(caps.resources?.subscribe === true ? uris : []),
      },
    };
    const others = () => [...pool.listeners].filter((l) => l !== listener);
    pool.listeners.add(listener);
    pool.lastUsed = Date.now();
    release = () => {
      if (!pool.listeners.delete(listener)) return;
      pool.lastUsed = Date.now();
      for (const uri of listener.filter.uris)
        if (!pool.closed && !others().some((l) => l.filter.uris.has(uri)))
          void this.request(
            pool,
            { jsonrpc: "2.0", method: "resources/unsubscribe", params: { uri } },
            ctx.timeoutMs,
          );
    };
    if (gone) return release();
    for (const uri of listener.filter.uris)
      if (!others().some((l) => l.filter.uris.has(uri)))
        await this.request(
          pool,
          { jsonrpc: "2.0", method: "resources/subscribe", params: { uri } },
          ctx.timeoutMs,
        );
    if (gone || res.destroyed) return release();
    boundResponseBacklog(res, (buffered) =>
      this.o.logger.warn(
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
    this.writeEvent(listener, {
      jsonrpc: "2.0",
      method: "notifications/subscriptions/acknowledged",
      params: { notifications: acknowledged },
    });
    listener.ready = true;
  }

  /** Hands an upstream notification to the listen streams that asked for it. */
  private notifyListeners(pool: PooledUpstream, m: Rpc): void {
    const flag = LISTENED[m.method ?? ""];
    for (const l of pool.listeners) {
      if (!l.ready) continue;
      const wants =
        flag === "uris"
          ? l.filter.uris.has(String(m.params?.uri ?? ""))
          : flag !== undefined && l.filter[flag];
      if (wants) this.writeEvent(l, { jsonrpc: "2.0", method: m.method, params: { ...m.params } });
    }
  }

  /** One SSE event on a listen stream, tagged with its subscription id. */
  private writeEvent(
    l: Listener,
    notification: { jsonrpc: string; method?: string; params: Record<string, unknown> },
  ) {
    const meta = { ...((notification.params._meta as Record<string, unknown> | undefined) ?? {}) };
    meta[STATELESS_META.subscriptionId] = l.subscriptionId;
    l.res.write(
      `event: message\ndata: ${JSON.stringify({ ...notification, params: { ...notification.params, _meta: meta } })}\n\n`,
    );
  }

  /** Drops a continuation the client never resumed: the upstream's questions get an error. */
  private abandon(key: string, reason: string): void {
    const cont = this.continuations.get(key);
    if (!cont) return;
    this.continuations.delete(key);
    clearTimeout(cont.timer);
    cont.pool.exchanges.delete(cont.exchange);
    for (const upstreamId of cont.asked.values())
      void cont.pool.transport
        .send({
          jsonrpc: "2.0",
          id: upstreamId,
          error: { code: JsonRpcErrorCode.InternalError, message: reason },
        } as JSONRPCMessage)
        .catch(() => {});
  }

  /** The replica holding the continuation a stateless retry names, when it is another one. */
  private continuationOwner(body: unknown): string | undefined {
    const state = (body as { params?: { requestState?: unknown } } | null)?.params?.requestState;
    const owner = typeof state === "string" ? /^mrtr1\.(.+)\.[0-9a-f-]{36}$/.exec(state)?.[1] : undefined;
    return owner && owner !== this.o.replicaId ? owner : undefined;
  }

  /** `POST …/mcp` from a 2026-07-28 client to a session-based upstream: one request, a JSON answer. */
  async handleStateless(req: IncomingMessage, res: ServerResponse, ctx: SessionContext): Promise<void> {
    return this.handle(req, res, ctx, true);
  }

  /** `POST /servers/{id}/rpc` (and `/rpc/batch`): one message or a batch. */
  async handle(
    req: IncomingMessage,
    res: ServerResponse,
    ctx: SessionContext,
    stateless = false,
  ): Promise<void> {
    if (req.method !== "POST") {
      req.resume();
      sendJsonRpcError(res, 405, null, JsonRpcErrorCode.InvalidRequest, "use POST", { allow: "POST" });
      return;
    }
    if (!(req.headers["content-type"] ?? "").toLowerCase().startsWith("application/json")) {
      req.resume();
      sendJsonRpcError(
        res,
        415,
        null,
        JsonRpcErrorCode.InvalidRequest,
        "Content-Type must be application/json",
      );
      return;
    }
    let body: unknown;
    let raw: Buffer;
    try {
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of req as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > this.o.maxBodyBytes) {
          sendJsonRpcError(
            res,
            413,
            null,
            JsonRpcErrorCode.RequestTooLarge,
            `request body exceeds ${this.o.maxBodyBytes} bytes`,
            { connection: "close" },
          );
          return;
        }
        chunks.push(chunk);
      }
      raw = Buffer.concat(chunks);
      body = JSON.parse(raw.toString("utf8"));
    } catch {
      sendJsonRpcError(
        res,
        400,
        null,
        JsonRpcErrorCode.ParseError,
        "Parse error: request body is not valid JSON",
      );
      return;
    }
    // A retry of a request that asked for input continues on the replica that holds it.
    const owner = stateless ? this.continuationOwner(body) : undefined;
    if (owner && (await this.o.replicas?.forward(req, res, owner, raw))) return;
    if (
      stateless &&
      (body as Rpc | null)?.method === "subscriptions/listen" &&
      (body as Rpc).id !== undefined
    ) {
      const refusal = checkStatelessRequest(req.headers, body);
      if (!refusal) return this.listen(body as Rpc, res, ctx);
      res.writeHead(refusal.status, { "content-type": "application/json" });
      res.end(JSON.stringify(refusal.error));
      return;
    }
    await this.respond(body, res, ctx, stateless, req.headers);
  }

  /** Answers an already-parsed body (one message or a batch) with JSON. */
  async respond(
    body: unknown,
    res: ServerResponse,
    ctx: SessionContext,
    stateless = false,
    headers?: IncomingHttpHeaders,
  ): Promise<void> {
    if (stateless && headers) {
      const refusal = checkStatelessRequest(headers, body);
      if (refusal) {
        const text = JSON.stringify(refusal.error);
        res.writeHead(refusal.status, {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(text),
        });
        res.end(text);
        return;
      }
    }
    const batch = Array.isArray(body);
    const messages = batch ? (body as unknown[]) : [body];
    // A stateless request with a progress token, from a client that takes SSE, gets its
    // progress as it comes, then its answer, on one event stream; closing it cancels the request.
    const call: CallStream = {};
    let streaming = false;
    if (stateless && !batch) {
      const closed = new AbortController();
      res.once("close", () => {
        if (!res.writableFinished) closed.abort();
      });
      call.closed = closed.signal;
      const token = ((body as Rpc | null)?.params?._meta as { progressToken?: unknown } | undefined)
        ?.progressToken;
      if (token !== undefined && /text\/event-stream/.test(String(headers?.accept ?? ""))) {
        call.onProgress = (notification) => {
          if (!streaming) {
            res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
            streaming = true;
          }
          res.write(`event: message\ndata: ${JSON.stringify(notification)}\n\n`);
        };
      }
    }
    if (messages.length === 0) {
      sendJsonRpcError(res, 400, null, JsonRpcErrorCode.InvalidRequest, "Invalid Request: empty batch");
      return;
    }
    if (messages.length > MAX_BATCH_MESSAGES) {
      const text = JSON.stringify(batchTooLarge(messages.length));
      res.writeHead(400, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
      res.end(text);
      return;
    }
    let answers: Array<Record<string, unknown> | undefined>;
    try {
      answers = await Promise.all(
        messages.map((m) =>
          isJsonRpcMessage(m)
            ? this.answer(m as unknown as Rpc, ctx, stateless, {}, call)
            : Promise.resolve(
                jsonRpcError(
                  null,
                  JsonRpcErrorCode.InvalidRequest,
                  "Invalid Request: not a JSON-RPC 2.0 message",
                ) as unknown as Record<string, unknown>,
              ),
        ),
      );
    } catch (err) {
      if (err instanceof StdioUnavailable) {
        sendJsonRpcError(
          res,
          503,
          null,
          JsonRpcErrorCode.UpstreamUnavailable,
          err.message,
          err.retryAfterS ? { "retry-after": String(err.retryAfterS) } : {},
        );
      } else {
        this.o.logger.warn({ err: (err as Error).message }, "json-rpc upstream session failed");
        sendJsonRpcError(
          res,
          502,
          null,
          JsonRpcErrorCode.UpstreamUnavailable,
          "upstream MCP server is unavailable",
        );
      }
      return;
    }
    const out = answers.filter((a): a is Record<string, unknown> => a !== undefined);
    if (streaming) {
      if (out[0]) res.write(`event: message\ndata: ${JSON.stringify(out[0])}\n\n`);
      res.end();
      return;
    }
    if (out.length === 0) {
      res.writeHead(202).end();
      return;
    }
    const text = JSON.stringify(batch ? out : out[0]);
    // 2026-07-28 answers an unknown method with HTTP 404.
    const unknownMethod =
      stateless &&
      !batch &&
      (out[0]?.error as { code?: number } | undefined)?.code === JsonRpcErrorCode.MethodNotFound;
    res.writeHead(unknownMethod ? 404 : 200, {
      "content-type": "application/json",
      "content-length": Buffer.byteLength(text),
    });
    res.end(text);
  }

  /** `GET …/rpc/introspection`: the methods and tools this caller may use. */
  async introspect(ctx: SessionContext): Promise<{ methods: readonly string[]; tools: string[] }> {
    const pool = await this.pool(ctx);
    const reply = await this.request(
      pool,
      { jsonrpc: "2.0", method: "tools/list", params: {} },
      ctx.timeoutMs,
    );
    const tools = ((reply.result as { tools?: Array<{ name?: unknown }> } | undefined)?.tools ?? [])
      .map((t) => t.name)
      .filter((n): n is string => typeof n === "string" && (ctx.guards.keepTool?.(n) ?? true));
    return { methods: RPC_METHODS, tools };
  }

  private async reap() {
    const cutoff = Date.now() - this.o.idleTimeoutMs;
    for (const [key, pending] of this.pools) {
      const pool = await pending.catch(() => undefined);
      if (!pool || pool.closed || (pool.lastUsed < cutoff && pool.listeners.size === 0)) {
        this.pools.delete(key);
        await pool?.transport.close().catch(() => {});
      }
    }
  }

  async shutdown(): Promise<void> {
    clearInterval(this.reaper);
    for (const pending of this.pools.values()) {
      const pool = await pending.catch(() => undefined);
      await pool?.transport.close().catch(() => {});
    }
    this.pools.clear();
  }
}
