import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createRequire } from "node:module";
import type { AddressInfo } from "node:net";
import { fileURLToPath, pathToFileURL } from "node:url";
import { crc32, deflateSync } from "node:zlib";
import { completable } from "@modelcontextprotocol/sdk/server/completable.js";
import { McpServer, ResourceTemplate } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import {
  type EventStore,
  StreamableHTTPServerTransport,
} from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { RequestHandlerExtra } from "@modelcontextprotocol/sdk/shared/protocol.js";
import {
  type ElicitRequestFormParams,
  isInitializeRequest,
  type JSONRPCMessage,
  type LoggingLevel,
  type ServerNotification,
  type ServerRequest,
  SetLevelRequestSchema,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
} from "@modelcontextprotocol/sdk/types.js";
import { z } from "zod";
import { type ManagedProcess, startProcess, waitScale } from "./processes.ts";

/**
 * An MCP server, built with the v1 SDK, that implements what every server scenario of
 * `@modelcontextprotocol/conformance` asks of the server under test (the `test_*` tools, the
 * `test://` resources and the `test_*` prompts), over Streamable HTTP with sessions or over stdio.
 * The stateless 2026-07-28 revision (`server/discover`, per-request `_meta`) is not served.
 */

const require = createRequire(import.meta.url);

/** The runner script: `node --import <tsx> <it> stdio` or `… <it> http [port]`. */
export const conformanceFixtureEntry = fileURLToPath(
  new URL("./conformance-fixture-main.ts", import.meta.url),
);

/**
 * tsx's loader as an absolute file URL, so `--import` works from any working directory (a bare
 * `--import tsx` is resolved against the cwd, which fails in a private temp dir).
 */
export const tsxLoaderUrl = pathToFileURL(require.resolve("tsx")).href;

/** Arguments for `process.execPath` that start the fixture in `mode` (the HTTP port follows `http`). */
export function conformanceFixtureArgs(mode: "stdio" | "http", port?: number): string[] {
  return [
    "--import",
    tsxLoaderUrl,
    conformanceFixtureEntry,
    mode,
    ...(port === undefined ? [] : [String(port)]),
  ];
}

/** `process.execPath` plus these arguments serve the fixture over stdio. */
export const conformanceFixtureStdioArgs: string[] = conformanceFixtureArgs("stdio");

type Extra = RequestHandlerExtra<ServerRequest, ServerNotification>;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** One PNG chunk: length, type, data, CRC of type and data. */
function pngChunk(type: string, data: Buffer): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

/** A 1×1 red pixel, as a PNG. */
function redPixelPng(): Buffer {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(1, 0); // width
  header.writeUInt32BE(1, 4); // height
  header.writeUInt8(8, 8); // bit depth
  header.writeUInt8(2, 9); // colour type: RGB
  // compression, filter and interlace methods stay 0
  const scanline = Buffer.from([0, 0xff, 0x00, 0x00]); // filter byte, then R G B
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk("IHDR", header),
    pngChunk("IDAT", deflateSync(scanline)),
    pngChunk("IEND", Buffer.alloc(0)),
  ]);
}

/** A tenth of a second of a 440 Hz tone: 8 kHz, mono, 16-bit PCM WAV. */
function shortToneWav(): Buffer {
  const rate = 8000;
  const samples = rate / 10;
  const data = Buffer.alloc(samples * 2);
  for (let i = 0; i < samples; i++)
    data.writeInt16LE(Math.round(Math.sin((2 * Math.PI * 440 * i) / rate) * 8000), i * 2);
  const header = Buffer.alloc(44);
  header.write("RIFF", 0, "ascii");
  header.writeUInt32LE(36 + data.length, 4);
  header.write("WAVE", 8, "ascii");
  header.write("fmt ", 12, "ascii");
  header.writeUInt32LE(16, 16); // fmt chunk size
  header.writeUInt16LE(1, 20); // PCM
  header.writeUInt16LE(1, 22); // channels
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * 2, 28); // byte rate
  header.writeUInt16LE(2, 32); // block align
  header.writeUInt16LE(16, 34); // bits per sample
  header.write("data", 36, "ascii");
  header.writeUInt32LE(data.length, 40);
  return Buffer.concat([header, data]);
}

