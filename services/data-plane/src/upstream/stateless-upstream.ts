import { randomUUID } from "node:crypto";
import {
  encodeHeaderValue,
  isNotification,
  isResponse,
  JsonRpcErrorCode,
  type JsonRpcId,
  negotiateSessionVersion,
  type RelayedMessage,
  STATELESS_META,
  STATELESS_PROTOCOL_VERSION,
} from "@mcpgw/protocol";
import type { Logger } from "@mcpgw/telemetry";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";

type Rpc = RelayedMessage;

const META_VERSION = STATELESS_META.protocolVersion;
const META_CAPABILITIES = STATELESS_META.clientCapabilities;
const META_CLIENT = STATELESS_META.clientInfo;
const META_SERVER = STATELESS_META.serverInfo;
const META_SUBSCRIPTION = STATELESS_META.subscriptionId;
/** Rounds of input a request may take before the gateway gives up on it. */
const MAX_INPUT_ROUNDS = 16;
/** How long the client may take to answer a question the upstream asked. */
const CLIENT_ANSWER_MS = 10 * 60_000;
/** Pauses between attempts to (re)open the listen stream: doubling, up to a minute. */
const LISTEN_RETRY_MS = 1000;
const LISTEN_RETRY_MAX_MS = 60_000;

/** Reads a JSON or SSE response body as JSON-RPC messages, in order. */
async function* messagesOf(res: Response): AsyncGenerator<Rpc> {
  const type = res.headers.get("content-type") ?? "";
  if (!type.includes("text/event-stream")) {
    const text = await res.text();
    if (!text) return;
    const parsed = JSON.parse(text) as Rpc | Rpc[];
    for (const m of Array.isArray(parsed) ? parsed : [parsed]) yield m;
    return;
  }
  if (!res.body) return;
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let end = buffer.search(/\r?\n\r?\n/);
    while (end >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = event
        .split(/\r?\n/)
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data) {
        try {
          yield JSON.parse(data) as Rpc;
        } catch {
          // not a JSON-RPC event
        }
      }
      end = buffer.search(/\r?\n\r?\n/);
    }
  }
}

export interface StatelessUpstreamOptions {
  url: string;
  /** The gateway's own credentials for the upstream. */
  headers: Record<string, string>;
  timeoutMs: number;
  /** Makes the connections (the data plane's pools, with their egress check). */
  fetch: typeof globalThis.fetch;
  logger: Logger;
}

/**
 * A session-based (2025) MCP connection to an upstream that speaks only the stateless 2026-07-28
 * revision: the gateway offers its client a session and translates. `initialize` is answered
 * from `server/discover`; every request is sent with the client's capabilities in `_meta` and
 * the routing headers; an `InputRequiredResult` becomes server-to-client requests (elicitation,
 * sampling, roots) on the session, whose answers go back in the retry; list-changed and
 * resource-updated notifications come from a `subscriptions/listen` stream held while the
 * session lives.
 */
export class StatelessUpstreamTransport implements Transport {
  onmessage?: (message: JSONRPCMessage) => void;
  onclose?: () => void;
  onerror?: (error: Error) => void;

  private clientCapabilities: Record<string, unknown> = {};
  private clientInfo: unknown;
  private serverCapabilities: Record<string, { listChanged?: boolean; subscribe?: boolean }> = {};
  private readonly inFlight = new Map<JsonRpcId, AbortController>();
  /** Server-to-client requests the gateway made on an upstream request's behalf. */
  private readonly asked = new Map<string, (answer: Rpc) => void>();
  private readonly subscriptions = new Set<string>();
  private listening: AbortController | undefined;
  /** Listen streams that ended without an acknowledgement since the last good one. */
  private listenFailures = 0;
  private closed = false;

  constructor(private readonly o: StatelessUpstreamOptions) {}

  async start(): Promise<void> {}

  async send(message: JSONRPCMessage): Promise<void> {
    const m = message as Rpc;
    if (this.closed) throw new Error("upstream connection closed");
    if (isResponse(m)) {
      // The client's answer to a question the gateway asked on the upstream's behalf.
      const resolve = this.asked.get(String(m.id));
      this.asked.delete(String(m.id));
      resolve?.(m);
      return;
    }
    if (isNotification(m)) {
      if (m.method === "notifications/cancelled") this.inFlight.get(m.params?.requestId as string)?.abort();
      // Other notifications (initialized, roots/list_changed) have no stateless counterpart.
      return;
    }
    void this.answer(m).catch((err) => {
      this.reply({
        jsonrpc: "2.0",
        id: m.id,
        error: { code: JsonRpcErrorCode.InternalError, message: (err as Error).message },
      });
    });
  }

