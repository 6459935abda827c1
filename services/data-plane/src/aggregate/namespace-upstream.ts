import {
  isNotification,
  isRequest,
  isResponse,
  JsonRpcErrorCode,
  LATEST_SESSION_PROTOCOL_VERSION,
  negotiateSessionVersion,
  type RelayedMessage,
} from "@mcpgw/protocol";
import type { NamespaceEntry, ServerEntry } from "@mcpgw/snapshot";
import type { Logger } from "@mcpgw/telemetry";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import type { JSONRPCMessage, RequestId } from "@modelcontextprotocol/sdk/types.js";
import type { GatewayError } from "../pipeline/errors.ts";
import { denied, rateLimited } from "../pipeline/guards.ts";
import type { Admission } from "../transports/streamable-http.ts";

/** The SDK transports carry string or number ids only. */
type Msg = RelayedMessage & { id?: RequestId };

/** What the aggregate may do with one member server for this caller (see pipeline/guards.ts). */
export interface MemberGuards {
  /** Whether the caller may still use this member at all (current snapshot). */
  standing?: (() => GatewayError | undefined) | undefined;
  authorizeTool?: ((tool: string) => { allowed: boolean; reason: string; rule: unknown }) | undefined;
  keepTool?: ((tool: string) => boolean) | undefined;
  admit?:
    | ((rpc: { method?: string | undefined; tool?: string | undefined }) => Promise<Admission | undefined>)
    | undefined;
}

export interface Member {
  server: ServerEntry;
  guards: MemberGuards;
}

export interface AggregateOptions {
  namespace: NamespaceEntry;
  members: Member[];
  /** Opens a message-level connection to one member. */
  connect: (server: ServerEntry) => Promise<Transport>;
  /** Per-member answer budget for fan-out calls (lists, initialize). */
  memberTimeoutMs: number;
  logger: Logger;
}

interface Child {
  member: Member;
  transport: Transport | undefined;
  failed: string | undefined;
  pending: Map<string, (m: Msg) => void>;
  seq: number;
}

/** Client request → member route, so responses, cancellations and progress find their way. */
interface Route {
  child: Child;
  childId: string;
}

const LIST_CAPS = ["tools", "prompts", "resources"] as const;

/**
 * One MCP server made of every enabled server of a namespace, presented to the session bridge
 * as an upstream `Transport`. Lists are fanned out to every member with a per-member timeout and
 * merged under collision-free names (`<server><separator><name>`, or unprefixed with conflicts
 * reported); calls are routed to their member by name. A member that is slow or down leaves the
 * others answering. Server-to-client requests of members reach the client under ids of the
 * aggregate, and their responses go back to the member that asked.
 */
export class NamespaceUpstream implements Transport {
  onmessage?: (message: JSONRPCMessage) => void;
  onclose?: () => void;
  onerror?: (error: Error) => void;
  private readonly children: Child[];
  private readonly routes = new Map<RequestId, Route>();
  /** Server-to-client requests: aggregate id → member and its own id. */
  private readonly serverRequests = new Map<string, { child: Child; id: RequestId }>();
  private serverSeq = 0;
  private readonly resourceOwners = new Map<string, Child>();
  /** Names that more than one member offers, when names are not prefixed. */
  conflicts: Array<{ kind: string; name: string; servers: string[] }> = [];
  private closed = false;

  constructor(private readonly o: AggregateOptions) {
    this.children = o.members.map((member) => ({
      member,
      transport: undefined,
      failed: undefined,
      pending: new Map(),
      seq: 0,
    }));
  }

  private get prefixed(): boolean {
    return this.o.namespace.tool_naming === "prefix";
  }

  private qualify(child: Child, name: string): string {
    return this.prefixed ? `${child.member.server.name}${this.o.namespace.tool_separator}${name}` : name;
  }

  /** The member and its own name for a qualified name. */
  private resolve(name: string, kind: "tools" | "prompts"): { child: Child; name: string } | undefined {
    if (this.prefixed) {
      const sep = this.o.namespace.tool_separator;
      for (const child of this.children) {
        const prefix = `${child.member.server.name}${sep}`;
        if (name.startsWith(prefix)) return { child, name: name.slice(prefix.length) };
      }
      return undefined;
    }
    const owner = this.unprefixedOwners.get(`${kind}:${name}`);
    return owner ? { child: owner, name } : undefined;
  }

  private readonly unprefixedOwners = new Map<string, Child>();

