/*
 * The `/rpc` transport: plain JSON-RPC over HTTP POST (`/servers/{id}/rpc`, single requests or
 * batches), and the HTTP side of 2026-07-28 requests the gateway answers by translation. It reads
 * and checks the body, then hands each message to the relay (rpc/message-relay.ts) or to the
 * revision translator (rpc/revision-translator.ts) and `subscriptions/listen` to the listen
 * streams (rpc/listen-streams.ts), all over the gateway-held upstream sessions
 * (rpc/upstream-sessions.ts), and writes the answers back as JSON (or SSE for progress).
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import { isJsonRpcMessage, isRequest, JsonRpcErrorCode, jsonRpcError } from "@mcpgw/protocol";
import type { Logger } from "@mcpgw/telemetry";
import { GatewayError, sendGatewayError } from "../pipeline/errors.ts";
import { deliverToListeners, ListenStreams } from "../rpc/listen-streams.ts";
import { MessageRelay } from "../rpc/message-relay.ts";
import {
  checkStatelessRequest,
  claimInputRequest,
  RevisionTranslator,
  statelessCallStream,
} from "../rpc/revision-translator.ts";
import { type CallStream, type Rpc, requestUpstream, UpstreamSessionPool } from "../rpc/upstream-sessions.ts";
import { StdioUnavailable } from "../upstream/stdio-processes.ts";
import { batchTooLarge, MAX_BATCH_MESSAGES } from "./limits.ts";
import type { SessionContext } from "./message-sessions.ts";

export { checkStatelessRequest };

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

type Answer = Record<string, unknown>;

/** Writes a JSON body with its length. */
function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/**
 * Plain JSON-RPC over HTTP (`POST /servers/{id}/rpc`, single requests or batches): the gateway
 * keeps an MCP session with the upstream on the caller's behalf (initialized once, reused,
 * re-opened when it ends), relays each request with an id of its own and answers with the
 * upstream's response. Server-to-client requests (sampling, elicitation) cannot reach such a
 * caller and are refused upstream with an error.
 */
export class JsonRpcGateway {
  private readonly sessions: UpstreamSessionPool;
  private readonly relay: MessageRelay;
  private readonly translator: RevisionTranslator;
  private readonly listens: ListenStreams;

  constructor(private readonly o: RpcOptions) {
    this.sessions = new UpstreamSessionPool({
      replicaId: o.replicaId,
      idleTimeoutMs: o.idleTimeoutMs,
      onNotification: deliverToListeners,
      onServerRequest: claimInputRequest,
    });
    this.relay = new MessageRelay(this.sessions);
    this.translator = new RevisionTranslator({
      replicaId: o.replicaId,
      logger: o.logger,
      sessions: this.sessions,
      relay: this.relay,
    });
    this.listens = new ListenStreams(this.sessions, o.logger);
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
    if (!acceptable(req, res)) return;
    const read = await this.readBody(req, res);
    if (!read) return;
    const { body, raw } = read;
    // A retry of a request that asked for input continues on the replica that holds it.
    const owner = stateless ? this.translator.continuationOwner(body) : undefined;
    if (owner && (await this.o.replicas?.forward(req, res, owner, raw))) return;
    if (stateless && isJsonRpcMessage(body) && isRequest(body) && body.method === "subscriptions/listen") {
      const refusal = checkStatelessRequest(req.headers, body);
      if (!refusal) return this.listens.listen(body as Rpc, res, ctx);
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
      if (refusal) return sendJson(res, refusal.status, refusal.error);
    }
    const batch = Array.isArray(body);
    const messages = batch ? (body as unknown[]) : [body];
    const stream = stateless && !batch ? statelessCallStream(body, res, headers) : undefined;
    if (messages.length === 0) {
      sendGatewayError(res, new GatewayError("bad_request", "Invalid Request: empty batch"));
      return;
    }
    if (messages.length > MAX_BATCH_MESSAGES) return sendJson(res, 400, batchTooLarge(messages.length));
    const answers = await this.answerAll(messages, res, ctx, stateless, stream?.call ?? {});
    if (!answers) return;
    const out = answers.filter((a): a is Answer => a !== undefined);
    if (stream?.streaming()) {
      if (out[0]) res.write(`event: message\ndata: ${JSON.stringify(out[0])}\n\n`);
      res.end();
      return;
    }
    if (out.length === 0) {
      res.writeHead(202).end();
      return;
    }
    // 2026-07-28 answers an unknown method with HTTP 404.
    const unknownMethod =
      stateless &&
      !batch &&
      (out[0]?.error as { code?: number } | undefined)?.code === JsonRpcErrorCode.MethodNotFound;
    sendJson(res, unknownMethod ? 404 : 200, batch ? out : out[0]);
  }

