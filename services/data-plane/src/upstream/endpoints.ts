/*
 * Which of a server's upstream endpoints a connection goes to, for every kind of upstream
 * connection (the Streamable HTTP byte relay and the message-level connections alike): one
 * picked at random in proportion to its weight, then, while connecting fails, the next ones in
 * turn, at most `retries` more times. A connection bound to an endpoint (an upstream session
 * lives there) goes to that one only. Only failures to connect move on: a request that may have
 * reached an upstream is never repeated (JSON-RPC calls are not idempotent).
 */

/** What the chooser reads of a server (a `ServerEntry` satisfies it). */
export interface EndpointChoice {
  endpoints: ReadonlyArray<{ weight: number }>;
  /** How many more endpoints to try after the first when connecting fails. */
  retries: number;
}

/** Error codes of a connection that was never made, so no request reached the upstream. */
export const CONNECT_ERRORS: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EHOSTUNREACH",
  "ENOTFOUND",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_SOCKET",
]);

/** Index of an endpoint picked at random in proportion to its weight (0 for zero or one endpoint). */
export function pickEndpoint(
  endpoints: ReadonlyArray<{ weight: number }>,
  random: () => number = Math.random,
): number {
  if (endpoints.length <= 1) return 0;
  let total = 0;
  for (const e of endpoints) total += e.weight;
  let r = random() * total;
  for (let i = 0; i < endpoints.length; i++) {
    r -= endpoints[i]!.weight;
    if (r < 0) return i;
  }
  return endpoints.length - 1;
}

/**
 * The endpoint indexes to try, in order, for one connection: a weighted pick, then its
 * successors round the list while connecting fails (1 + min(retries, 2 × endpoints) attempts;
 * one endpoint is tried again). `bound`: the connection belongs to that endpoint (a session
 * lives there), which is tried once and alone. Empty when there is nothing to try (no endpoints,
 * or a bound index the server no longer has).
 */
export function endpointOrder(
  server: EndpointChoice,
  options: { bound?: number | undefined; random?: () => number } = {},
): number[] {
  const n = server.endpoints.length;
  if (options.bound !== undefined) return options.bound >= 0 && options.bound < n ? [options.bound] : [];
  if (n === 0) return [];
  const first = pickEndpoint(server.endpoints, options.random);
  const attempts = 1 + Math.min(server.retries, n * 2);
  return Array.from({ length: attempts }, (_, i) => (first + i) % n);
}

/** Whether an error (or its cause, as `fetch` wraps it) says the connection was never made. */
export function isConnectFailure(err: unknown): boolean {
  for (let e = err, depth = 0; e && typeof e === "object" && depth < 5; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && CONNECT_ERRORS.has(code)) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}