  async start(): Promise<void> {
    await Promise.all(
      this.children.map(async (child) => {
        try {
          const transport = await withTimeout(
            this.o.connect(child.member.server),
            this.o.memberTimeoutMs,
            "connect",
          );
          child.transport = transport;
          transport.onmessage = (m) => this.fromChild(child, m as Msg);
          transport.onclose = () => {
            child.failed = "connection closed";
            child.transport = undefined;
          };
        } catch (err) {
          child.failed = (err as Error).message;
          this.o.logger.warn(
            { namespace: this.o.namespace.slug, server: child.member.server.id, err: child.failed },
            "namespace member unavailable",
          );
        }
      }),
    );
  }

  /** Sends a request to one member and waits for its answer (bounded). */
  private ask(
    child: Child,
    method: string,
    params: unknown,
    timeoutMs = this.o.memberTimeoutMs,
  ): Promise<Msg> {
    const transport = child.transport;
    if (!transport)
      return Promise.resolve({
        jsonrpc: "2.0",
        error: { code: JsonRpcErrorCode.UpstreamUnavailable, message: child.failed ?? "unavailable" },
      });
    const id = `agg-${++child.seq}`;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        child.pending.delete(id);
        this.o.logger.warn(
          { namespace: this.o.namespace.slug, server: child.member.server.id, method },
          "namespace member timed out",
        );
        resolve({
          jsonrpc: "2.0",
          error: { code: JsonRpcErrorCode.UpstreamTimeout, message: `no answer within ${timeoutMs} ms` },
        });
      }, timeoutMs);
      child.pending.set(id, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      transport
        .send({ jsonrpc: "2.0", id, method, ...(params === undefined ? {} : { params }) } as JSONRPCMessage)
        .catch(() => {
          clearTimeout(timer);
          child.pending.delete(id);
          resolve({
            jsonrpc: "2.0",
            error: { code: JsonRpcErrorCode.UpstreamUnavailable, message: "send failed" },
          });
        });
    });
  }

  private reply(id: RequestId, body: { result: unknown } | { error: unknown }) {
    this.onmessage?.({ jsonrpc: "2.0", id, ...body } as JSONRPCMessage);
  }

  async send(message: JSONRPCMessage): Promise<void> {
    const m = message as Msg;
    // A response of the client to a member's server-to-client request.
    if (isResponse(m)) {
      const target = this.serverRequests.get(String(m.id));
      if (!target) return;
      this.serverRequests.delete(String(m.id));
      await target.child.transport?.send({ ...m, id: target.id } as JSONRPCMessage).catch(() => {});
      return;
    }
    if (isNotification(m)) return this.notify(m);
    void this.request(m).catch((err) =>
      this.reply(m.id!, { error: { code: JsonRpcErrorCode.InternalError, message: (err as Error).message } }),
    );
  }

  private async notify(m: Msg) {
    if (m.method === "notifications/cancelled") {
      const route = this.routes.get((m.params?.requestId as RequestId) ?? "");
      if (route)
        await route.child.transport
          ?.send({ ...m, params: { ...m.params, requestId: route.childId } } as JSONRPCMessage)
          .catch(() => {});
      return;
    }
    // initialized, roots/list_changed, …: every member hears it.
    await Promise.all(this.children.map((c) => c.transport?.send(m as JSONRPCMessage).catch(() => {})));
  }

  private async request(m: Msg): Promise<void> {
    const id = m.id!;
    switch (m.method) {
      case "initialize":
        return this.initialize(id, m.params ?? {});
      case "ping":
        return this.reply(id, { result: {} });
      case "tools/list":
        return this.reply(id, { result: { tools: await this.list("tools", "tools/list", "tools") } });
      case "prompts/list":
        return this.reply(id, { result: { prompts: await this.list("prompts", "prompts/list", "prompts") } });
      case "resources/list":
        return this.reply(id, {
          result: { resources: await this.list("resources", "resources/list", "resources") },
        });
      case "resources/templates/list":
        return this.reply(id, {
          result: {
            resourceTemplates: await this.list("resources", "resources/templates/list", "resourceTemplates"),
          },
        });
      case "tools/call":
      case "prompts/get": {
        const kind = m.method === "tools/call" ? "tools" : "prompts";
        const name = String(m.params?.name ?? "");
        const target = this.resolve(name, kind);
        if (!target)
          return this.reply(id, {
            error: {
              code: JsonRpcErrorCode.InvalidParams,
              message: `unknown ${kind === "tools" ? "tool" : "prompt"} '${name}' in namespace '${this.o.namespace.slug}'`,
            },
          });
        const guards = target.child.member.guards;
        const lost = guards.standing?.();
        if (lost) return this.reply(id, lost.toJsonRpc(id));
        if (guards.authorizeTool) {
          const decision = guards.authorizeTool(kind === "tools" ? target.name : `prompt:${target.name}`);
          if (!decision.allowed) return this.reply(id, denied(decision).toJsonRpc(id));
        }
        if (guards.admit) {
          const admission = await guards.admit({
            method: m.method,
            tool: kind === "tools" ? target.name : undefined,
          });
          if (admission && !admission.allowed) return this.reply(id, rateLimited(admission).toJsonRpc(id));
        }
        return this.forward(target.child, id, m.method, { ...m.params, name: target.name });
      }
      case "resources/read":
      case "resources/subscribe":
      case "resources/unsubscribe": {
        const uri = String(m.params?.uri ?? "");
        const owner = this.resourceOwners.get(uri) ?? (await this.findResourceOwner(uri));
        const lost = owner?.member.guards.standing?.();
        if (lost) return this.reply(id, lost.toJsonRpc(id));
        const decision = owner?.member.guards.authorizeTool?.(`resource:${uri}`);
        if (decision && !decision.allowed) return this.reply(id, denied(decision).toJsonRpc(id));
        if (!owner)
          return this.reply(id, {
            error: {
              code: JsonRpcErrorCode.InvalidParams,
              message: `no server of namespace '${this.o.namespace.slug}' has resource ${uri}`,
            },
          });
        return this.forward(owner, id, m.method, m.params);
      }
      default:
        return this.reply(id, {
          error: {
            code: JsonRpcErrorCode.MethodNotFound,
            message: `method ${m.method} is not available on a namespace endpoint`,
          },
        });
    }
  }

  /** Relays a request to one member; its response (and progress) come back under the client's id. */
  private async forward(child: Child, id: RequestId, method: string, params: unknown) {
    const transport = child.transport;
    if (!transport)
      return this.reply(id, {
        error: {
          code: JsonRpcErrorCode.UpstreamUnavailable,
          message: `server '${child.member.server.name}' is unavailable`,
        },
      });
    const childId = `agg-${++child.seq}`;
    this.routes.set(id, { child, childId });
    child.pending.set(childId, (response) => {
      this.routes.delete(id);
      this.onmessage?.({ ...response, id } as JSONRPCMessage);
    });
    await transport.send({ jsonrpc: "2.0", id: childId, method, params } as JSONRPCMessage).catch(() => {
      child.pending.delete(childId);
      this.routes.delete(id);
      this.reply(id, {
        error: {
          code: JsonRpcErrorCode.UpstreamUnavailable,
          message: `server '${child.member.server.name}' is unavailable`,
        },
      });
    });
  }

  private async initialize(id: RequestId, params: Record<string, unknown>) {
    this.reply(id, { result: await this.initializeMembers(params) });
  }

  /** Initializes every member; the merged result is the aggregate's own. */
  private async initializeMembers(params: Record<string, unknown>) {
    const answers = await Promise.all(this.children.map((c) => this.ask(c, "initialize", params)));
    let protocolVersion = negotiateSessionVersion(params.protocolVersion);
    const caps: Record<string, unknown> = {};
    answers.forEach((a, i) => {
      const child = this.children[i]!;
      const result = a.result as
        | { protocolVersion?: string; capabilities?: Record<string, unknown> }
        | undefined;
      if (!result) {
        child.failed = (a.error as { message?: string } | undefined)?.message ?? "initialize failed";
        this.o.logger.warn(
          { namespace: this.o.namespace.slug, server: child.member.server.id, err: child.failed },
          "namespace member did not initialize",
        );
        return;
      }
      // The session speaks the oldest revision any member chose.
      if (result.protocolVersion && result.protocolVersion < protocolVersion)
        protocolVersion = result.protocolVersion;
      for (const cap of LIST_CAPS) if (result.capabilities?.[cap]) caps[cap] = { listChanged: true };
      if (result.capabilities?.logging) caps.logging = {};
      if (result.capabilities?.completions) caps.completions = {};
    });
    return {
      protocolVersion,
      capabilities: caps,
      serverInfo: { name: `mcpgw/${this.o.namespace.slug}`, version: "1.0.0" },
      instructions: `Tools, prompts and resources of the servers in namespace '${this.o.namespace.name}'.`,
    };
  }

  /**
   * For the namespace's operators: which names more than one member offers (unprefixed
   * namespaces keep the first and hide the others) and which members could not be reached.
   */
  async inspect(): Promise<{
    conflicts: NamespaceUpstream["conflicts"];
    unavailable: Array<{ server: string; reason: string }>;
  }> {
    await this.initializeMembers({
      protocolVersion: LATEST_SESSION_PROTOCOL_VERSION,
      capabilities: {},
      clientInfo: { name: "mcpgw-inspect", version: "1.0.0" },
    });
    await this.notify({ jsonrpc: "2.0", method: "notifications/initialized" });
    await this.list("tools", "tools/list", "tools");
    await this.list("prompts", "prompts/list", "prompts");
    return { conflicts: this.conflicts, unavailable: this.unavailable() };
  }

  /** Fans a list out to every member (all pages), merges under qualified names. */
  private async list(cap: (typeof LIST_CAPS)[number], method: string, field: string): Promise<unknown[]> {
    const perChild = await Promise.all(
      this.children.map(async (child) => {
        const items: Array<Record<string, unknown>> = [];
        // A member the caller may no longer use (disabled, deleted, denied) lists nothing.
        if (child.member.guards.standing?.()) return items;
        let cursor: string | undefined;
        for (let page = 0; page < 50; page++) {
          const answer = await this.ask(child, method, cursor ? { cursor } : {});
          const result = answer.result as Record<string, unknown> | undefined;
          if (!result) break;
          items.push(...((result[field] as Array<Record<string, unknown>>) ?? []));
          cursor = typeof result.nextCursor === "string" ? result.nextCursor : undefined;
          if (!cursor) break;
        }
        return items;
      }),
    );
    const merged: unknown[] = [];
    const seen = new Map<string, string[]>();
    perChild.forEach((items, i) => {
      const child = this.children[i]!;
      for (const item of items) {
        const keep = child.member.guards.keepTool;
        if (cap === "resources") {
          const uri = String(item.uri ?? item.uriTemplate ?? "");
          if (keep && !keep(`resource:${uri}`)) continue;
          if (item.uri) this.resourceOwners.set(uri, child);
          merged.push(item);
          continue;
        }
        const name = String(item.name ?? "");
        if (keep && !keep(cap === "tools" ? name : `prompt:${name}`)) continue;
        if (!this.prefixed) {
          const key = `${cap}:${name}`;
          const owners = seen.get(key) ?? [];
          owners.push(child.member.server.name);
          seen.set(key, owners);
          if (owners.length > 1) continue;
          this.unprefixedOwners.set(key, child);
        }
        merged.push({ ...item, name: this.qualify(child, name) });
      }
    });
    if (!this.prefixed) {
      this.conflicts = [
        ...this.conflicts.filter((c) => c.kind !== cap),
        ...[...seen]
          .filter(([, s]) => s.length > 1)
          .map(([key, servers]) => ({
            kind: key.split(":")[0]!,
            name: key.slice(key.indexOf(":") + 1),
            servers,
          })),
      ];
    }
    return merged;
  }

  private async findResourceOwner(uri: string): Promise<Child | undefined> {
    await this.list("resources", "resources/list", "resources");
    return this.resourceOwners.get(uri);
  }

  private fromChild(child: Child, m: Msg) {
    if (isResponse(m)) {
      const resolve = child.pending.get(String(m.id));
      if (resolve) {
        child.pending.delete(String(m.id));
        resolve(m);
      }
      return;
    }
    if (isRequest(m)) {
      // A member asks the client (sampling, elicitation, roots): under an id of the aggregate.
      const id = `srv-${++this.serverSeq}`;
      this.serverRequests.set(id, { child, id: m.id });
      this.onmessage?.({ ...m, id } as JSONRPCMessage);
      return;
    }
    if (typeof m.method === "string" && m.method.endsWith("/list_changed")) {
      this.onmessage?.(m as JSONRPCMessage);
      return;
    }
    // progress (tokens are the client's own), logging, resource updates.
    this.onmessage?.(m as JSONRPCMessage);
  }

  /** Members that could not be reached, for diagnostics. */
  unavailable(): Array<{ server: string; reason: string }> {
    return this.children
      .filter((c) => c.failed)
      .map((c) => ({ server: c.member.server.name, reason: c.failed! }));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.children.map((c) => c.transport?.close().catch(() => {})));
    this.onclose?.();
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}
