import type { BlockList } from "node:net";
import type { SessionEvent } from "@mcpgw/queue";
import { Counter, Histogram, type Logger, type Registry, tenantLabel, tracer } from "@mcpgw/telemetry";
import type { UpstreamCredentials } from "@mcpgw/upstream-credentials";
import { LRUCache } from "lru-cache";
import { WebSocketServer } from "ws";
import type { Authenticator } from "../auth/authenticator.ts";
import type { RateLimits } from "../rate-limit/rate-limits.ts";
import type { SessionQuota } from "../session-quota.ts";
import type { SnapshotStore } from "../snapshot/store.ts";
import type { JsonRpcGateway } from "../transports/json-rpc.ts";
import type { MessageSessions } from "../transports/message-sessions.ts";
import type { ConnectDeps } from "../upstream/connect.ts";
import type { UpstreamPools } from "../upstream/pools.ts";
import type { GuardEnv } from "./guards.ts";
import { Observer, requestIdOf } from "./observe.ts";
import { FirstMessageWindow } from "./websocket-credentials.ts";

export interface DataPlaneDeps {
  /** `/metrics` needs `Authorization: Bearer <it>` when set. */
  metricsToken?: string | undefined;
  /** Label series with server ids (off by default: ids of every tenant would be readable). */
  tenantLabels?: boolean | undefined;
  store: SnapshotStore;
  authenticator: Authenticator;
  credentials: UpstreamCredentials;
  pools: UpstreamPools;
  logger: Logger;
  metrics: Registry;
  maxBodyBytes: number;
  replicaId: string;
  /** The URL clients reach this data plane at (OAuth protected-resource metadata). */
  publicUrl: string;
  rateLimits: RateLimits;
  /** Proxies whose X-Forwarded-For / Forwarded headers are believed. */
  trustedProxies: BlockList | undefined;
  /** Message-level sessions: legacy SSE and WebSocket clients, stdio and SSE upstreams. */
  sessions: MessageSessions;
  rpc: JsonRpcGateway;
  /** Opens message-level upstream connections (stdio processes, SDK client transports). */
  connect: ConnectDeps;
  /** Answer budget per member server for namespace fan-out (lists, initialize). */
  aggregateMemberTimeoutMs: number;
  /** Session starts and ends, for the worker's session records. */
  report: (event: Omit<SessionEvent, "at" | "replica">) => void;
  /** Concurrent sessions per org (the plan's `max_sessions`), across replicas. */
  quota: SessionQuota;
  /** Binds session ids to their principal; the same on every replica (derived from the master key). */
  sessionKey: Buffer | undefined;
}

/** What every stage and route of one data plane shares: its dependencies, metrics and the WebSocket server. */
export interface DataPlaneContext {
  deps: DataPlaneDeps;
  observer: Observer;
  trace: ReturnType<typeof tracer>;
  /** The `server` label of a server id (tenant ids only where the operator opted in). */
  label: (id: string) => string;
  requests: Counter<"server" | "status">;
  duration: Histogram<"server">;
  authFailures: Counter<"reason">;
  policyDenials: Counter<"server">;
  guardEnv: GuardEnv;
  /** MCP over WebSocket: the `mcp` subprotocol when the client offers it. */
  wss: WebSocketServer;
  /** Upgraded sockets still to send their credential (pipeline/websocket-credentials.ts). */
  firstMessages: FirstMessageWindow;
  /** Streamable-HTTP upstreams that refused a stateless request: translated from then on (for a while). */
  sessionBasedUpstreams: LRUCache<string, true>;
}

export const metadataPath = (serverId?: string) =>
  serverId
    ? `/.well-known/oauth-protected-resource/servers/${serverId}/mcp`
    : "/.well-known/oauth-protected-resource";

export const looksLikeUrl = (s: string) => /^https?:\/\//.test(s);

export function createContext(deps: DataPlaneDeps): DataPlaneContext {
  const observer = new Observer(deps.metrics);
  const trace = tracer("mcpgw-data-plane");
  const label = (id: string) => tenantLabel(id, deps.tenantLabels ?? false);

  const requests = new Counter({
    name: "mcpgw_dp_requests_total",
    help: "MCP requests handled by the data plane",
    labelNames: ["server", "status"] as const,
    registers: [deps.metrics],
  });
  const duration = new Histogram({
    name: "mcpgw_dp_request_duration_seconds",
    help: "Time to upstream response headers plus streaming, per MCP request",
    labelNames: ["server"] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30],
    registers: [deps.metrics],
  });
  const authFailures = new Counter({
    name: "mcpgw_dp_auth_failures_total",
    help: "Requests rejected by authentication",
    labelNames: ["reason"] as const,
    registers: [deps.metrics],
  });
  const policyDenials = new Counter({
    name: "mcpgw_dp_policy_denials_total",
    help: "Requests or tool calls denied by policy",
    labelNames: ["server"] as const,
    registers: [deps.metrics],
  });

  const guardEnv: GuardEnv = {
    store: deps.store,
    authenticator: deps.authenticator,
    rateLimits: deps.rateLimits,
    policyDenials,
    label,
  };

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: deps.maxBodyBytes,
    handleProtocols: (protocols) => (protocols.has("mcp") ? "mcp" : false),
  });
  // The handshake answers the request id too, like every other response.
  wss.on("headers", (headers, req) => {
    const requestId = requestIdOf(req);
    if (requestId) headers.push(`x-request-id: ${requestId}`);
  });

  return {
    deps,
    observer,
    trace,
    label,
    requests,
    duration,
    authFailures,
    policyDenials,
    guardEnv,
    wss,
    firstMessages: new FirstMessageWindow(),
    sessionBasedUpstreams: new LRUCache<string, true>({ max: 10_000, ttl: 10 * 60_000 }),
  };
}