export const FIXTURE_PNG_BASE64 = redPixelPng().toString("base64");
export const FIXTURE_WAV_BASE64 = shortToneWav().toString("base64");

const LOG_LEVELS: LoggingLevel[] = [
  "debug",
  "info",
  "notice",
  "warning",
  "error",
  "critical",
  "alert",
  "emergency",
];

/** Words `test_prompt_with_arguments`' `arg1` completes from. */
const ARG1_WORDS = ["paris", "park", "party", "test", "testing", "tested"];

/** The JSON Schema 2020-12 features `json-schema-2020-12` expects to survive in `tools/list`. */
const SCHEMA_2020_12_EXTRAS = {
  $schema: "https://json-schema.org/draft/2020-12/schema",
  $defs: {
    address: {
      $anchor: "addressDef",
      type: "object",
      properties: { street: { type: "string" }, city: { type: "string" } },
    },
  },
  allOf: [{ anyOf: [{ required: ["phone"] }, { required: ["email"] }] }],
  if: { properties: { contactMethod: { const: "phone" } }, required: ["contactMethod"] },
  // biome-ignore lint/suspicious/noThenProperty: the JSON Schema keyword, in a plain data object
  then: { required: ["phone"] },
  else: { required: ["email"] },
};

/** A fresh conformance server: one per HTTP session, or one for a stdio process. */
export function createConformanceServer(): McpServer {
  const server = new McpServer(
    { name: "mcpgw-conformance-fixture", version: "1.0.0" },
    { capabilities: { logging: {}, resources: { subscribe: true } } },
  );

  // Log level per connection (each server serves one session); unset means everything is sent.
  let minLevel: LoggingLevel | undefined;
  server.server.setRequestHandler(SetLevelRequestSchema, async (request) => {
    minLevel = request.params.level;
    return {};
  });
  const log = async (extra: Extra, level: LoggingLevel, data: string) => {
    if (minLevel && LOG_LEVELS.indexOf(level) < LOG_LEVELS.indexOf(minLevel)) return;
    await extra.sendNotification({
      method: "notifications/message",
      params: { level, logger: "conformance-fixture", data },
    });
  };

  const subscriptions = new Set<string>();
  server.server.setRequestHandler(SubscribeRequestSchema, async (request) => {
    subscriptions.add(request.params.uri);
    return {};
  });
  server.server.setRequestHandler(UnsubscribeRequestSchema, async (request) => {
    subscriptions.delete(request.params.uri);
    return {};
  });

  // ---- tools ----

  server.registerTool("test_simple_text", { description: "Returns a simple text response" }, async () => ({
    content: [{ type: "text", text: "This is a simple text response for testing." }],
  }));

  server.registerTool("test_image_content", { description: "Returns a 1x1 red PNG image" }, async () => ({
    content: [{ type: "image", data: FIXTURE_PNG_BASE64, mimeType: "image/png" }],
  }));

  server.registerTool("test_audio_content", { description: "Returns a short WAV tone" }, async () => ({
    content: [{ type: "audio", data: FIXTURE_WAV_BASE64, mimeType: "audio/wav" }],
  }));

  server.registerTool(
    "test_embedded_resource",
    { description: "Returns an embedded text resource" },
    async () => ({
      content: [
        {
          type: "resource",
          resource: {
            uri: "test://embedded-resource",
            mimeType: "text/plain",
            text: "This is an embedded resource content.",
          },
        },
      ],
    }),
  );

  server.registerTool(
    "test_multiple_content_types",
    { description: "Returns text, image and embedded resource content" },
    async () => ({
      content: [
        { type: "text", text: "Multiple content types test:" },
        { type: "image", data: FIXTURE_PNG_BASE64, mimeType: "image/png" },
        {
          type: "resource",
          resource: {
            uri: "test://mixed-content-resource",
            mimeType: "application/json",
            text: JSON.stringify({ test: "data", value: 123 }),
          },
        },
      ],
    }),
  );

  server.registerTool(
    "test_tool_with_logging",
    { description: "Sends three info log notifications while it runs" },
    async (extra) => {
      await log(extra, "info", "Tool execution started");
      await sleep(50);
      await log(extra, "info", "Tool processing data");
      await sleep(50);
      await log(extra, "info", "Tool execution completed");
      return { content: [{ type: "text", text: "Tool with logging executed successfully" }] };
    },
  );

  server.registerTool("test_error_handling", { description: "Always returns a tool error" }, async () => ({
    isError: true,
    content: [{ type: "text", text: "This tool intentionally returns an error for testing" }],
  }));

  server.registerTool(
    "test_tool_with_progress",
    { description: "Reports progress 0, 50 and 100 of 100 when given a progress token" },
    async (extra) => {
      const progressToken = extra._meta?.progressToken;
      for (const progress of [0, 50, 100]) {
        if (progress > 0) await sleep(50);
        if (progressToken !== undefined)
          await extra.sendNotification({
            method: "notifications/progress",
            params: {
              progressToken,
              progress,
              total: 100,
              message: `Completed step ${progress / 50 + 1} of 3`,
            },
          });
      }
      return { content: [{ type: "text", text: "Tool with progress executed successfully" }] };
    },
  );

  server.registerTool(
    "test_sampling",
    {
      description: "Asks the client to sample an LLM with the given prompt",
      inputSchema: { prompt: z.string().describe("The prompt to send to the LLM") },
    },
    async ({ prompt }, extra) => {
      const result = await server.server.createMessage(
        { messages: [{ role: "user", content: { type: "text", text: prompt } }], maxTokens: 100 },
        { relatedRequestId: extra.requestId },
      );
      const text = result.content.type === "text" ? result.content.text : JSON.stringify(result.content);
      return { content: [{ type: "text", text: `LLM response: ${text}` }] };
    },
  );

  const elicit = async (extra: Extra, params: ElicitRequestFormParams) => {
    const result = await server.server.elicitInput(params, { relatedRequestId: extra.requestId });
    return `action=${result.action}, content=${JSON.stringify(result.content ?? {})}`;
  };

  server.registerTool(
    "test_elicitation",
    {
      description: "Asks the client for a username and an email address",
      inputSchema: { message: z.string().describe("The message to show the user") },
    },
    async ({ message }, extra) => {
      const answer = await elicit(extra, {
        message,
        requestedSchema: {
          type: "object",
          properties: {
            username: { type: "string", description: "User's response" },
            email: { type: "string", description: "User's email address" },
          },
          required: ["username", "email"],
        },
      });
      return { content: [{ type: "text", text: `User response: ${answer}` }] };
    },
  );

  server.registerTool(
    "test_elicitation_sep1034_defaults",
    { description: "Elicits a form whose fields all carry default values (SEP-1034)" },
    async (extra) => {
      const answer = await elicit(extra, {
        message: "Please review and update the form fields with defaults",
        requestedSchema: {
          type: "object",
          properties: {
            name: { type: "string", description: "User name", default: "John Doe" },
            age: { type: "integer", description: "User age", default: 30 },
            score: { type: "number", description: "User score", default: 95.5 },
            status: {
              type: "string",
              description: "User status",
              enum: ["active", "inactive", "pending"],
              default: "active",
            },
            verified: { type: "boolean", description: "Verification status", default: true },
          },
        },
      });
      return { content: [{ type: "text", text: `Elicitation completed: ${answer}` }] };
    },
  );

  server.registerTool(
    "test_elicitation_sep1330_enums",
    { description: "Elicits a form with every enum variant (SEP-1330)" },
    async (extra) => {
      const answer = await elicit(extra, {
        message: "Please select options from the enum fields",
        requestedSchema: {
          type: "object",
          properties: {
            untitledSingle: {
              type: "string",
              description: "Untitled single-select",
              enum: ["option1", "option2", "option3"],
            },
            titledSingle: {
              type: "string",
              description: "Titled single-select",
              oneOf: [
                { const: "value1", title: "First Option" },
                { const: "value2", title: "Second Option" },
                { const: "value3", title: "Third Option" },
              ],
            },
            legacyEnum: {
              type: "string",
              description: "Legacy titled enum",
              enum: ["opt1", "opt2", "opt3"],
              enumNames: ["Option One", "Option Two", "Option Three"],
            },
            untitledMulti: {
              type: "array",
              description: "Untitled multi-select",
              items: { type: "string", enum: ["option1", "option2", "option3"] },
            },
            titledMulti: {
              type: "array",
              description: "Titled multi-select",
              items: {
                anyOf: [
                  { const: "value1", title: "First Choice" },
                  { const: "value2", title: "Second Choice" },
                  { const: "value3", title: "Third Choice" },
                ],
              },
            },
          },
        },
      });
      return { content: [{ type: "text", text: `Elicitation completed: ${answer}` }] };
    },
  );

  server.registerTool(
    "json_schema_2020_12_tool",
    {
      description: "Tool with JSON Schema 2020-12 features",
      // The extra keywords ride on zod metadata, which zod's JSON Schema output carries as is.
      inputSchema: z
        .strictObject({
          name: z.string().optional(),
          address: z.object({ street: z.string().optional(), city: z.string().optional() }).optional(),
          contactMethod: z.enum(["phone", "email"]).optional(),
          phone: z.string().optional(),
          email: z.string().optional(),
        })
        .meta(SCHEMA_2020_12_EXTRAS),
    },
    async (args) => ({ content: [{ type: "text", text: `Received: ${JSON.stringify(args)}` }] }),
  );

  server.registerTool(
    "test_reconnection",
    { description: "Closes its SSE stream mid-call, then answers after the client reconnects (SEP-1699)" },
    async (extra) => {
      // Only offered over HTTP with a resumable stream (protocol 2025-11-25 or later).
      extra.closeSSEStream?.();
      await sleep(300);
      return { content: [{ type: "text", text: "Reconnection test completed successfully" }] };
    },
  );

  // ---- resources ----

  server.registerResource(
    "static-text",
    "test://static-text",
    { title: "Static text", description: "A static text resource", mimeType: "text/plain" },
    async (uri) => ({
      contents: [
        { uri: uri.href, mimeType: "text/plain", text: "This is the content of the static text resource." },
      ],
    }),
  );

  server.registerResource(
    "static-binary",
    "test://static-binary",
    { title: "Static binary", description: "A static binary resource (1x1 PNG)", mimeType: "image/png" },
    async (uri) => ({ contents: [{ uri: uri.href, mimeType: "image/png", blob: FIXTURE_PNG_BASE64 }] }),
  );

  server.registerResource(
    "watched-resource",
    "test://watched-resource",
    { title: "Watched resource", description: "A resource clients may subscribe to", mimeType: "text/plain" },
    async (uri) => ({
      contents: [
        {
          uri: uri.href,
          mimeType: "text/plain",
          text: `Watched resource content (subscribed: ${subscriptions.has(uri.href)})`,
        },
      ],
    }),
  );

  server.registerResource(
    "template-data",
    new ResourceTemplate("test://template/{id}/data", {
      list: undefined,
      complete: { id: (value) => ["1", "2", "3", "123"].filter((id) => id.startsWith(value)) },
    }),
    {
      title: "Template data",
      description: "Data for an id, from a URI template",
      mimeType: "application/json",
    },
    async (uri, { id }) => {
      const value = Array.isArray(id) ? id.join(",") : String(id);
      return {
        contents: [
          {
            uri: uri.href,
            mimeType: "application/json",
            text: JSON.stringify({ id: value, templateTest: true, data: `Data for ID: ${value}` }),
          },
        ],
      };
    },
  );

  // ---- prompts ----

  server.registerPrompt("test_simple_prompt", { description: "A simple prompt without arguments" }, () => ({
    messages: [{ role: "user", content: { type: "text", text: "This is a simple prompt for testing." } }],
  }));

  server.registerPrompt(
    "test_prompt_with_arguments",
    {
      description: "A prompt with two required arguments",
      argsSchema: {
        arg1: completable(z.string().describe("First test argument"), (value) =>
          ARG1_WORDS.filter((word) => word.startsWith(value)),
        ),
        arg2: z.string().describe("Second test argument"),
      },
    },
    ({ arg1, arg2 }) => ({
      messages: [
        {
          role: "user",
          content: { type: "text", text: `Prompt with arguments: arg1='${arg1}', arg2='${arg2}'` },
        },
      ],
    }),
  );

  server.registerPrompt(
    "test_prompt_with_embedded_resource",
    {
      description: "A prompt that embeds a resource",
      argsSchema: { resourceUri: z.string().describe("URI of the resource to embed") },
    },
    ({ resourceUri }) => ({
      messages: [
        {
          role: "user",
          content: {
            type: "resource",
            resource: {
              uri: resourceUri,
              mimeType: "text/plain",
              text: "Embedded resource content for testing.",
            },
          },
        },
        { role: "user", content: { type: "text", text: "Please process the embedded resource above." } },
      ],
    }),
  );

  server.registerPrompt("test_prompt_with_image", { description: "A prompt with image content" }, () => ({
    messages: [
      { role: "user", content: { type: "image", data: FIXTURE_PNG_BASE64, mimeType: "image/png" } },
      { role: "user", content: { type: "text", text: "Please analyze the image above." } },
    ],
  }));

  return server;
}

