import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";

/** A domain error a verb throws; the transport maps its code to a status. */
export class AppError extends Error {
  constructor(
    readonly code: keyof typeof STATUS_BY_CODE,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = code;
  }
}

/** The one table from domain error codes to HTTP statuses. */
export const STATUS_BY_CODE = {
  Validation: 400,
  Unauthorized: 401,
  Forbidden: 403,
  NotFound: 404,
  Conflict: 409,
  PayloadTooLarge: 413,
  UnsupportedMediaType: 415,
  RateLimited: 429,
  UpstreamUnavailable: 502,
  Unavailable: 503,
} as const;

export const notFound = (what: string) => new AppError("NotFound", `${what} not found`);
export const forbidden = (why = "your role does not allow this action") => new AppError("Forbidden", why);
export const conflict = (why: string) => new AppError("Conflict", why);
export const validation = (why: string, details?: Record<string, unknown>) =>
  new AppError("Validation", why, details);
export const unauthorized = (why = "authentication required") => new AppError("Unauthorized", why);

/** Rejects an update that names no field to change. */
export function assertChanges(patch: object): void {
  if (Object.values(patch).every((v) => v === undefined))
    throw validation("the request changes nothing: name at least one field");
}

const TITLES: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  409: "Conflict",
  413: "Payload Too Large",
  415: "Unsupported Media Type",
  429: "Too Many Requests",
  500: "Internal Server Error",
  502: "Bad Gateway",
  503: "Service Unavailable",
};

/** An RFC 9457 problem+json response. */
export function problem(
  c: Context,
  status: number,
  detail: string,
  extra: Record<string, unknown> = {},
): Response {
  const body = {
    type: "about:blank",
    title: TITLES[status] ?? "Error",
    status,
    detail,
    instance: c.req.path,
    request_id: c.get("requestId"),
    ...extra,
  };
  const headers: Record<string, string> = { "content-type": "application/problem+json" };
  if (status === 401) headers["www-authenticate"] = 'Bearer realm="mcpgw"';
  if (typeof extra.retry_after === "number") headers["retry-after"] = String(extra.retry_after);
  return c.body(JSON.stringify(body), status as ContentfulStatusCode, headers);
}

/** Maps anything thrown in a handler to problem+json; only unexpected errors are logged. */
export function toProblem(err: unknown, c: Context): Response {
  if (err instanceof AppError) return problem(c, STATUS_BY_CODE[err.code], err.message, err.details ?? {});
  if (err instanceof HTTPException) {
    const status = err.status;
    const detail =
      status === 400
        ? "malformed request body: expected valid JSON"
        : err.message || TITLES[status] || "error";
    return problem(c, status, detail);
  }
  const pgCode =
    (err as { code?: string; cause?: { code?: string } })?.cause?.code ?? (err as { code?: string })?.code;
  if (pgCode === "23505") return problem(c, 409, "a resource with the same unique name already exists");
  if (pgCode === "23503") return problem(c, 409, "a resource this request refers to no longer exists");
  if (pgCode === "22P02" || pgCode === "22021") return problem(c, 400, "invalid value in request");
  c.get("logger")?.error({ err, request_id: c.get("requestId") }, "unhandled error");
  return problem(c, 500, "internal error; quote the request id when reporting it");
}
