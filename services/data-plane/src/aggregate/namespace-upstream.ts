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
import { qualifyUri, templateMatcher, unqualifyUri } from "./resource-names.ts";

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
  /** When set (epoch ms), no member step waits past it (inspections answer within a budget). */
  deadline?: number | undefined;
  logger: Logger;
}

interface Child {
  member: Member;
  transport: Transport | undefined;
  failed: string | undefined;
  /** What the member's `initialize` declared (undefined until it answered). */
  capabilities: Record<string, unknown> | undefined;
  /** Lists the member did not answer (timed out, unreachable), by method: it is reported. */
  listFailures: Map<string, string>;
  pending: Map<string, (m: Msg) => void>;
  seq: number;
}

/** Where a resource URI (or template) of the namespace goes: its member and the member's own URI. */
interface ResourceTarget {
  child: Child;
  uri: string;
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
  /** Resource URIs as the namespace shows them → their member and own URI (from the lists). */
  private readonly resourceOwners = new Map<string, ResourceTarget>();
  /** Resource templates, for URIs expanded from them (unprefixed namespaces). */
  private templateOwners: Array<{
    child: Child;
    template: string;
    matcher: ReturnType<typeof templateMatcher>;
  }> = [];
  /** When the lists were last read again for an unknown resource (at most once per RELIST_MS). */
  private relistedAt = 0;
  /** Names that more than one member offers, when names are not prefixed. */
  conflicts: Array<{ kind: string; name: string; servers: string[] }> = [];
  private closed = false;

  constructor(private readonly o: AggregateOptions) {
    this.children = o.members.map((member) => ({
      member,
      transport: undefined,
      failed: undefined,
      capabilities: undefined,
      listFailures: new Map(),
      pending: new Map(),
      seq: 0,
    }));
  }

  private get prefixed(): boolean {
    return this.o.namespace.tool_naming === "prefix";
  }

  /** The prefix of a member's names, URIs and templates, when the namespace prefixes them. */
  private prefixOf(child: Child): string | undefined {
    return this.prefixed ? `${child.member.server.name}${this.o.namespace.tool_separator}` : undefined;
  }

  private qualify(child: Child, name: string): string {
    return `${this.prefixOf(child) ?? ""}${name}`;
  }

  /** How long a member step may take: the member budget, or what is left before the deadline. */
  private stepTimeout(): number {
    const { memberTimeoutMs, deadline } = this.o;
    return deadline === undefined
      ? memberTimeoutMs
      : Math.max(50, Math.min(memberTimeoutMs, deadline - Date.now()));
  }

  /** The member and its own name for a qualified name. */
  private resolve(name: string, kind: "tools" | "prompts"): { child: Child; name: string } | undefined {
    if (this.prefixed) {
      const child = this.ownerOfPrefixed(name);
      return child ? { child, name: name.slice(this.prefixOf(child)!.length) } : undefined;
    }
    const owner = this.unprefixedOwners.get(`${kind}:${name}`);
    return owner ? { child: owner, name } : undefined;
  }

  private readonly unprefixedOwners = new Map<string, Child>();

  /**
   * The member whose prefix a qualified name or URI carries; the longest wins, so members `foo`
   * and `foo__bar` each keep their own names.
   */
  private ownerOfPrefixed(name: string): Child | undefined {
    let owner: Child | undefined;
    for (const child of this.children) {
      const prefix = this.prefixOf(child)!;
      if (name.startsWith(prefix) && prefix.length > (owner ? this.prefixOf(owner)!.length : -1))
        owner = child;
    }
    return owner;
  }

