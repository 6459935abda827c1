import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from "node:dns";
import { isIP } from "node:net";
import { Agent, buildConnector, type Dispatcher, fetch as undiciFetch } from "undici";
import { isPublicAddress } from "./addresses.ts";

/** The `code` of errors for connections the egress rules refused. */
export const EGRESS_REFUSED = "EUPSTREAMPRIVATE";

function refused(host: string, verb: "is" | "resolves to"): NodeJS.ErrnoException {
  return Object.assign(
    new Error(
      `egress refused: ${host} ${verb} a private or special-purpose address (set MCPGW_ALLOW_PRIVATE_UPSTREAMS=true to allow it)`,
    ),
    { code: EGRESS_REFUSED },
  );
}

type LookupCallback = (
  err: NodeJS.ErrnoException | null,
  address: string | LookupAddress[],
  family?: number,
) => void;

/** The shape of `dns.lookup` the lookups here wrap (tests inject their own resolver). */
export type Resolver = (
  hostname: string,
  options: LookupOptions & { all: true },
  callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void,
) => void;

/** A `dns.lookup` replacement that fails with `EUPSTREAMPRIVATE` when any address of the name is not public. */
export function publicOnlyLookupWith(resolve: Resolver) {
  return (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    resolve(hostname, { ...options, all: true }, (err, list) => {
      if (err) return callback(err, []);
      // One private address among public ones is enough to refuse: a rebinding name can offer both.
      if (list.some((a) => !isPublicAddress(a.address)))
        return callback(refused(hostname, "resolves to"), []);
      if (options.all) return callback(null, list);
      const first = list[0];
      if (!first)
        return callback(Object.assign(new Error(`${hostname} did not resolve`), { code: "ENOTFOUND" }), []);
      callback(null, first.address, first.family);
    });
  };
}

/**
 * A `dns.lookup` for outgoing connections that refuses private addresses: checked when the
 * connection is made, so a name that resolved to a public address at registration cannot be
 * re-pointed at an internal one later (DNS rebinding).
 */
export const publicOnlyLookup = publicOnlyLookupWith(dnsLookup as unknown as Resolver);

export interface EgressOptions {
  /** `MCPGW_ALLOW_PRIVATE_UPSTREAMS`: when true, nothing is refused. */
  allowPrivate: boolean;
  /** Connect timeout in ms (undici's default, 10 s, otherwise). */
  connectTimeoutMs?: number | undefined;
  /** Name resolution; `dns.lookup` by default (tests inject a resolver for public names). */
  resolve?: Resolver | undefined;
}

/**
 * An undici connector that applies the egress rules at connect time: to the resolved address of
 * a name (through the lookup) and to an IP-literal host (checked here, since `net.connect` does
 * not call `lookup` for literals).
 */
export function egressConnector(o: EgressOptions): buildConnector.connector {
  const timeout = o.connectTimeoutMs ?? 10_000;
  if (o.allowPrivate) return buildConnector({ timeout });
  const lookup = o.resolve ? publicOnlyLookupWith(o.resolve) : publicOnlyLookup;
  const connect = buildConnector({ timeout, lookup });
  return (options, callback) => {
    const host = options.hostname.replace(/^\[(.*)\]$/, "$1");
    if (isIP(host) && !isPublicAddress(host)) return callback(refused(host, "is"), null);
    connect(options, callback);
  };
}

/** An undici `Agent` whose every connection passes the egress rules. */
export function egressAgent(o: EgressOptions): Agent {
  return new Agent({ connect: egressConnector(o) });
}

/**
 * A `fetch` whose connections come from `dispatcher` (an `egressAgent`, or pools built with
 * `egressConnector`), redirects included: each new connection is checked.
 */
export function egressFetch(dispatcher: Dispatcher): typeof globalThis.fetch {
  return ((input: string | URL | Request, init?: RequestInit) => {
    // Callers here (jose, the MCP SDK's transports) pass URLs; a Request's method, headers and
    // body would be lost in the conversion to undici's own Request, so it is refused.
    if (typeof input !== "string" && !(input instanceof URL))
      return Promise.reject(new TypeError("egressFetch takes a URL, not a Request"));
    return undiciFetch(input, { ...(init as Parameters<typeof undiciFetch>[1]), dispatcher });
  }) as unknown as typeof globalThis.fetch;
}
