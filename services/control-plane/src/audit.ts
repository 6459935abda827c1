import { schema, type Tx } from "@mcpgw/db";
import type { VerbContext } from "./context.ts";

const SECRET_KEY = /pass(word)?|secret|token|credential|authorization|api[-_]?key|private|hash|^env$/i;

/** Replaces values under secret-looking keys (and all env values) with "[redacted]". */
export function redact(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redact);
  if (value instanceof Date) return value.toISOString();
  if (value && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      if (SECRET_KEY.test(k)) {
        out[k] =
          v && typeof v === "object" && !Array.isArray(v)
            ? Object.fromEntries(Object.keys(v).map((key) => [key, "[redacted]"]))
            : v == null
              ? v
              : "[redacted]";
      } else {
        out[k] = redact(v);
      }
    }
    return out;
  }
  return value;
}

export interface AuditEntry {
  action: string;
  resource_type: string;
  resource_id: string | null;
  before?: unknown;
  after?: unknown;
  org_id?: string | null;
}

/** Writes the audit row of a mutation inside the mutation's own transaction. */
export async function recordAudit(
  tx: Tx,
  ctx: Pick<VerbContext, "actor" | "meta">,
  entry: AuditEntry,
): Promise<void> {
  await tx.insert(schema.auditLogs).values({
    org_id: entry.org_id === undefined ? ctx.actor.org_id : entry.org_id,
    actor_type: "user",
    actor_id: ctx.actor.user_id,
    action: entry.action,
    resource_type: entry.resource_type,
    resource_id: entry.resource_id,
    ip: ctx.meta.ip ?? null,
    request_id: ctx.meta.request_id ?? null,
    user_agent: ctx.meta.user_agent ?? null,
    diff: { before: redact(entry.before ?? null), after: redact(entry.after ?? null) },
  });
}
