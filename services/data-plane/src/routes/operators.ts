import { isJsonRpcMessage, isNotification, SUPPORTED_PROTOCOL_VERSIONS } from "@mcpgw/protocol";
import { currentRequestId, type Logger } from "@mcpgw/telemetry";
import type { JSONRPCMessage } from "@modelcontextprotocol/sdk/types.js";
import type { Context, Hono } from "hono";
import type { Authenticator } from "../auth/authenticator.ts";
import { AuthError, type Principal } from "../auth/principal.ts";
import type { DataPlaneEnv } from "../env.ts";
import { GatewayError, type GatewayErrorKind, problemResponse } from "../pipeline/errors.ts";
import type { SnapshotStore } from "../snapshot/store.ts";
import type { MessageSessions } from "../transports/message-sessions.ts";
import { stdioOwner } from "../upstream/connect.ts";
import { type StdioProcessManager, StdioUnavailable } from "../upstream/stdio-processes.ts";
import type { NamespaceInspection } from "./namespaces.ts";

/** A request one replica answers for the operator endpoints (carried over the bus). */
type OpRequest =
  | { action: "status"; org_id: string }
  | {
      action: "push";
      org_id: string;
      kind?: "sse" | "websocket" | undefined;
      session_id?: string | undefined;
      message: JSONRPCMessage;
    }
  | { action: "stdio_list"; org_id: string }
  | { action: "stdio_control"; org_id: string; server_id: string; operation: "restart" | "stop" }
  | {
      // The control plane's `GET /api/v1/namespaces/{id}/conflicts`: it takes the first answer.
      action: "namespace_conflicts";
      org_id: string;
      namespace_id: string;
      /** The org's config version when asked: a replica behind it waits a little for the snapshot. */
      min_version?: number | undefined;
      /** How long the asker waits; the inspection is sized to answer within it. */
      budget_ms?: number | undefined;
    };

export interface OperatorDeps {
  replicaId: string;
  startedAt: number;
  store: SnapshotStore;
  sessions: MessageSessions;
  stdio: StdioProcessManager;
  authenticator: Authenticator;
  logger: Logger;
  /** Asks every replica (this one included); resolves with their answers. */
  gather: (request: OpRequest) => Promise<unknown[]>;
}

/** Resolves once the store holds `orgId` at `minVersion` or later, or after `waitMs`. */
function snapshotReached(store: SnapshotStore, orgId: string, minVersion: number, waitMs: number) {
  const reached = () => (store.current.orgs.get(orgId)?.version ?? 0) >= minVersion;
  if (reached() || waitMs <= 0) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      stop();
      resolve();
    };
    const timer = setTimeout(done, waitMs);
    const stop = store.onChange(() => {
      if (reached()) done();
    });
  });
}

/** The answer of this replica to an operator request. */
export function answerOperatorRequest(
  deps: Omit<OperatorDeps, "gather" | "authenticator"> & {
    /** The data plane's admin report on a namespace (`createDataPlaneApp().inspectNamespace`). */
    inspectNamespace: (
      orgId: string,
      namespaceId: string,
      options: { deadline?: number | undefined },
    ) => Promise<NamespaceInspection>;
  },
) {
  const serversOf = (orgId: string) =>
    new Set(deps.store.current.orgs.get(orgId)?.servers.map((s) => s.id) ?? []);
  return async (raw: unknown): Promise<unknown> => {
    const req = raw as OpRequest;
    switch (req.action) {
      case "status": {
        const servers = serversOf(req.org_id);
        return {
          replica: deps.replicaId,
          uptime_s: Math.round((Date.now() - deps.startedAt) / 1000),
          sessions: deps.sessions.stats(req.org_id),
          stdio_processes: deps.stdio.list().filter((p) => servers.has(p.server_id)).length,
          snapshot: {
            global_version: deps.store.current.global?.version ?? null,
            org_version: deps.store.current.orgs.get(req.org_id)?.version ?? null,
          },
        };
      }
      case "push":
        return {
          replica: deps.replicaId,
          delivered: await deps.sessions.push(req.message, {
            orgId: req.org_id,
            kind: req.kind,
            sessionId: req.session_id,
          }),
        };
      case "stdio_list": {
        const servers = serversOf(req.org_id);
        return {
          replica: deps.replicaId,
          processes: deps.stdio.list().filter((p) => servers.has(p.server_id)),
          servers: [...servers]
            .map((id) => ({ server_id: id, ...deps.stdio.health(id) }))
            .filter((s) => "restarts" in s),
        };
      }
      case "stdio_control": {
        if (!serversOf(req.org_id).has(req.server_id)) return { replica: deps.replicaId, affected: 0 };
        const affected = await deps.stdio.stopServer(req.server_id, { refill: req.operation === "restart" });
        return { replica: deps.replicaId, affected };
      }
      case "namespace_conflicts": {
        const started = Date.now();
        const budget = Math.min(Math.max(Number(req.budget_ms) || 5_500, 500), 30_000);
        // Right after a change the snapshot may still be on its way: a replica that first answers
        // "unknown namespace" from an old snapshot would win the asker's race for the first answer.
        await snapshotReached(deps.store, req.org_id, Number(req.min_version) || 0, budget / 4);
        // Members get the time the data plane gives them at each step, as long as the budget
        // lasts: a slow member still answers, one that hangs is reported, and the answer comes
        // within the budget.
        const deadline = started + budget;
        try {
          return {
            replica: deps.replicaId,
            ...(await deps.inspectNamespace(req.org_id, req.namespace_id, { deadline })),
          };
        } catch (err) {
          deps.logger.error({ err, namespace: req.namespace_id }, "namespace inspection failed");
          return { replica: deps.replicaId, status: "failed" };
        }
      }
      default:
        return { replica: deps.replicaId, error: "unknown action" };
    }
  };
}

