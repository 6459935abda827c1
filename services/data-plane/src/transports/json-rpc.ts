import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { isJsonRpcMessage, JsonRpcErrorCode, type JsonRpcId, jsonRpcError } from "@mcpgw/protocol";
import type { Logger } from "@mcpgw/telemetry";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { filterListResult, policyTarget } from "../policy-targets.ts";
import { StdioUnavailable } from "../upstream/stdio-processes.ts";
import { sendJsonRpcError } from "./http-errors.ts";
import type { SessionContext } from "./message-sessions.ts";

const PROTOCOL_VERSION = "2025-11-25";
const STATELESS_VERSION = "2026-07-28";

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
}

/** One upstream MCP session kept by the gateway for a plain JSON-RPC caller. */
interface PooledUpstream {
  transport: Transport;
  pending: Map<string, Pending>;
  initializeResult: unknown;
  lastUsed: number;
  closed: boolean;
}

export interface RpcOptions {
  replicaId: string;
  logger: Logger;
  maxBodyBytes: number;
  idleTimeoutMs: number;
}

type Rpc = Record<string, unknown> & { id?: JsonRpcId; method?: string; params?: Record<string, unknown> };

/**
 * Plain JSON-RPC over HTTP (`POST /servers/{id}/rpc`, single requests or batches): the gateway
 * keeps an MCP session with the upstream on the caller's behalf (initialized once, reused,
 * re-opened when it ends), relays each request with an id of its own and answers with the
 * upstream's response. Server-to-client requests (sampling, elicitation) cannot reach such a
 * caller and are refused upstream with an error.
 */
export class JsonRpcGateway {
  private readonly pools = new Map<string, Promise<PooledUpstream>>();
  private readonly reaper: NodeJS.Timeout;

  constructor(private readonly o: RpcOptions) {
    this.reaper = setInterval(() => void this.reap(), Math.min(30_000, Math.max(1000, o.idleTimeoutMs / 4)));
    this.reaper.unref();
  }

