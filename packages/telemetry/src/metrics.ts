import { timingSafeEqual } from "node:crypto";
import { collectDefaultMetrics, Registry } from "prom-client";

export { Counter, Gauge, Histogram, type Registry } from "prom-client";

/** A Prometheus registry with the process metrics and a `service` label on every series. */
export function createMetricsRegistry(service: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  collectDefaultMetrics({ register: registry });
  return registry;
}

/**
 * Whether a scrape may read `/metrics`: always when no token is configured, else only with
 * `Authorization: Bearer <token>` (compared in constant time).
 */
export function scrapeAllowed(authorization: string | undefined, token: string | undefined): boolean {
  if (!token) return true;
  const given = Buffer.from(/^Bearer\s+(\S+)$/i.exec(authorization ?? "")?.[1] ?? "");
  const expected = Buffer.from(token);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/** A tenant id as a metric label: the id itself only when tenant labels are opted in. */
export const tenantLabel = (id: string, enabled: boolean): string => (enabled ? id : "-");