  private reply(message: Rpc): void {
    if (!this.closed) this.onmessage?.(message as JSONRPCMessage);
  }

  private async answer(m: Rpc): Promise<void> {
    switch (m.method) {
      case "initialize":
        return this.initialize(m);
      case "ping":
        return this.reply({ jsonrpc: "2.0", id: m.id, result: {} });
      case "resources/subscribe":
      case "resources/unsubscribe": {
        const uri = String(m.params?.uri ?? "");
        if (m.method === "resources/subscribe") this.subscriptions.add(uri);
        else this.subscriptions.delete(uri);
        this.listen();
        return this.reply({ jsonrpc: "2.0", id: m.id, result: {} });
      }
    }
    const answer = await this.call(m);
    if (answer.result) {
      const { resultType: _type, ttlMs: _ttl, cacheScope: _scope, ...result } = answer.result;
      return this.reply({ jsonrpc: "2.0", id: m.id, result });
    }
    this.reply({ ...answer, jsonrpc: "2.0", id: m.id });
  }

  /** `initialize`, answered from `server/discover`; the listen stream opens after it. */
  private async initialize(m: Rpc): Promise<void> {
    this.clientCapabilities = (m.params?.capabilities as Record<string, unknown>) ?? {};
    this.clientInfo = m.params?.clientInfo;
    const answer = await this.call({ jsonrpc: "2.0", id: m.id, method: "server/discover", params: {} });
    if (!answer.result) return this.reply({ ...answer, jsonrpc: "2.0", id: m.id });
    const discovered = answer.result as {
      capabilities?: Record<string, { listChanged?: boolean; subscribe?: boolean }>;
      instructions?: string;
      serverInfo?: unknown;
      _meta?: Record<string, unknown>;
    };
    this.serverCapabilities = discovered.capabilities ?? {};
    const requested = String(m.params?.protocolVersion ?? "");
    this.reply({
      jsonrpc: "2.0",
      id: m.id,
      result: {
        protocolVersion: negotiateSessionVersion(requested),
        capabilities: this.serverCapabilities,
        serverInfo: discovered._meta?.[META_SERVER] ??
          discovered.serverInfo ?? { name: "upstream", version: "0" },
        ...(discovered.instructions ? { instructions: discovered.instructions } : {}),
      },
    });
    this.listen();
  }

  /** The `_meta` every stateless request carries. */
  private meta(own: unknown): Record<string, unknown> {
    return {
      ...((own as Record<string, unknown> | undefined) ?? {}),
      [META_VERSION]: STATELESS_PROTOCOL_VERSION,
      [META_CAPABILITIES]: this.clientCapabilities,
      ...(this.clientInfo ? { [META_CLIENT]: this.clientInfo } : {}),
    };
  }

  private post(body: Rpc, signal: AbortSignal): Promise<Response> {
    return postStateless(this.o.fetch, this.o.url, this.o.headers, body, signal);
  }