/** Events of one session kept for SSE resumption (`Last-Event-ID`), in order. */
class MemoryEventStore implements EventStore {
  private readonly events = new Map<string, { streamId: string; message: JSONRPCMessage }>();
  private next = 0;

  async storeEvent(streamId: string, message: JSONRPCMessage): Promise<string> {
    const eventId = `${streamId}_${String(++this.next).padStart(8, "0")}`;
    this.events.set(eventId, { streamId, message });
    return eventId;
  }

  async getStreamIdForEventId(eventId: string): Promise<string | undefined> {
    return this.events.get(eventId)?.streamId;
  }

  async replayEventsAfter(
    lastEventId: string,
    { send }: { send: (eventId: string, message: JSONRPCMessage) => Promise<void> },
  ): Promise<string> {
    const last = this.events.get(lastEventId);
    if (!last) throw new Error(`unknown event id ${lastEventId}`);
    let after = false;
    for (const [eventId, event] of this.events) {
      if (eventId === lastEventId) {
        after = true;
        continue;
      }
      // Priming events carry no message (stored as {}), so there is nothing to resend for them.
      if (after && event.streamId === last.streamId && "jsonrpc" in event.message)
        await send(eventId, event.message);
    }
    return last.streamId;
  }
}

export interface ConformanceFixture {
  /** `http://127.0.0.1:<port>/mcp`. */
  url: string;
  close(): Promise<void>;
}