  private async open(ctx: SessionContext): Promise<PooledUpstream> {
    const transport = await ctx.open(`rpc.${this.o.replicaId}.${randomUUID()}`);
    const pool: PooledUpstream = {
      transport,
      pending: new Map(),
      initializeResult: undefined,
      lastUsed: Date.now(),
      closed: false,
    };
    transport.onmessage = (message) => {
      const m = message as Rpc;
      if (m.method === undefined && typeof m.id === "string") {
        const p = pool.pending.get(m.id);
        if (p) {
          clearTimeout(p.timer);
          pool.pending.delete(m.id);
          p.resolve(m);
        }
      } else if (m.method !== undefined && m.id !== undefined) {
        void transport
          .send({
            jsonrpc: "2.0",
            id: m.id,
            error: {
              code: JsonRpcErrorCode.MethodNotFound,
              message: "the client behind this gateway uses plain JSON-RPC and cannot answer server requests",
            },
          } as JSONRPCMessage)
          .catch(() => {});
      }
    };
    transport.onclose = () => {
      pool.closed = true;
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
          capabilities: {},
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

  private request(pool: PooledUpstream, message: Rpc, timeoutMs: number): Promise<Record<string, unknown>> {
    const id = `gw-${randomUUID()}`;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        pool.pending.delete(id);
        resolve({
          error: {
            code: JsonRpcErrorCode.UpstreamTimeout,
            message: `upstream did not answer within ${timeoutMs} ms`,
          },
        });
      }, timeoutMs);
      pool.pending.set(id, { resolve, timer });
      pool.transport.send({ ...message, id } as JSONRPCMessage).catch(() => {
        clearTimeout(timer);
        pool.pending.delete(id);
        resolve({
          error: {
            code: JsonRpcErrorCode.UpstreamUnavailable,
            message: "upstream MCP server is unavailable",
          },
        });
      });
    });
  }

  private async pool(ctx: SessionContext): Promise<PooledUpstream> {
    const key = `${ctx.principal.id}\u0000${ctx.target}`;
    let pending = this.pools.get(key);
    if (pending) {
      const existing = await pending.catch(() => undefined);
      if (existing && !existing.closed) {
        existing.lastUsed = Date.now();
        return existing;
      }
      this.pools.delete(key);
    }
    pending = this.open(ctx);
    this.pools.set(key, pending);
    pending.catch(() => this.pools.delete(key));
    return pending;
  }

  /** Answers one message (undefined for notifications). */
  private async answer(
    message: Rpc,
    ctx: SessionContext,
    stateless = false,
  ): Promise<Record<string, unknown> | undefined> {
    const id = message.id ?? null;
    if (stateless) return this.answerStateless(message, ctx);
    const isRequest = message.id !== undefined;
    const method = message.method;
    if (method === undefined) return undefined; // responses have nowhere to go
    if (method === "notifications/initialized") return undefined;
    const pool = await this.pool(ctx);
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

    if (ctx.guards.admit) {
      const admission = await ctx.guards.admit({ method, tool });
      if (admission && !admission.allowed) {
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
    }
    const reply = await this.request(pool, message, ctx.timeoutMs);
    const result = ctx.guards.keepTool
      ? filterListResult(method, reply.result, ctx.guards.keepTool)
      : reply.result;
    return "error" in reply ? { jsonrpc: "2.0", id, error: reply.error } : { jsonrpc: "2.0", id, result };
  }

  /**
   * MCP 2026-07-28 (stateless) for an upstream that speaks a session-based revision: the gateway
   * keeps the upstream session on the client's behalf; `server/discover` is answered from it,
   * every other request is relayed and its result marked complete.
   */
  private async answerStateless(
    message: Rpc,
    ctx: SessionContext,
  ): Promise<Record<string, unknown> | undefined> {
    const id = message.id ?? null;
    if (message.method === undefined || message.id === undefined) return undefined;
    const pool = await this.pool(ctx);
    if (message.method === "server/discover") {
      const init = pool.initializeResult as
        | { capabilities?: unknown; serverInfo?: unknown; instructions?: unknown }
        | undefined;
      return {
        jsonrpc: "2.0",
        id,
        result: {
          resultType: "complete",
          supportedVersions: [STATELESS_VERSION],
          capabilities: init?.capabilities ?? {},
          ...(init?.instructions ? { instructions: init.instructions } : {}),
          _meta: { "io.modelcontextprotocol/serverInfo": init?.serverInfo ?? {} },
        },
      };
    }
    // Per-request negotiation keys mean nothing to a session-based server.
    const meta = { ...((message.params?._meta as Record<string, unknown> | undefined) ?? {}) };
    for (const key of Object.keys(meta)) if (key.startsWith("io.modelcontextprotocol/")) delete meta[key];
    let params: Record<string, unknown> | undefined;
    if (message.params) {
      const { _meta: _dropped, ...rest } = message.params;
      params = Object.keys(meta).length > 0 ? { ...rest, _meta: meta } : rest;
    }
    const answer = await this.answer({ ...message, ...(params ? { params } : {}) }, ctx);
    const result = answer?.result as Record<string, unknown> | undefined;
    return result && typeof result === "object"
      ? { ...answer, result: { resultType: "complete", ...result } }
      : answer;
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
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
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
    await this.respond(body, res, ctx, stateless);
  }

  /** Answers an already-parsed body (one message or a batch) with JSON. */
  async respond(body: unknown, res: ServerResponse, ctx: SessionContext, stateless = false): Promise<void> {
    const batch = Array.isArray(body);
    const messages = batch ? (body as unknown[]) : [body];
    if (messages.length === 0) {
      sendJsonRpcError(res, 400, null, JsonRpcErrorCode.InvalidRequest, "Invalid Request: empty batch");
      return;
    }
    let answers: Array<Record<string, unknown> | undefined>;
    try {
      answers = await Promise.all(
        messages.map((m) =>
          isJsonRpcMessage(m)
            ? this.answer(m as unknown as Rpc, ctx, stateless)
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
    if (out.length === 0) {
      res.writeHead(202).end();
      return;
    }
    const text = JSON.stringify(batch ? out : out[0]);
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
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
      if (!pool || pool.closed || pool.lastUsed < cutoff) {
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
