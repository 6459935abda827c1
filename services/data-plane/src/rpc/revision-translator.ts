/*
 * MCP 2026-07-28 (stateless) for an upstream that speaks a session-based revision: the gateway
 * keeps the upstream session on the client's behalf (upstream-sessions.ts); `server/discover` is
 * answered from it, every other request is relayed and its result marked complete. Server-to-client
 * requests the upstream sends while a tool call, prompt or resource read is in flight become an
 * `InputRequiredResult`; the client's retry (`requestState` + `inputResponses`) carries the answers
 * back to the waiting upstream request, on the replica that holds it.
 */
import { randomUUID } from "node:crypto";
import type { IncomingHttpHeaders, ServerResponse } from "node:http";
import {
  decodeHeaderValue,
  isJsonRpcMessage,
  isRequest,
  JsonRpcErrorCode,
  type JsonRpcId,
  jsonRpcError,
  PROTOCOL_META_PREFIX,
  STATELESS_META,
  STATELESS_PROTOCOL_VERSION,
} from "@mcpgw/protocol";
import type { Logger } from "@mcpgw/telemetry";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { continuationState, parseContinuationState } from "../replica-ids.ts";
import type { SessionContext } from "../transports/message-sessions.ts";
import type { MessageRelay } from "./message-relay.ts";
import type { CallStream, Rpc, UpstreamSession, UpstreamSessionPool } from "./upstream-sessions.ts";

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

/** Results that are cacheable in 2026-07-28 (`ttlMs` and `cacheScope` required). */
const CACHEABLE_METHODS = new Set([
  "tools/list",
  "prompts/list",
  "resources/list",
  "resources/templates/list",
  "resources/read",
  "server/discover",
]);

/** Session-era methods a 2026-07-28 client must not send (answered 404, method not found). */
const REMOVED_IN_STATELESS = new Set([
  "initialize",
  "ping",
  "logging/setLevel",
  "resources/subscribe",
  "resources/unsubscribe",
]);

/**
 * A stateless client's request in flight on a session-based upstream that may ask for input:
 * server-to-client requests the upstream sends meanwhile are queued here and handed to the
 * client as an `InputRequiredResult`.
 */
