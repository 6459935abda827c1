import type { IncomingMessage, ServerResponse } from "node:http";
import {
  Counter,
  Histogram,
  type Registry,
  requestContext,
  requestIdFrom,
  SpanStatusCode,
  tracer,
} from "@mcpgw/telemetry";
import type { RouteMatch } from "../routes/table.ts";

const REQUEST_ID = Symbol("mcpgw.requestId");

/**
 * Routes served outside a request context. On Node 20 the first AsyncLocalStorage frame turns
 * on a promise hook for every promise of the process from then on (~20 µs, 10-20 % of the byte
 * relay's CPU per call), so the hot routes never open one: the byte relay of
 * `/servers/{id}/mcp`, whose few log lines name the request id themselves and whose handler
 * enters the context (inRequestContext) for every other way it serves a request, and the probes
 * and scrapes, which log nothing. A replica whose clients use only those never pays for it.
 */
const OUTSIDE_CONTEXT = new Set(["server.mcp", "health", "ready", "metrics"]);

/** The id of a request being served (set by `Observer.http` / `Observer.upgrade`). */
export function requestIdOf(req: IncomingMessage): string | undefined {
  return (req as IncomingMessage & { [REQUEST_ID]?: string })[REQUEST_ID];
}

/** Runs `fn` in the request's context, so that every log line written meanwhile names it. */
export function inRequestContext<T>(req: IncomingMessage, fn: () => T): T {
  const requestId = requestIdOf(req);
  return requestId === undefined ? fn() : requestContext.run({ requestId }, fn);
}

/**
 * The pipeline's last stage, and the frame around the others: every request of every route and
 * transport — refusals included — gets a request id (the client's `x-request-id` when it is a
 * sane token, else a new one; answered in `x-request-id` and carried by every log line written
 * while serving it), one span, and is counted and timed once, when its response ends.
 *
 * Counted by route (see routes/table.ts) and client transport, never by tenant ids, so the
 * series stay bounded whatever the number of servers. Long-lived streams (SSE, GET streams)
 * are counted and timed when they end; a WebSocket when its upgrade is answered.
 */
export class Observer {
  private readonly requests: Counter<"route" | "transport" | "status">;
  private readonly duration: Histogram<"route">;
  private readonly trace = tracer("mcpgw-data-plane");

  constructor(metrics: Registry) {
    this.requests = new Counter({
      name: "mcpgw_dp_http_requests_total",
      help: "Requests to the data plane by route, client transport and HTTP status (refusals included; WebSocket upgrades count as 101 or the refusal's status)",
      labelNames: ["route", "transport", "status"] as const,
      registers: [metrics],
    });
    this.duration = new Histogram({
      name: "mcpgw_dp_http_request_duration_seconds",
      help: "Time from a request's arrival until its response (or stream) ended, by route",
      labelNames: ["route"] as const,
      buckets: [0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10, 60, 600],
      registers: [metrics],
    });
  }

  /** Serves one HTTP request inside its frame: `serve` runs with the request's context. */
  http(req: IncomingMessage, res: ServerResponse, route: RouteMatch, serve: () => void): void {
    const requestId = requestIdFrom(req.headers["x-request-id"]);
    (req as IncomingMessage & { [REQUEST_ID]?: string })[REQUEST_ID] = requestId;
    res.setHeader("x-request-id", requestId);
    const started = performance.now();
    const span = this.trace.startSpan(`http ${route.name}`, {
      attributes: {
        "http.route": route.name,
        "http.request.method": req.method ?? "",
        "mcp.transport": route.transport,
        "mcpgw.request_id": requestId,
      },
    });
    let done = false;
    const end = () => {
      if (done) return;
      done = true;
      // A response cut before its headers (the client left) has status 0.
      const status = res.headersSent ? res.statusCode : 0;
      this.requests.inc({ route: route.name, transport: route.transport, status: String(status) });
      this.duration.observe({ route: route.name }, (performance.now() - started) / 1000);
      span.setAttribute("http.response.status_code", status);
      if (status >= 500 || status === 0) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    };
    res.once("finish", end);
    res.once("close", end);
    if (OUTSIDE_CONTEXT.has(route.name)) serve();
    else requestContext.run({ requestId }, serve);
  }

  /**
   * Serves one WebSocket upgrade inside its frame; `status` is reported by the handler (101 when
   * the socket opened, else the refusal's status) through the returned callback.
   */
  upgrade(req: IncomingMessage, route: RouteMatch, serve: (settled: (status: number) => void) => void): void {
    const requestId = requestIdFrom(req.headers["x-request-id"]);
    (req as IncomingMessage & { [REQUEST_ID]?: string })[REQUEST_ID] = requestId;
    const started = performance.now();
    const span = this.trace.startSpan(`ws ${route.name}`, {
      attributes: {
        "http.route": route.name,
        "mcp.transport": route.transport,
        "mcpgw.request_id": requestId,
      },
    });
    let done = false;
    const settled = (status: number) => {
      if (done) return;
      done = true;
      this.requests.inc({ route: route.name, transport: route.transport, status: String(status) });
      this.duration.observe({ route: route.name }, (performance.now() - started) / 1000);
      span.setAttribute("http.response.status_code", status);
      if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      span.end();
    };
    requestContext.run({ requestId }, () => serve(settled));
  }
}