/** An operator endpoint's refusal: RFC 9457 problem+json (these are REST endpoints, not MCP). */
const refusal = (kind: GatewayErrorKind, message: string, headers?: Record<string, string>) =>
  problemResponse(new GatewayError(kind, message, { headers }), currentRequestId());

/** A principal, or the refusal to send. (Not `instanceof Response`: the node adapter swaps the
 * global Response class, so that check would let a refusal pass as a principal.) */
type Admin = { ok: true; principal: Principal } | { ok: false; response: Response };

/** The caller, when it holds an org-wide admin credential of an active org. */
async function admin(deps: OperatorDeps, headers: Headers): Promise<Admin> {
  const plain: Record<string, string> = {};
  headers.forEach((v, k) => {
    plain[k] = v;
  });
  try {
    const principal = await deps.authenticator.authenticate(plain, undefined);
    // Operator endpoints act on the whole org: a credential scoped to one namespace (or of a
    // disabled org) may not use them.
    if (principal.namespace_id || deps.store.current.orgs.get(principal.org_id)?.org.active !== true)
      return {
        ok: false,
        response: refusal("forbidden", "operator endpoints need an org-wide admin credential"),
      };
    if (principal.role !== "admin")
      return { ok: false, response: refusal("forbidden", "operator endpoints need the admin role") };
    return { ok: true, principal };
  } catch (err) {
    if (!(err instanceof AuthError)) throw err;
    return {
      ok: false,
      response: refusal("unauthorized", `Unauthorized: ${err.message}`, {
        "www-authenticate": 'Bearer realm="mcpgw"',
      }),
    };
  }
}

/** A handler that runs only for an admin (see `admin`), with its principal. */
const adminOnly =
  (
    deps: OperatorDeps,
    handler: (c: Context<DataPlaneEnv>, admin: Principal) => Promise<Response> | Response,
  ) =>
  async (c: Context<DataPlaneEnv>) => {
    const a = await admin(deps, c.req.raw.headers);
    return a.ok ? handler(c, a.principal) : a.response;
  };