  /**
   * One request, as many rounds as the upstream needs: each `input_required` answer is put to
   * the client as server-to-client requests, and the request retried with the answers.
   */
  private async call(m: Rpc): Promise<Rpc> {
    const controller = new AbortController();
    let timer = setTimeout(() => controller.abort(), this.o.timeoutMs);
    if (m.id !== undefined) this.inFlight.set(m.id, controller);
    let extra: Record<string, unknown> = {};
    try {
      for (let round = 0; round < MAX_INPUT_ROUNDS; round++) {
        const body: Rpc = {
          jsonrpc: "2.0",
          id: `gw-${randomUUID()}`,
          method: m.method,
          params: { ...(m.params ?? {}), ...extra, _meta: this.meta(m.params?._meta) },
        };
        const res = await this.post(body, controller.signal);
        let answer: Rpc | undefined;
        try {
          for await (const msg of messagesOf(res)) {
            if (msg.method !== undefined && msg.id === undefined) {
              // Progress and log messages of this request go to the client as they come.
              this.reply(msg);
            } else if (msg.id === body.id) {
              answer = msg;
            }
          }
        } catch (err) {
          if (controller.signal.aborted) throw err;
          return unavailable(`upstream answered ${res.status} with an unreadable body`);
        }
        if (!answer) return unavailable(`upstream answered ${res.status} without a JSON-RPC response`);
        const result = answer.result as
          | { resultType?: string; inputRequests?: Record<string, Rpc>; requestState?: string }
          | undefined;
        if (result?.resultType !== "input_required") return answer;
        const inputResponses: Record<string, unknown> = {};
        for (const [key, question] of Object.entries(result.inputRequests ?? {})) {
          // The upstream's time does not run while the client (a person, maybe) answers.
          clearTimeout(timer);
          timer = setTimeout(() => controller.abort(), CLIENT_ANSWER_MS);
          const reply = await this.ask(question, controller.signal);
          clearTimeout(timer);
          timer = setTimeout(() => controller.abort(), this.o.timeoutMs);
          if (reply.error) return { error: reply.error };
          inputResponses[key] = reply.result;
        }
        extra = {
          inputResponses,
          ...(result.requestState !== undefined ? { requestState: result.requestState } : {}),
        };
      }
      return unavailable("the upstream kept asking for input");
    } catch (err) {
      if (controller.signal.aborted)
        return {
          error: {
            code: JsonRpcErrorCode.UpstreamTimeout,
            message: `upstream did not answer within ${this.o.timeoutMs} ms`,
          },
        };
      this.o.logger.warn({ err: (err as Error).message }, "stateless upstream request failed");
      return unavailable("upstream MCP server is unavailable");
    } finally {
      clearTimeout(timer);
      if (m.id !== undefined) this.inFlight.delete(m.id);
    }
  }

  /** Puts one of the upstream's questions to the client and waits for its answer. */
  private ask(question: Rpc, signal: AbortSignal): Promise<Rpc> {
    const id = `gw-input-${randomUUID()}`;
    return new Promise((resolve) => {
      const abort = () => {
        this.asked.delete(id);
        resolve({ error: { code: JsonRpcErrorCode.UpstreamTimeout, message: "no answer from the client" } });
      };
      signal.addEventListener("abort", abort, { once: true });
      this.asked.set(id, (answer) => {
        signal.removeEventListener("abort", abort);
        resolve(answer);
      });
      this.reply({ jsonrpc: "2.0", id, method: question.method, params: question.params ?? {} });
    });
  }

  /**
   * (Re)opens the `subscriptions/listen` stream for what the session wants and the upstream
   * offers; reconnects after a pause when the upstream ends it.
   */
  private listen(): void {
    this.listening?.abort();
    this.listening = undefined;
    const caps = this.serverCapabilities;
    const notifications: Record<string, unknown> = {};
    if (caps.tools?.listChanged) notifications.toolsListChanged = true;
    if (caps.prompts?.listChanged) notifications.promptsListChanged = true;
    if (caps.resources?.listChanged) notifications.resourcesListChanged = true;
    if (caps.resources?.subscribe && this.subscriptions.size > 0)
      notifications.resourceSubscriptions = [...this.subscriptions];
    if (this.closed || Object.keys(notifications).length === 0) return;
    const controller = new AbortController();
    this.listening = controller;
    const body: Rpc = {
      jsonrpc: "2.0",
      id: `gw-listen-${randomUUID()}`,
      method: "subscriptions/listen",
      params: { notifications, _meta: this.meta(undefined) },
    };
    void (async () => {
      let refused = false;
      try {
        const res = await this.post(body, controller.signal);
        // Refused (4xx): this upstream will not take listen streams; do not ask again and again.
        if (res.status >= 400 && res.status < 500) refused = true;
        for await (const msg of messagesOf(res)) {
          if (msg.error !== undefined) refused = true;
          if (msg.method === "notifications/subscriptions/acknowledged") this.listenFailures = 0;
          if (msg.method === undefined || msg.method === "notifications/subscriptions/acknowledged") continue;
          const { [META_SUBSCRIPTION]: _id, ...meta } = (msg.params?._meta as Record<string, unknown>) ?? {};
          const params = { ...(msg.params ?? {}) };
          if (Object.keys(meta).length > 0) params._meta = meta;
          else delete params._meta;
          this.reply({ jsonrpc: "2.0", method: msg.method, params });
        }
      } catch {
        // aborted, or the stream broke: reconnected below unless this listen was replaced
      }
      if (this.listening !== controller || this.closed) return;
      this.listening = undefined;
      if (refused) {
        this.o.logger.warn(
          { url: this.o.url },
          "upstream refused subscriptions/listen; no list-change notifications",
        );
        return;
      }
      const delay = Math.min(LISTEN_RETRY_MAX_MS, LISTEN_RETRY_MS * 2 ** this.listenFailures++);
      setTimeout(() => {
        if (!this.listening && !this.closed) this.listen();
      }, delay).unref();
    })();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.listening?.abort();
    for (const c of this.inFlight.values()) c.abort();
    this.onclose?.();
  }
}

