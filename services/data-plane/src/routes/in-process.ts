import type { IncomingHttpHeaders, RequestListener } from "node:http";
import { Readable } from "node:stream";
import inject from "light-my-request";

/**
 * Serves a Fetch `Request` through the data plane's node request listener without a socket, so
 * `app.request()` reaches every route exactly as the node server does: the same route table,
 * Host/Origin guard, observe frame (request id, metrics, span) and handlers. MCP handlers are
 * written against node's request and response (they stream, and relay bytes); light-my-request
 * (Fastify's injector) gives them a real `IncomingMessage`/`ServerResponse` pair. Responses
 * stream: an SSE stream stays open until the handler or the caller's signal ends it.
 */
export async function injectRequest(listener: RequestListener, request: Request): Promise<Response> {
  const url = new URL(request.url);
  const body = request.body ? Buffer.from(await request.arrayBuffer()) : undefined;
  const headers: IncomingHttpHeaders = {};
  request.headers.forEach((value, name) => {
    headers[name] = value;
  });
  const res = await inject(listener, {
    method: request.method as "GET",
    url: url.pathname + url.search,
    authority: url.host,
    headers,
    ...(body ? { payload: body } : {}),
    payloadAsStream: true,
    signal: request.signal,
  });
  const out = new Headers();
  for (const [name, value] of Object.entries(res.headers)) {
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) out.append(name, String(v));
  }
  const noBody = res.statusCode === 204 || res.statusCode === 304 || request.method === "HEAD";
  const stream = res.stream();
  if (noBody) stream.resume();
  return new Response(noBody ? null : (Readable.toWeb(stream) as ReadableStream<Uint8Array>), {
    status: res.statusCode,
    statusText: res.statusMessage,
    headers: out,
  });
}