/** A JSON object body, or undefined for anything else (unparsable, an array, a scalar). */
async function objectBody(req: Request): Promise<Record<string, unknown> | undefined> {
  try {
    const v = (await req.json()) as unknown;
    return typeof v === "object" && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

const isNotificationBody = (m: unknown): m is JSONRPCMessage => isJsonRpcMessage(m) && isNotification(m);
const sum = (answers: unknown[], field: string) =>
  answers.reduce<number>((n, a) => n + (Number((a as Record<string, unknown>)[field]) || 0), 0);

/**
 * Admin-only operator endpoints of the data plane, answered by every replica (fan-out over the
 * bus) and scoped to the caller's organization. None of them runs a command that is not an
 * admin-registered server's.
 */
export function mountOperatorRoutes(app: Hono<DataPlaneEnv>, deps: OperatorDeps) {
  mountStatusRoutes(app, deps);
  mountPushRoutes(app, deps);
  mountStdioRoutes(app, deps);
}

/** What the gateway serves, and how many sessions each replica holds. */
function mountStatusRoutes(app: Hono<DataPlaneEnv>, deps: OperatorDeps) {
  app.get(
    "/mcp/capabilities",
    adminOnly(deps, (c) =>
      c.json({
        protocol_versions: SUPPORTED_PROTOCOL_VERSIONS,
        client_transports: ["streamable_http", "sse", "websocket", "json_rpc"],
        upstream_transports: ["streamable_http", "sse", "stdio"],
        endpoints: {
          server: "/servers/{id}/{mcp|sse|ws|rpc}",
          namespace: "/ns/{slug}/{mcp|sse|ws|rpc}",
          default_namespace: "/{mcp|sse|ws|rpc}",
        },
      }),
    ),
  );
  app.get(
    "/mcp/status",
    adminOnly(deps, async (c, p) =>
      c.json({ replicas: await deps.gather({ action: "status", org_id: p.org_id }) }),
    ),
  );
  for (const kind of ["sse", "ws"] as const) {
    const sessionKind = kind === "ws" ? "websocket" : "sse";
    app.get(
      `/${kind}/status`,
      adminOnly(deps, async (c, p) => {
        const replicas = (await deps.gather({ action: "status", org_id: p.org_id })) as Array<{
          replica: string;
          sessions: Record<string, number>;
        }>;
        return c.json({
          connections: replicas.reduce((n, r) => n + (r.sessions?.[sessionKind] ?? 0), 0),
          replicas: replicas.map((r) => ({
            replica: r.replica,
            connections: r.sessions?.[sessionKind] ?? 0,
          })),
        });
      }),
    );
  }
}

/** Notifications pushed to an org's open SSE and WebSocket sessions, on every replica. */
function mountPushRoutes(app: Hono<DataPlaneEnv>, deps: OperatorDeps) {
  for (const kind of ["sse", "ws"] as const) {
    const sessionKind = kind === "ws" ? "websocket" : "sse";
    app.post(
      `/${kind}/broadcast`,
      adminOnly(deps, async (c, p) => {
        const b = await objectBody(c.req.raw);
        if (!isNotificationBody(b?.message))
          return refusal("bad_request", 'body must be {"message": <JSON-RPC notification>}');
        const answers = await deps.gather({
          action: "push",
          org_id: p.org_id,
          kind: sessionKind,
          message: b.message,
        });
        return c.json({ delivered: sum(answers, "delivered"), replicas: answers.length });
      }),
    );
  }
  app.post(
    "/ws/send",
    adminOnly(deps, async (c, p) => {
      const b = await objectBody(c.req.raw);
      if (!isNotificationBody(b?.message))
        return refusal("bad_request", 'body must be {"session_id"?, "message": <JSON-RPC notification>}');
      const sessionId = typeof b.session_id === "string" ? b.session_id : undefined;
      const answers = await deps.gather({
        action: "push",
        org_id: p.org_id,
        kind: "websocket",
        session_id: sessionId,
        message: b.message,
      });
      const delivered = sum(answers, "delivered");
      if (sessionId && delivered === 0) return refusal("not_found", "no such WebSocket session");
      return c.json({ delivered });
    }),
  );
}

/** The org's stdio processes: listed, restarted or stopped on every replica, or sent messages. */
function mountStdioRoutes(app: Hono<DataPlaneEnv>, deps: OperatorDeps) {
  /** The org's stdio server `id`, if it is one. */
  const stdioServer = (id: unknown, p: Principal) => {
    const server = typeof id === "string" ? deps.store.current.servers.get(id) : undefined;
    return server && server.org.org_id === p.org_id && server.server.transport === "stdio"
      ? server
      : undefined;
  };
  app.get(
    "/stdio/process",
    adminOnly(deps, async (c, p) =>
      c.json({ replicas: await deps.gather({ action: "stdio_list", org_id: p.org_id }) }),
    ),
  );
  app.post(
    "/stdio/process",
    adminOnly(deps, async (c, p) => {
      const b = await objectBody(c.req.raw);
      const operation = b?.action;
      if (typeof b?.server_id !== "string" || (operation !== "restart" && operation !== "stop"))
        return refusal("bad_request", 'body must be {"server_id", "action": "restart"|"stop"}');
      if (!stdioServer(b.server_id, p)) return refusal("not_found", "unknown stdio server");
      const answers = await deps.gather({
        action: "stdio_control",
        org_id: p.org_id,
        server_id: b.server_id,
        operation,
      });
      deps.logger.info({ server: b.server_id, operation, by: p.id }, "operator changed stdio processes");
      return c.json({ affected: sum(answers, "affected"), replicas: answers.length });
    }),
  );
  app.post(
    "/stdio/send",
    adminOnly(deps, async (c, p) => {
      const b = await objectBody(c.req.raw);
      const messages = Array.isArray(b?.messages) ? b.messages : b?.message ? [b.message] : undefined;
      if (typeof b?.server_id !== "string" || !messages?.length || messages.length > 20)
        return refusal(
          "bad_request",
          'body must be {"server_id", "message"} or {"server_id", "messages": [...]} (at most 20)',
        );
      const server = stdioServer(b.server_id, p);
      if (!server) return refusal("not_found", "unknown stdio server");
      try {
        const received = await deps.stdio.exchange(
          server.server,
          messages as JSONRPCMessage[],
          Math.min(Number(b.wait_ms ?? 5000), 30_000),
          stdioOwner(server, p),
        );
        deps.logger.info(
          { server: b.server_id, by: p.id, sent: messages.length },
          "operator sent messages to a stdio server",
        );
        return c.json({ replica: deps.replicaId, received });
      } catch (err) {
        // A stdio refusal is written for the client (capacity, a command that cannot start);
        // anything else stays in the log.
        if (err instanceof StdioUnavailable)
          return refusal(
            "unavailable",
            err.message,
            err.retryAfterS ? { "retry-after": String(err.retryAfterS) } : undefined,
          );
        deps.logger.warn({ err, server: b.server_id }, "operator exchange with a stdio server failed");
        return refusal("upstream_unavailable", "the stdio server did not take the messages");
      }
    }),
  );
}
