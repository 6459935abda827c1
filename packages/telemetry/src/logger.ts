import { type Logger, pino } from "pino";
import { requestContext } from "./request-context.ts";

export type { Logger };

/** Paths that must never reach a log line, whatever logs them. */
const REDACT = [
  "password",
  "*.password",
  "access_token",
  "*.access_token",
  "refresh_token",
  "*.refresh_token",
  "authorization",
  "*.authorization",
  "headers.authorization",
  "headers['x-api-key']",
  "secret",
  "*.secret",
];

/** The structured (JSON) logger of a service. */
export function createLogger(service: string, level = process.env.LOG_LEVEL ?? "info"): Logger {
  return pino({
    name: service,
    level,
    redact: { paths: REDACT, censor: "[redacted]" },
    base: { service },
    // Every line written while serving a request names it (see request-context.ts).
    mixin: () => {
      const ctx = requestContext.getStore();
      return ctx ? { request_id: ctx.requestId } : {};
    },
  });
}