export interface ConformanceHttpServer extends ConformanceFixture {
  port: number;
  /** Live sessions. */
  sessions(): number;
}

function sendJsonRpcError(res: ServerResponse, status: number, code: number, message: string): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code, message } }));
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * Serves the fixture in this process over Streamable HTTP on `127.0.0.1:<port>` (0: any free
 * port): one transport and server per session, DELETE ends a session, and a request whose Host
 * or Origin is not this loopback address is refused with 403 (DNS rebinding protection).
 */
export async function listenConformanceHttp(port = 0): Promise<ConformanceHttpServer> {
  const transports = new Map<string, StreamableHTTPServerTransport>();
  const servers = new Set<McpServer>();
  let allowedHosts = new Set<string>();
  let allowedOrigins = new Set<string>();

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path !== "/mcp") {
      sendJsonRpcError(res, 404, -32601, "Not found");
      return;
    }
    const host = req.headers.host?.toLowerCase();
    if (!host || !allowedHosts.has(host)) {
      sendJsonRpcError(res, 403, -32000, `Forbidden: invalid Host header ${JSON.stringify(host ?? "")}`);
      return;
    }
    const origin = req.headers.origin?.toLowerCase();
    if (origin !== undefined && !allowedOrigins.has(origin)) {
      sendJsonRpcError(res, 403, -32000, `Forbidden: invalid Origin header ${JSON.stringify(origin)}`);
      return;
    }

    let body: unknown;
    if (req.method === "POST") {
      const text = await readBody(req);
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        sendJsonRpcError(res, 400, -32700, "Parse error");
        return;
      }
    }

    const sessionId = req.headers["mcp-session-id"];
    if (typeof sessionId === "string") {
      const transport = transports.get(sessionId);
      if (!transport) {
        sendJsonRpcError(res, 404, -32001, "Session not found");
        return;
      }
      await transport.handleRequest(req, res, body);
      return;
    }
    if (req.method !== "POST") {
      sendJsonRpcError(res, 400, -32000, "Bad Request: Mcp-Session-Id header is required");
      return;
    }
    if (!isInitializeRequest(body)) {
      sendJsonRpcError(res, 400, -32000, "Bad Request: no session; the first request must be initialize");
      return;
    }

    const server = createConformanceServer();
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      eventStore: new MemoryEventStore(),
      retryInterval: 500,
      onsessioninitialized: (id) => {
        transports.set(id, transport);
      },
    });
    transport.onclose = () => {
      if (transport.sessionId) transports.delete(transport.sessionId);
      servers.delete(server);
      void server.close().catch(() => {});
    };
    servers.add(server);
    await server.connect(transport);
    await transport.handleRequest(req, res, body);
  };

  const http: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) sendJsonRpcError(res, 500, -32603, `Internal error: ${String(err)}`);
      else res.end();
    });
  });
  http.listen(port, "127.0.0.1");
  await new Promise<void>((resolve, reject) => {
    http.once("listening", resolve);
    http.once("error", reject);
  });
  const actual = (http.address() as AddressInfo).port;
  allowedHosts = new Set([`127.0.0.1:${actual}`, `localhost:${actual}`, `[::1]:${actual}`]);
  allowedOrigins = new Set([...allowedHosts].map((h) => `http://${h}`));

  return {
    url: `http://127.0.0.1:${actual}/mcp`,
    port: actual,
    sessions: () => transports.size,
    close: async () => {
      for (const t of [...transports.values()]) await t.close().catch(() => {});
      for (const s of [...servers]) await s.close().catch(() => {});
      http.closeAllConnections();
      await new Promise<void>((r) => http.close(() => r()));
    },
  };
}

