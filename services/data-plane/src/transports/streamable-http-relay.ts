import type { ServerResponse } from "node:http";
import type { Readable } from "node:stream";
import type { JsonRpcId } from "@mcpgw/protocol";
import { GatewayError, sendGatewayError } from "../pipeline/errors.ts";
import { filterListResult } from "../policy-targets.ts";
import type { ProxyOutcome } from "./streamable-http-request.ts";

/*
 * The relay stage of the Streamable HTTP transport: an upstream's answer, JSON or SSE, streamed
 * to the client as it arrives with backpressure; only answers to list requests the caller's
 * policy filters are read whole and rewritten.
 */

/** Largest tools/list response the gateway will buffer to filter. */
const MAX_FILTERED_RESPONSE = 16 * 1024 * 1024;

/**
 * Streams an upstream body to the client with backpressure; a client that goes away ends the
 * upstream response (and so frees its connection). Resolves with an error message, if any.
 */
export function relayBody(body: Readable, res: ServerResponse): Promise<string | undefined> {
  return new Promise((resolve) => {
    const onClientClose = () => {
      if (res.writableFinished) return;
      body.destroy();
      resolve("client closed");
    };
    res.once("close", onClientClose);
    body.once("error", (err) => {
      res.off("close", onClientClose);
      res.destroy();
      resolve(err.message);
    });
    // Chunks arriving in one tick (typically a whole small response and its end) leave in one
    // write: corked until the next tick. Backpressure as with pipe: pause until the client drains.
    let corked = false;
    const uncork = () => {
      corked = false;
      res.uncork();
    };
    body.on("data", (chunk: Buffer) => {
      if (!corked) {
        corked = true;
        res.cork();
        process.nextTick(uncork);
      }
      if (!res.write(chunk)) {
        body.pause();
        res.once("drain", () => body.resume());
      }
    });
    body.once("end", () => {
      res.off("close", onClientClose);
      res.end();
      resolve(undefined);
    });
  });
}

/**
 * Reads a response to list requests whole (JSON or SSE, one answer or a batch), drops from each
 * list answer the items policy hides from this caller, and writes it on. Only bodies with list
 * requests pay for buffering; everything else streams.
 */
export async function relayFilteredList(
  body: AsyncIterable<Buffer> & { destroy(): void },
  res: ServerResponse,
  status: number,
  headers: Record<string, string>,
  isStream: boolean,
  rpcId: JsonRpcId,
  listed: ReadonlyMap<string | number, string>,
  keepTool: (target: string) => boolean,
): Promise<ProxyOutcome> {
  const method = listed.values().next().value as string;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > MAX_FILTERED_RESPONSE) {
      body.destroy();
      sendGatewayError(
        res,
        new GatewayError("upstream_unavailable", "upstream tools/list response too large to filter"),
        rpcId,
      );
      return { status: 502, method, error: "list too large to filter" };
    }
    chunks.push(chunk);
  }
  const filterOne = (message: unknown): unknown => {
    const m = message as { id?: unknown; result?: unknown };
    const listMethod = typeof m?.id === "string" || typeof m?.id === "number" ? listed.get(m.id) : undefined;
    if (listMethod === undefined || m.result === undefined) return message;
    return { ...m, result: filterListResult(listMethod, m.result, keepTool) };
  };
  const filter = (message: unknown): unknown =>
    Array.isArray(message) ? message.map(filterOne) : filterOne(message);
  const text = Buffer.concat(chunks, size).toString("utf8");
  let out: string;
  if (isStream) {
    // SSE: rewrite the data of the event that carries the response; leave other events as they are.
    out = text
      .split(/\r?\n\r?\n/)
      .map((event) => {
        const lines = event.split(/\r?\n/);
        const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, ""));
        if (data.length === 0) return event;
        let parsed: unknown;
        try {
          parsed = JSON.parse(data.join("\n"));
        } catch {
          return event;
        }
        const rewritten = JSON.stringify(filter(parsed));
        return [...lines.filter((l) => !l.startsWith("data:")), `data: ${rewritten}`].join("\n");
      })
      .join("\n\n");
  } else {
    try {
      out = JSON.stringify(filter(JSON.parse(text)));
    } catch {
      out = text;
    }
  }
  res.writeHead(status, { ...headers, "content-length": String(Buffer.byteLength(out)) });
  res.end(out);
  return { status, method };
}
