import { JsonRpcErrorCode, jsonRpcError } from "@mcpgw/protocol";
import { GatewayError } from "../pipeline/errors.ts";

/*
 * How much one client may ask of a replica at once, whatever its transport: a client past these
 * waits (the gateway stops reading from it) or is refused, so that one abusive client cannot
 * stall the event loop, grow memory or starve other tenants. Fixed, not settings: they bound
 * abuse, not normal use, and every replica must enforce the same.
 */

/**
 * Most messages in one JSON-RPC batch, on every transport that takes batches: the MCP SDK's
 * Streamable HTTP server transport refuses more (its `MAX_BATCH_SIZE`), so the gateway does too.
 */
export const MAX_BATCH_MESSAGES = 100;

/**
 * Most client requests one session (a WebSocket, a legacy SSE or message-level Streamable HTTP
 * session, a `/rpc` caller's upstream session) has on its way upstream at once; past it the
 * gateway stops reading from the client until answers come back. It is the share of the event
 * loop one flooding session takes: 20,000 pings on one WebSocket, 2 cores, gave a `/health` p99
 * of ~30-40 ms at 4, 35-115 ms at 8, 60-120 ms at 16, ~400 ms at 64 (the spread is the machine's
 * other load). More concurrent requests wait their turn; they are not refused.
 */
export const MAX_INFLIGHT_PER_SESSION = 4;

/**
 * Most client requests one session holds waiting for a slot: far more than a paused WebSocket
 * still delivers (what one socket read held) or a few batches bring; a client past it floods,
 * and its further requests are refused at once instead of queued.
 */
export const MAX_WAITING_PER_SESSION = 4096;

/** The answer to a batch of more than MAX_BATCH_MESSAGES (HTTP 400 where there is HTTP). */
export function batchTooLarge(size: number) {
  return batchTooLargeError(size).toJsonRpc(null);
}

/** The refusal of a batch of more than MAX_BATCH_MESSAGES, as a gateway error. */
export function batchTooLargeError(size: number): GatewayError {
  return new GatewayError(
    "bad_request",
    `Invalid Request: Batch must not exceed ${MAX_BATCH_MESSAGES} messages (got ${size})`,
    { data: { max_batch_messages: MAX_BATCH_MESSAGES } },
  );
}

/** The answer to a request of a session that already has MAX_WAITING_PER_SESSION waiting. */
export function tooManyWaiting(id: string | number | null) {
  return jsonRpcError(
    id,
    JsonRpcErrorCode.RateLimited,
    `too many requests on this session: ${MAX_INFLIGHT_PER_SESSION} in flight and ${MAX_WAITING_PER_SESSION} waiting; wait for answers before sending more`,
    { max_inflight: MAX_INFLIGHT_PER_SESSION, max_waiting: MAX_WAITING_PER_SESSION },
  );
}

/** Gives a slot back (calling it again does nothing). */
export type Release = () => void;

/**
 * At most `max` tasks at once; later ones wait their turn in order, at most `maxWaiting` of
 * them. A slot given back goes straight to the oldest waiter.
 */
export class InflightLimit {
  private running = 0;
  private readonly waiting: Array<(release: Release | undefined) => void> = [];

  constructor(
    readonly max = MAX_INFLIGHT_PER_SESSION,
    readonly maxWaiting = MAX_WAITING_PER_SESSION,
  ) {}

  /** Every slot is taken. */
  get full(): boolean {
    return this.running >= this.max;
  }

  /** A slot now, if one is free (synchronous: no reordering against what follows). */
  tryAcquire(): Release | undefined {
    if (this.running >= this.max) return undefined;
    this.running++;
    return this.releaser();
  }

  /** A slot now or once one is free; undefined when too many already wait, or after `close`. */
  acquire(): Promise<Release | undefined> {
    const now = this.tryAcquire();
    if (now) return Promise.resolve(now);
    if (this.waiting.length >= this.maxWaiting) return Promise.resolve(undefined);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Refuses everyone still waiting (the session ended). */
  close(): void {
    for (const resolve of this.waiting.splice(0)) resolve(undefined);
  }

  private releaser(): Release {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next(this.releaser());
      else this.running--;
    };
  }
}
