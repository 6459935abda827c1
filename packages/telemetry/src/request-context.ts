import { AsyncLocalStorage } from "node:async_hooks";
import { randomUUID } from "node:crypto";

/** What every log line and span written while serving one request carries. */
export interface RequestContext {
  requestId: string;
}

/** The request being served by the current async context, if any. */
export const requestContext = new AsyncLocalStorage<RequestContext>();

/** The current request's id (undefined outside a request). */
export const currentRequestId = (): string | undefined => requestContext.getStore()?.requestId;

/** A client-chosen id is kept when it is a sane token: short, printable, no spaces or quotes. */
const SANE_REQUEST_ID = /^[A-Za-z0-9._:@/+=-]{1,128}$/;

/** The request id for a request: the client's `x-request-id` if sane, otherwise a new one. */
export function requestIdFrom(header: string | string[] | undefined): string {
  return typeof header === "string" && SANE_REQUEST_ID.test(header) ? header : randomUUID();
}