/** Serves the fixture over this process's stdin/stdout until stdin ends. */
export async function serveConformanceStdio(): Promise<void> {
  const server = createConformanceServer();
  const transport = new StdioServerTransport();
  const closed = new Promise<void>((resolve) => {
    transport.onclose = () => resolve();
    process.stdin.once("end", () => resolve());
  });
  await server.connect(transport);
  await closed;
  await server.close().catch(() => {});
}

/**
 * Starts the fixture as a child process (`node --import tsx conformance-fixture-main.ts http`),
 * so it behaves like any other upstream; `port` 0 (the default) lets it pick a free one.
 */
export async function startConformanceFixture(
  options: { port?: number } = {},
): Promise<ConformanceFixture & { proc: ManagedProcess }> {
  const proc = startProcess(process.execPath, conformanceFixtureArgs("http", options.port ?? 0), {});
  const timeoutMs = 60_000 * waitScale;
  const deadline = Date.now() + timeoutMs;
  let url: string | undefined;
  while (!url) {
    url = /conformance fixture listening on (http:\/\/\S+\/mcp)/.exec(proc.output())?.[1];
    if (url) break;
    if (proc.child.exitCode !== null || proc.child.signalCode !== null)
      throw new Error(`conformance fixture exited before listening:\n${proc.output()}`);
    if (Date.now() > deadline) {
      await proc.kill();
      throw new Error(`conformance fixture not listening within ${timeoutMs} ms:\n${proc.output()}`);
    }
    await sleep(50);
  }
  return { url, proc, close: () => proc.stop() };
}