/**
 * One 2026-07-28 request upstream: the routing headers (`Mcp-Method`, `Mcp-Name` for named
 * requests) next to the gateway's own credentials; redirects are refused.
 */
function postStateless(
  fetch: typeof globalThis.fetch,
  url: string,
  headers: Record<string, string>,
  body: Rpc,
  signal: AbortSignal,
): Promise<Response> {
  const name = body.params?.name ?? body.params?.uri;
  return fetch(url, {
    method: "POST",
    headers: {
      ...headers,
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": STATELESS_PROTOCOL_VERSION,
      "mcp-method": body.method ?? "",
      ...(typeof name === "string" ? { "mcp-name": encodeHeaderValue(name) } : {}),
    },
    body: JSON.stringify(body),
    signal,
    redirect: "error",
  });
}

function unavailable(message: string): Rpc {
  return { error: { code: JsonRpcErrorCode.UpstreamUnavailable, message } };
}

/**
 * Whether an upstream speaks the stateless revision: it answers `server/discover` with
 * 2026-07-28 among its versions. Anything else (an error, a session-based server) is false.
 */
export async function speaksStateless(
  url: string,
  headers: Record<string, string>,
  timeoutMs: number,
  fetch: typeof globalThis.fetch = globalThis.fetch,
): Promise<boolean> {
  try {
    const res = await postStateless(
      fetch,
      url,
      headers,
      {
        jsonrpc: "2.0",
        id: "gw-discover",
        method: "server/discover",
        params: { _meta: { [META_VERSION]: STATELESS_PROTOCOL_VERSION, [META_CAPABILITIES]: {} } },
      },
      AbortSignal.timeout(timeoutMs),
    );
    if (!res.ok) {
      await res.body?.cancel().catch(() => {});
      return false;
    }
    for await (const m of messagesOf(res)) {
      const versions = (m.result as { supportedVersions?: unknown } | undefined)?.supportedVersions;
      if (m.id === "gw-discover")
        return Array.isArray(versions) && versions.includes(STATELESS_PROTOCOL_VERSION);
    }
    return false;
  } catch {
    return false;
  }
}

/**
 * Which Streamable HTTP upstreams speak only the stateless revision, learned by asking them
 * (`server/discover`) and remembered for a while, or learned from a refused `initialize`.
 */
export class UpstreamRevisions {
  private readonly known = new Map<string, { stateless: boolean; at: number }>();

  constructor(private readonly ttlMs = 10 * 60_000) {}

  /** Marks a server as stateless-only (it refused a session-based client). */
  markStateless(serverId: string): void {
    this.known.set(serverId, { stateless: true, at: Date.now() });
  }

  /** True when the server is known to speak only the stateless revision (no probe). */
  knownStateless(serverId: string): boolean {
    const k = this.known.get(serverId);
    return k?.stateless === true && Date.now() - k.at < this.ttlMs;
  }

  /** Whether to reach this server statelessly, probing it when not known recently. */
  async isStateless(
    serverId: string,
    url: string,
    headers: Record<string, string>,
    timeoutMs: number,
    fetch: typeof globalThis.fetch,
  ) {
    const k = this.known.get(serverId);
    if (k && Date.now() - k.at < this.ttlMs) return k.stateless;
    const stateless = await speaksStateless(url, headers, Math.min(timeoutMs, 5000), fetch);
    if (this.known.size > 10_000) this.known.clear();
    this.known.set(serverId, { stateless, at: Date.now() });
    return stateless;
  }
}