export interface Exchange {
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

/** The rest of an exchange after the client was asked for input, until it retries. */
interface Continuation {
  session: UpstreamSession;
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

/**
 * The input capabilities (elicitation, sampling, roots) a 2026-07-28 request declares in its
 * `_meta`: the caller's upstream session is initialized with them.
 */
export function inputCapabilities(message: Rpc): Record<string, unknown> {
  const meta = message.params?._meta as Record<string, unknown> | undefined;
  const declared = meta?.[STATELESS_META.clientCapabilities];
  const capabilities: Record<string, unknown> = {};
  if (declared && typeof declared === "object")
    for (const c of Object.values(INPUT_METHODS))
      if (c in declared) capabilities[c] = (declared as Record<string, unknown>)[c];
  return capabilities;
}

/**
 * A server request the upstream sends while exactly one request is in flight, from a stateless
 * client able to answer: that request's client is asked (InputRequiredResult). Anything else
 * cannot be attributed (false: the upstream is refused).
 */
export function claimInputRequest(session: UpstreamSession, m: Rpc): boolean {
  const [exchange] = session.exchanges;
  const capability = INPUT_METHODS[m.method ?? ""];
  if (
    exchange &&
    capability &&
    session.exchanges.size === 1 &&
    session.pending.size === 1 &&
    exchange.capabilities[capability] !== undefined
  ) {
    exchange.queued.push(m);
    exchange.wake?.();
    return true;
  }
  return false;
}

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

/** `server/discover`, answered from the upstream session's `initialize` result. */
function discovered(id: JsonRpcId, session: UpstreamSession): Record<string, unknown> {
  const init = session.initializeResult as
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
  if (!isJsonRpcMessage(body) || !isRequest(body)) return undefined;
  const m = body;
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
 * Where a single stateless request's upstream work reports to: the response closing before its
 * answer cancels it, and a request with a progress token from a client that takes SSE gets its
 * progress as it comes, then its answer, on one event stream (`streaming()` says whether it began).
 */
export function statelessCallStream(
  body: unknown,
  res: ServerResponse,
  headers: IncomingHttpHeaders | undefined,
): { call: CallStream; streaming: () => boolean } {
  const call: CallStream = {};
  let streaming = false;
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
  return { call, streaming: () => streaming };
}

export interface TranslatorOptions {
  replicaId: string;
  logger: Logger;
  sessions: UpstreamSessionPool;
  relay: MessageRelay;
}

/** Answers 2026-07-28 requests over gateway-held sessions, holding the continuations of this replica. */
export class RevisionTranslator {
  private readonly continuations = new Map<string, Continuation>();

  constructor(private readonly o: TranslatorOptions) {}

  /** Answers one 2026-07-28 message (undefined for notifications and responses). */
  async answer(
    message: Rpc,
    ctx: SessionContext,
    call: CallStream = {},
  ): Promise<Record<string, unknown> | undefined> {
    const id = message.id ?? null;
    if (!isRequest(message)) return undefined;
    const givenMeta = (message.params?._meta as Record<string, unknown> | undefined) ?? {};
    const capabilities = inputCapabilities(message);
    const session = await this.o.sessions.get(ctx, capabilities);
    if (message.method === "server/discover") return discovered(id, session);
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
    if (!asks) return complete(await this.o.relay.answer(relayed, ctx, capabilities, call), message.method);
    return this.begin(id, relayed, message.method, session, capabilities, ctx, call);
  }

  /** The replica holding the continuation a stateless retry names, when it is another one. */
  continuationOwner(body: unknown): string | undefined {
    const state = (body as { params?: { requestState?: unknown } } | null)?.params?.requestState;
    const owner = parseContinuationState(state)?.owner;
    return owner && owner !== this.o.replicaId ? owner : undefined;
  }

  /**
   * A request the upstream may ask for input about while it works on it: such requests are
   * handed to the client as an InputRequiredResult and the upstream request waits for the
   * answers. It spans several client requests (legs): progress goes to the latest, and a leg
   * closed before its answer cancels it.
   */
  private begin(
    id: JsonRpcId,
    relayed: Rpc,
    method: string,
    session: UpstreamSession,
    capabilities: Record<string, unknown>,
    ctx: SessionContext,
    call: CallStream,
  ): Promise<Record<string, unknown>> {
    const exchange: Exchange = {
      capabilities,
      queued: [],
      wake: undefined,
      leg: call,
      cancel: new AbortController(),
      upstreamId: undefined,
    };
    call.closed?.addEventListener("abort", () => exchange.cancel.abort(), { once: true });
    session.exchanges.add(exchange);
    const reply = this.o.relay
      .answer(relayed, ctx, capabilities, {
        onProgress: (n) => exchange.leg?.onProgress?.(n),
        closed: exchange.cancel.signal,
        onSent: (upstreamId) => {
          exchange.upstreamId = upstreamId;
        },
      })
      .then(
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
    return this.settle(id, { session, exchange, reply, method }, ctx);
  }

  /** Waits for the upstream's answer or its next questions, whichever comes first. */
  private async settle(
    id: JsonRpcId,
    state: Pick<Continuation, "session" | "exchange" | "reply" | "method">,
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
      state.session.exchanges.delete(exchange);
      return complete({ ...next.done, id }, state.method) ?? {};
    }
    return this.askClient(id, state, next.ask, ctx);
  }

  /** Hands the upstream's questions to the client and keeps the exchange until it retries. */
  private askClient(
    id: JsonRpcId,
    state: Pick<Continuation, "session" | "exchange" | "reply" | "method">,
    questions: Rpc[],
    ctx: SessionContext,
  ): Record<string, unknown> {
    const { exchange } = state;
    const key = randomUUID();
    const asked = new Map<string, JsonRpcId>();
    const inputRequests: Record<string, unknown> = {};
    questions.forEach((m, i) => {
      asked.set(`input-${i}`, m.id as JsonRpcId);
      inputRequests[`input-${i}`] = { method: m.method, ...(m.params ? { params: m.params } : {}) };
    });
    // The upstream waits for the answers: its timeout is paused until the client comes back.
    const upstream = exchange.upstreamId ? state.session.pending.get(exchange.upstreamId) : undefined;
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
        requestState: continuationState(this.o.replicaId, key),
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
    const key = parseContinuationState(requestState)?.key;
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
    if (cont.exchange.upstreamId) cont.session.pending.get(cont.exchange.upstreamId)?.rearm();
    call.closed?.addEventListener("abort", () => cont.exchange.cancel.abort(), { once: true });
    await answerUpstream(cont, inputResponses);
    return this.settle(id, cont, ctx);
  }

  /** Drops a continuation the client never resumed: the upstream's questions get an error. */
  private abandon(key: string, reason: string): void {
    const cont = this.continuations.get(key);
    if (!cont) return;
    this.continuations.delete(key);
    clearTimeout(cont.timer);
    cont.session.exchanges.delete(cont.exchange);
    for (const upstreamId of cont.asked.values())
      void cont.session.transport
        .send({
          jsonrpc: "2.0",
          id: upstreamId,
          error: { code: JsonRpcErrorCode.InternalError, message: reason },
        } as JSONRPCMessage)
        .catch(() => {});
  }
}

/** The client's answers to the upstream's questions, each as the response to its request. */
async function answerUpstream(cont: Continuation, inputResponses: unknown): Promise<void> {
  const responses =
    inputResponses && typeof inputResponses === "object" ? (inputResponses as Record<string, unknown>) : {};
  for (const [inputKey, upstreamId] of cont.asked) {
    const answer = responses[inputKey];
    await cont.session.transport
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
}
