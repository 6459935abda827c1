import type { IncomingHttpHeaders } from "node:http";
import type { RawData, WebSocket } from "ws";

/*
 * The authenticate stage for WebSocket clients that cannot set request headers (browsers, the
 * SDK's WebSocketClientTransport). Besides `Authorization` / `X-API-Key` on the upgrade request,
 * a client may present its credential
 *
 * - as a subprotocol next to `mcp`: `Sec-WebSocket-Protocol: mcp, mcpgw.bearer.<token>` (the
 *   server selects `mcp`, never echoes the credential); or
 * - in its first message, within FIRST_MESSAGE_MS of the upgrade:
 *   `{"jsonrpc":"2.0","method":"mcpgw/authenticate","params":{"token":"<token or API key>"}}`
 *   (as a request, with an id, it is answered `{}` once the credential is accepted).
 *
 * Never in the query string: URLs land in access logs. Until the credential is checked nothing
 * about the target is looked up and nothing reaches an upstream; a socket that does not
 * authenticate is closed with 4401. Sockets waiting for their first message are bounded, per
 * client address and in all, so they cannot be used to hold the gateway's sockets.
 */

export const AUTH_SUBPROTOCOL_PREFIX = "mcpgw.bearer.";
export const AUTHENTICATE_METHOD = "mcpgw/authenticate";
/** How long an upgraded socket may take to send its credential. */
export const FIRST_MESSAGE_MS = 10_000;
const MAX_WAITING = 1_000;
const MAX_WAITING_PER_CLIENT = 32;

/** The credential a client offered as a subprotocol, if any. */
export function subprotocolCredential(header: string | string[] | undefined): string | undefined {
  const offered = (Array.isArray(header) ? header.join(",") : (header ?? "")).split(",");
  for (const raw of offered) {
    const p = raw.trim();
    if (p.startsWith(AUTH_SUBPROTOCOL_PREFIX) && p.length > AUTH_SUBPROTOCOL_PREFIX.length)
      return p.slice(AUTH_SUBPROTOCOL_PREFIX.length);
  }
  return undefined;
}

/** Headers carrying `token` as a bearer credential (API keys are accepted as bearers too). */
export function withBearer(headers: IncomingHttpHeaders, token: string): void {
  headers.authorization = `Bearer ${token}`;
  delete headers["x-api-key"];
}

/** Admission to the first-message window: bounded per client address and in all. */
export class FirstMessageWindow {
  private readonly waiting = new Map<string, number>();
  private total = 0;

  /** A release function, or undefined when the client (or the gateway) has too many waiting. */
  admit(client: string): (() => void) | undefined {
    const mine = this.waiting.get(client) ?? 0;
    if (this.total >= MAX_WAITING || mine >= MAX_WAITING_PER_CLIENT) return undefined;
    this.waiting.set(client, mine + 1);
    this.total++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.total--;
      const left = (this.waiting.get(client) ?? 1) - 1;
      if (left > 0) this.waiting.set(client, left);
      else this.waiting.delete(client);
    };
  }
}

export type FirstMessage =
  | {
      ok: true;
      token: string;
      /** The id of an authenticate request, to answer once accepted. */
      id?: string | number | undefined;
      /** Frames that came after the credential, for the session to read in order. */
      later: Array<[RawData, boolean]>;
      /** Stops collecting `later`: the session's own listener reads from here on. */
      stop: () => void;
    }
  | { ok: false; reason: string };

/** Waits for the socket's first frame and reads a credential from it. */
export function firstMessageCredential(ws: WebSocket, timeoutMs = FIRST_MESSAGE_MS): Promise<FirstMessage> {
  return new Promise((resolve) => {
    const later: Array<[RawData, boolean]> = [];
    let accepted: boolean | undefined;
    const stop = () => ws.off("message", onMessage);
    const finish = (result: FirstMessage) => {
      accepted = result.ok;
      clearTimeout(timer);
      ws.off("close", onClose);
      // Frames after the credential keep being collected until the session takes the socket.
      if (!result.ok) stop();
      resolve(result);
    };
    const onMessage = (data: RawData, isBinary: boolean) => {
      if (accepted === undefined) finish(readCredential(data, later, stop));
      else if (accepted) later.push([data, isBinary]);
    };
    const onClose = () => finish({ ok: false, reason: "closed before authenticating" });
    const timer = setTimeout(
      () =>
        finish({
          ok: false,
          reason: `no credential within ${timeoutMs / 1000} s: send ${AUTHENTICATE_METHOD} first`,
        }),
      timeoutMs,
    );
    timer.unref();
    ws.on("message", onMessage);
    ws.once("close", onClose);
  });
}

function readCredential(data: RawData, later: Array<[RawData, boolean]>, stop: () => void): FirstMessage {
  let m: { jsonrpc?: unknown; id?: unknown; method?: unknown; params?: { token?: unknown } } | undefined;
  try {
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as Buffer);
    m = JSON.parse(bytes.toString("utf8"));
  } catch {
    m = undefined;
  }
  if (m?.jsonrpc !== "2.0" || m.method !== AUTHENTICATE_METHOD)
    return {
      ok: false,
      reason: `missing credentials: send ${AUTHENTICATE_METHOD} first, or Authorization / X-API-Key`,
    };
  const token = m.params?.token;
  if (typeof token !== "string" || !token || token.length > 8192)
    return { ok: false, reason: `${AUTHENTICATE_METHOD} needs params.token` };
  const id = typeof m.id === "string" || typeof m.id === "number" ? m.id : undefined;
  return { ok: true, token: token.replace(/^Bearer\s+/i, ""), id, later, stop };
}