  async start(): Promise<void> {
    await Promise.all(
      this.children.map(async (child) => {
        try {
          const transport = await withTimeout(
            this.o.connect(child.member.server),
            this.stepTimeout(),
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
  private ask(child: Child, method: string, params: unknown, timeoutMs = this.stepTimeout()): Promise<Msg> {
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
    void this.request(m).catch((err) => {
      this.o.logger.error(
        { err, namespace: this.o.namespace.slug, method: m.method },
        "namespace request failed",
      );
      this.reply(m.id!, {
        error: { code: JsonRpcErrorCode.InternalError, message: "internal gateway error" },
      });
    });
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
      case "logging/setLevel":
        return this.setLevel(id, m.params);
      case "completion/complete":
        return this.complete(id, m.params);
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
        const target = await this.resourceTarget(uri);
        const refused = target ? this.refuseResource(id, target) : this.unknownResource(id, uri);
        if (refused) return;
        const rewrite = m.method === "resources/read" ? this.contentsUris(target!.child) : undefined;
        return this.forward(target!.child, id, m.method, { ...m.params, uri: target!.uri }, rewrite);
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

  /**
   * Relays a request to one member; its response (and progress) come back under the client's
   * id, its result reshaped by `rewrite` when given (URIs qualified for the namespace).
   */
  private async forward(
    child: Child,
    id: RequestId,
    method: string,
    params: unknown,
    rewrite?: (result: Record<string, unknown>) => Record<string, unknown>,
  ) {
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
      const result = rewrite && response.result ? { result: rewrite(response.result) } : {};
      this.onmessage?.({ ...response, ...result, id } as JSONRPCMessage);
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
      child.capabilities = result.capabilities ?? {};
      for (const cap of LIST_CAPS)
        if (result.capabilities?.[cap]) caps[cap] = { ...(caps[cap] as object), listChanged: true };
      if ((result.capabilities?.resources as { subscribe?: boolean } | undefined)?.subscribe)
        caps.resources = { listChanged: true, subscribe: true };
      // Advertised when some member serves it: setLevel fans out, completions are routed.
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
    await Promise.all([
      this.list("tools", "tools/list", "tools"),
      this.list("prompts", "prompts/list", "prompts"),
      this.list("resources", "resources/list", "resources"),
      this.list("resources", "resources/templates/list", "resourceTemplates"),
    ]);
    return { conflicts: this.conflicts, unavailable: this.unavailable() };
  }

  /** Fans a list out to every member (all pages), merges under qualified names. */
  private async list(cap: (typeof LIST_CAPS)[number], method: string, field: string): Promise<unknown[]> {
    const perChild = await Promise.all(
      // A member that declared what it serves is asked only for those lists.
      this.children.map((child) =>
        child.capabilities && !child.capabilities[cap] ? [] : this.listOf(child, method, field),
      ),
    );
    const merged: unknown[] = [];
    const seen = new Map<string, string[]>();
    /** Whether `key` is this member's to show (unprefixed namespaces: the first member's). */
    const claim = (child: Child, key: string) => {
      if (this.prefixed) return true;
      const owners = seen.get(key) ?? [];
      owners.push(child.member.server.name);
      seen.set(key, owners);
      return owners.length === 1;
    };
    const templates: NamespaceUpstream["templateOwners"] = [];
    perChild.forEach((items, i) => {
      const child = this.children[i]!;
      const keep = child.member.guards.keepTool;
      for (const item of items) {
        if (cap === "resources") {
          const isTemplate = field === "resourceTemplates";
          const own = String((isTemplate ? item.uriTemplate : item.uri) ?? "");
          // Policy names a member's resources by their own URIs.
          if (keep && !keep(`resource:${own}`)) continue;
          if (!claim(child, `${field}:${own}`)) continue;
          const shown = qualifyUri(this.prefixOf(child), own);
          // Matched only in unprefixed namespaces (prefixes route the others).
          if (isTemplate && !this.prefixed)
            templates.push({ child, template: shown, matcher: templateMatcher(shown) });
          else this.resourceOwners.set(shown, { child, uri: own });
          const name = typeof item.name === "string" ? { name: this.qualify(child, item.name) } : {};
          merged.push({ ...item, ...name, [isTemplate ? "uriTemplate" : "uri"]: shown });
          continue;
        }
        const name = String(item.name ?? "");
        if (keep && !keep(cap === "tools" ? name : `prompt:${name}`)) continue;
        if (!claim(child, `${cap}:${name}`)) continue;
        if (!this.prefixed) this.unprefixedOwners.set(`${cap}:${name}`, child);
        merged.push({ ...item, name: this.qualify(child, name) });
      }
    });
    if (field === "resourceTemplates") this.templateOwners = templates;
    if (!this.prefixed) {
      const kind = cap === "resources" ? field : cap;
      this.conflicts = [
        ...this.conflicts.filter((c) => c.kind !== kind),
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

  /**
   * One member's list (all pages). A member that does not answer (timed out, unreachable) is
   * remembered as such for the reports; one that does not offer the list just lists nothing.
   */
  private async listOf(child: Child, method: string, field: string): Promise<Array<Record<string, unknown>>> {
    const items: Array<Record<string, unknown>> = [];
    // A member the caller may no longer use (disabled, deleted, denied) lists nothing.
    if (child.member.guards.standing?.()) return items;
    let cursor: string | undefined;
    for (let page = 0; page < 50; page++) {
      const answer = await this.ask(child, method, cursor ? { cursor } : {});
      const error = answer.error as { code?: number; message?: string } | undefined;
      if (
        error?.code === JsonRpcErrorCode.UpstreamTimeout ||
        error?.code === JsonRpcErrorCode.UpstreamUnavailable
      )
        child.listFailures.set(method, `${method}: ${error.message ?? "no answer"}`);
      const result = answer.result as Record<string, unknown> | undefined;
      if (!result) break;
      child.listFailures.delete(method);
      items.push(...((result[field] as Array<Record<string, unknown>>) ?? []));
      cursor = typeof result.nextCursor === "string" ? result.nextCursor : undefined;
      if (!cursor) break;
    }
    return items;
  }

  /**
   * The member of a resource URI or template: by its prefix when names are prefixed; otherwise a
   * URI from the lists, then a template or a URI expanded from one (the lists are read again
   * once when neither knows it yet).
   */
  private async resourceTarget(uri: string): Promise<ResourceTarget | undefined> {
    if (this.prefixed) {
      const child = this.ownerOfPrefixed(uri);
      const own = child ? unqualifyUri(this.prefixOf(child)!, uri) : undefined;
      return child && own !== undefined ? { child, uri: own } : undefined;
    }
    // A listed URI, a template itself (completions name templates), or a URI expanded from one.
    const known = () => {
      const listed = this.resourceOwners.get(uri);
      if (listed) return listed;
      const template =
        this.templateOwners.find((t) => t.template === uri) ??
        this.templateOwners
          .filter((t) => t.matcher.test(uri))
          .sort((a, b) => b.matcher.prefixLength - a.matcher.prefixLength)[0];
      return template ? { child: template.child, uri } : undefined;
    };
    if (known()) return known();
    // Unknown: read the lists again, but not for every unknown URI a client sends.
    if (Date.now() - this.relistedAt < RELIST_MS) return undefined;
    this.relistedAt = Date.now();
    await Promise.all([
      this.list("resources", "resources/list", "resources"),
      this.list("resources", "resources/templates/list", "resourceTemplates"),
    ]);
    return known();
  }

  /** Answers (and returns true) when the caller may not use this resource of its member. */
  private refuseResource(id: RequestId, target: ResourceTarget): boolean {
    const guards = target.child.member.guards;
    const lost = guards.standing?.();
    if (lost) {
      this.reply(id, lost.toJsonRpc(id));
      return true;
    }
    const decision = guards.authorizeTool?.(`resource:${target.uri}`);
    if (decision && !decision.allowed) {
      this.reply(id, denied(decision).toJsonRpc(id));
      return true;
    }
    return false;
  }

  private unknownResource(id: RequestId, uri: string): true {
    this.reply(id, {
      error: {
        code: JsonRpcErrorCode.InvalidParams,
        message: `no server of namespace '${this.o.namespace.slug}' has resource ${uri}`,
      },
    });
    return true;
  }

  /** For prefixed namespaces: a read's contents under the URIs the namespace shows. */
  private contentsUris(child: Child) {
    const prefix = this.prefixOf(child);
    if (!prefix) return undefined;
    return (result: Record<string, unknown>) => ({
      ...result,
      contents: Array.isArray(result.contents)
        ? result.contents.map((c: Record<string, unknown>) =>
            typeof c.uri === "string" ? { ...c, uri: qualifyUri(prefix, c.uri) } : c,
          )
        : result.contents,
    });
  }

  /** `logging/setLevel`: every member that logs hears it; the namespace answers once they did. */
  private async setLevel(id: RequestId, params: Record<string, unknown> | undefined) {
    const logging = this.children.filter((c) => c.transport && c.capabilities?.logging);
    if (logging.length === 0)
      return this.reply(id, {
        error: { code: JsonRpcErrorCode.MethodNotFound, message: "no server of this namespace logs" },
      });
    await Promise.all(logging.map((c) => this.ask(c, "logging/setLevel", params)));
    return this.reply(id, { result: {} });
  }

  /**
   * `completion/complete`: routed to the member of the prompt (by its name in the namespace) or
   * of the resource or template (by its URI), under the member's own name for it.
   */
  private async complete(id: RequestId, params: Record<string, unknown> | undefined) {
    const ref = (params?.ref ?? {}) as { type?: string; name?: unknown; uri?: unknown };
    if (ref.type === "ref/prompt") {
      const target = this.resolve(String(ref.name ?? ""), "prompts");
      if (!target)
        return this.reply(id, {
          error: {
            code: JsonRpcErrorCode.InvalidParams,
            message: `unknown prompt '${String(ref.name)}' in namespace '${this.o.namespace.slug}'`,
          },
        });
      const guards = target.child.member.guards;
      const lost = guards.standing?.();
      if (lost) return this.reply(id, lost.toJsonRpc(id));
      const decision = guards.authorizeTool?.(`prompt:${target.name}`);
      if (decision && !decision.allowed) return this.reply(id, denied(decision).toJsonRpc(id));
      return this.forward(target.child, id, "completion/complete", {
        ...params,
        ref: { ...ref, name: target.name },
      });
    }
    if (ref.type === "ref/resource") {
      const uri = String(ref.uri ?? "");
      const target = await this.resourceTarget(uri);
      if (!target) {
        this.unknownResource(id, uri);
        return;
      }
      if (this.refuseResource(id, target)) return;
      return this.forward(target.child, id, "completion/complete", {
        ...params,
        ref: { ...ref, uri: target.uri },
      });
    }
    return this.reply(id, {
      error: { code: JsonRpcErrorCode.InvalidParams, message: "ref must be a ref/prompt or a ref/resource" },
    });
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
    const prefix = this.prefixOf(child);
    if (m.method === "notifications/resources/updated" && prefix && typeof m.params?.uri === "string") {
      this.onmessage?.({
        ...m,
        params: { ...m.params, uri: qualifyUri(prefix, m.params.uri) },
      } as JSONRPCMessage);
      return;
    }
    // progress (tokens are the client's own), logging, resource updates.
    this.onmessage?.(m as JSONRPCMessage);
  }

  /** Members that could not be reached or did not answer a list, for diagnostics. */
  unavailable(): Array<{ server: string; reason: string }> {
    return this.children
      .map((c) => ({ c, reason: c.failed ?? [...c.listFailures.values()].join("; ") }))
      .filter(({ reason }) => reason)
      .map(({ c, reason }) => ({ server: c.member.server.name, reason }));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.children.map((c) => c.transport?.close().catch(() => {})));
    this.onclose?.();
  }
}

/** Least time between two re-reads of the members' resource lists for unknown URIs. */
const RELIST_MS = 5_000;

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
