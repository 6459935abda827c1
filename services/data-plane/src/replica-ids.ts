import { randomUUID } from "node:crypto";

/**
 * Identifiers that name the replica holding their state, so any replica can forward a request
 * to the one that can answer it. Versioned by prefix: a new layout gets a new prefix, and ids
 * minted by an older replica during a rolling upgrade keep being read.
 *
 * - message-level session ids: `s1.<replica>.<uuid>` (the `mcp-session-id` of sessions the
 *   gateway holds itself: legacy SSE, WebSocket, stdio and SSE upstreams);
 * - 2026-07-28 continuation states: `mrtr1.<replica>.<uuid>` (the `requestState` of an
 *   `InputRequiredResult`, resumed on the replica whose upstream request is waiting).
 */
const SESSION = /^s1\.(.+)\.([0-9a-f-]{36})$/i;
const CONTINUATION = /^mrtr1\.(.+)\.([0-9a-f-]{36})$/i;

/** A new session id owned by `replicaId`. */
export function mintSessionId(replicaId: string): string {
  return `s1.${replicaId}.${randomUUID()}`;
}

/** The replica a message-level session id names, or undefined for any other id. */
export function sessionOwner(sessionId: string): string | undefined {
  return SESSION.exec(sessionId)?.[1];
}

/** A continuation state for `key` (a UUID) owned by `replicaId`. */
export function continuationState(replicaId: string, key: string): string {
  return `mrtr1.${replicaId}.${key}`;
}

/** The owner and key a continuation state names, or undefined when it is not one. */
export function parseContinuationState(state: unknown): { owner: string; key: string } | undefined {
  const m = typeof state === "string" ? CONTINUATION.exec(state) : null;
  return m ? { owner: m[1]!, key: m[2]! } : undefined;
}
