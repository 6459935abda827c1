/*
 * Relays one JSON-RPC message of a caller without a session of its own over the caller's
 * gateway-held upstream session, through the session's guards: tool/prompt/resource policy, a
 * slot among the session's requests in flight, the rate limits; list results come back filtered
 * by policy. Used by the `/rpc` transport and by the 2026-07-28 translator alike.
 */
import {
  isRequest,
  JsonRpcErrorCode,
  type JsonRpcId,
  jsonRpcError,
  negotiateSessionVersion,
} from "@mcpgw/protocol";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import { filterListResult, policyTarget } from "../policy-targets.ts";
import { tooManyWaiting } from "../transports/limits.ts";
import type { SessionContext } from "../transports/message-sessions.ts";
import { type CallStream, type Rpc, requestUpstream, type UpstreamSessionPool } from "./upstream-sessions.ts";

export class MessageRelay {
  constructor(private readonly sessions: UpstreamSessionPool) {}

  /** Answers one message (undefined for notifications and responses). */
  async answer(
    message: Rpc,
    ctx: SessionContext,
    capabilities: Record<string, unknown> = {},
    call: CallStream = {},
  ): Promise<Record<string, unknown> | undefined> {
    const id = message.id ?? null;
    const method = message.method;
    if (method === undefined) return undefined; // responses have nowhere to go
    if (method === "notifications/initialized") return undefined;
    const session = await this.sessions.get(ctx, capabilities);
    if (!isRequest(message)) {
      await session.transport.send(message as JSONRPCMessage).catch(() => {});
      return undefined;
    }
    // The gateway already initialized the upstream session: answer from it, naming the revision
    // the client asked for when the gateway speaks it (MCP lifecycle, version negotiation).
    if (method === "initialize") {
      const result = {
        ...(session.initializeResult as Record<string, unknown>),
        protocolVersion: negotiateSessionVersion(message.params?.protocolVersion),
      };
      return { jsonrpc: "2.0", id, result };
    }
    const tool =
      method === "tools/call" && typeof message.params?.name === "string"
        ? (message.params.name as string)
        : undefined;
    const forbidden = authorize(id, method, message.params, ctx);
    if (forbidden) return forbidden;
    // The slot is taken before the rate-limit check: requests waiting on it count too.
    const release = await session.slots.acquire();
    if (!release) return tooManyWaiting(id) as unknown as Record<string, unknown>;
    let reply: Record<string, unknown>;
    try {
      const refused = await admit(id, method, tool, ctx);
      if (refused) return refused;
      reply = await requestUpstream(session, message, ctx.timeoutMs, call);
    } finally {
      release();
    }
    const result = ctx.guards.keepTool
      ? filterListResult(method, reply.result, ctx.guards.keepTool)
      : reply.result;
    return "error" in reply ? { jsonrpc: "2.0", id, error: reply.error } : { jsonrpc: "2.0", id, result };
  }
}

/** The policy's refusal of the tool, prompt or resource a request names, if it refuses it. */
function authorize(
  id: JsonRpcId,
  method: string,
  params: Record<string, unknown> | undefined,
  ctx: SessionContext,
): Record<string, unknown> | undefined {
  const target = policyTarget(method, params);
  if (target === undefined || !ctx.guards.authorizeTool) return undefined;
  const decision = ctx.guards.authorizeTool(target);
  if (decision.allowed) return undefined;
  return jsonRpcError(id, JsonRpcErrorCode.Forbidden, decision.reason, {
    policy: decision.rule,
  }) as unknown as Record<string, unknown>;
}

/** The rate limits' refusal of one request, if they refuse it. */
async function admit(
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
