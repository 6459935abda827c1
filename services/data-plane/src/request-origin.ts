import type { IncomingHttpHeaders } from "node:http";

/** Paths probes and scrapers reach by pod address: no Host or Origin rule applies to them. */
const UNGUARDED = /^\/(health|ready|metrics)(\?|$)/;

export interface OriginRules {
  /** This gateway's public URLs (`MCPGW_PUBLIC_URL`): their host names are this gateway's names. */
  publicUrls: string[];
  /** More host names clients use (`MCPGW_ALLOWED_HOSTS`, e.g. behind a proxy); `*` allows any. */
  allowedHosts: string[];
  /** Browser origins allowed besides the gateway's own (`MCPGW_ALLOWED_ORIGINS`); `*` allows any. */
  allowedOrigins: string[];
}

const isLoopback = (host: string) =>
  host === "localhost" || host.endsWith(".localhost") || host === "[::1]" || /^127(\.\d{1,3}){3}$/.test(host);

/** The host name of a `Host` header or URL authority, lowercased, without the port. */
function hostName(authority: string): string | undefined {
  const m = /^(\[[0-9a-f:.]+\]|[^:/\s[\]]+)(?::\d{1,5})?$/i.exec(authority.trim());
  return m?.[1]?.toLowerCase();
}

/**
 * DNS-rebinding protection (MCP 2025-11-25 §transports: servers MUST validate `Origin`): a
 * request must name this gateway in `Host` (a loopback name, a public URL's host or an allowed
 * host), and a browser's `Origin`, when present, must be one of those hosts or an allowed origin.
 * Returns why a request is refused, or undefined.
 */
export function originGuard(rules: OriginRules) {
  const anyHost = rules.allowedHosts.includes("*");
  const anyOrigin = rules.allowedOrigins.includes("*");
  const hosts = new Set(
    [...rules.publicUrls.map((u) => new URL(u).host), ...rules.allowedHosts]
      .map((h) => hostName(h))
      .filter((h): h is string => h !== undefined),
  );
  const origins = new Set(rules.allowedOrigins.map((o) => o.replace(/\/$/, "").toLowerCase()));
  const known = (host: string | undefined) => host !== undefined && (isLoopback(host) || hosts.has(host));

  return (url: string, headers: IncomingHttpHeaders): string | undefined => {
    if (UNGUARDED.test(url)) return undefined;
    if (!anyHost) {
      const host = headers.host === undefined ? undefined : hostName(headers.host);
      if (!known(host))
        return `Host '${String(headers.host ?? "").slice(0, 100)}' is not a name of this gateway (MCPGW_PUBLIC_URL, MCPGW_ALLOWED_HOSTS)`;
    }
    const origin = headers.origin;
    if (origin === undefined || anyOrigin) return undefined;
    if (origins.has(origin.replace(/\/$/, "").toLowerCase())) return undefined;
    let originHost: string | undefined;
    try {
      const parsed = new URL(origin);
      if (parsed.protocol === "http:" || parsed.protocol === "https:") originHost = hostName(parsed.host);
    } catch {
      // `null` and other opaque origins are refused below.
    }
    if (known(originHost)) return undefined;
    return `Origin '${origin.slice(0, 100)}' is not allowed (MCPGW_ALLOWED_ORIGINS)`;
  };
}

export type OriginGuard = ReturnType<typeof originGuard>;