  /** `GET …/rpc/introspection`: the methods and tools this caller may use. */
  async introspect(ctx: SessionContext): Promise<{ methods: readonly string[]; tools: string[] }> {
    const session = await this.sessions.get(ctx);
    const reply = await requestUpstream(
      session,
      { jsonrpc: "2.0", method: "tools/list", params: {} },
      ctx.timeoutMs,
    );
    const tools = ((reply.result as { tools?: Array<{ name?: unknown }> } | undefined)?.tools ?? [])
      .map((t) => t.name)
      .filter((n): n is string => typeof n === "string" && (ctx.guards.keepTool?.(n) ?? true));
    return { methods: RPC_METHODS, tools };
  }

  async shutdown(): Promise<void> {
    await this.sessions.shutdown();
  }

  /** The body as JSON and as bytes; undefined after answering 413 or 400. */
  private async readBody(
    req: IncomingMessage,
    res: ServerResponse,
  ): Promise<{ body: unknown; raw: Buffer } | undefined> {
    try {
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of req as AsyncIterable<Buffer>) {
        size += chunk.length;
        if (size > this.o.maxBodyBytes) {
          sendGatewayError(
            res,
            new GatewayError("too_large", `request body exceeds ${this.o.maxBodyBytes} bytes`, {
              headers: { connection: "close" },
            }),
          );
          return undefined;
        }
        chunks.push(chunk);
      }
      const raw = Buffer.concat(chunks);
      return { body: JSON.parse(raw.toString("utf8")), raw };
    } catch {
      sendGatewayError(res, new GatewayError("parse_error", "Parse error: request body is not valid JSON"));
      return undefined;
    }
  }

  /** Every message's answer, in order; undefined after answering 503/502 when the upstream failed. */
  private async answerAll(
    messages: unknown[],
    res: ServerResponse,
    ctx: SessionContext,
    stateless: boolean,
    call: CallStream,
  ): Promise<Array<Answer | undefined> | undefined> {
    try {
      return await Promise.all(
        messages.map((m) =>
          !isJsonRpcMessage(m)
            ? Promise.resolve(
                jsonRpcError(
                  null,
                  JsonRpcErrorCode.InvalidRequest,
                  "Invalid Request: not a JSON-RPC 2.0 message",
                ) as unknown as Answer,
              )
            : stateless
              ? this.translator.answer(m as unknown as Rpc, ctx, call)
              : this.relay.answer(m as unknown as Rpc, ctx, {}, call),
        ),
      );
    } catch (err) {
      if (err instanceof StdioUnavailable) {
        sendGatewayError(
          res,
          new GatewayError("unavailable", err.message, { retryAfterS: err.retryAfterS || undefined }),
        );
      } else {
        this.o.logger.warn({ err: (err as Error).message }, "json-rpc upstream session failed");
        sendGatewayError(res, new GatewayError("upstream_unavailable", "upstream MCP server is unavailable"));
      }
      return undefined;
    }
  }
}

/** Only JSON POSTs are taken: anything else is answered 405 or 415 (true: go on). */
function acceptable(req: IncomingMessage, res: ServerResponse): boolean {
  if (req.method !== "POST") {
    req.resume();
    sendGatewayError(res, new GatewayError("method_not_allowed", "use POST", { headers: { allow: "POST" } }));
    return false;
  }
  if (!(req.headers["content-type"] ?? "").toLowerCase().startsWith("application/json")) {
    req.resume();
    sendGatewayError(
      res,
      new GatewayError("unsupported_media_type", "Content-Type must be application/json"),
    );
    return false;
  }
  return true;
}
