import { and, asc, eq, gt, or, type SQL } from "drizzle-orm";
import type { PgColumn } from "drizzle-orm/pg-core";
import { validation } from "../errors.ts";

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export interface PageRequest {
  cursor?: string | undefined;
  limit?: number | undefined;
}

interface CursorColumns {
  created_at: PgColumn;
  id: PgColumn;
}

/** The keyset condition and order for `(created_at, id)` cursor pagination. */
export function pageQuery(
  table: CursorColumns,
  req: PageRequest,
): { where: SQL | undefined; orderBy: SQL[]; limit: number } {
  const limit = Math.min(Math.max(req.limit ?? 50, 1), 200);
  let where: SQL | undefined;
  if (req.cursor) {
    let t: string;
    let id: string;
    try {
      [t, id] = JSON.parse(Buffer.from(req.cursor, "base64url").toString("utf8")) as [string, string];
      if (typeof t !== "string" || typeof id !== "string" || Number.isNaN(Date.parse(t))) throw new Error();
    } catch {
      throw validation("invalid cursor");
    }
    where = or(gt(table.created_at, new Date(t)), and(eq(table.created_at, new Date(t)), gt(table.id, id)));
  }
  return { where, orderBy: [asc(table.created_at), asc(table.id)], limit: limit + 1 };
}

/** Cuts the extra row fetched by `pageQuery` into the next cursor. */
export function toPage<R extends { created_at: Date; id: string }, T>(
  rows: R[],
  limit: number | undefined,
  map: (r: R) => T,
): Page<T> {
  const size = Math.min(Math.max(limit ?? 50, 1), 200);
  const items = rows.slice(0, size);
  const last = items[items.length - 1];
  const next_cursor =
    rows.length > size && last
      ? Buffer.from(JSON.stringify([last.created_at.toISOString(), last.id])).toString("base64url")
      : null;
  return { items: items.map(map), next_cursor };
}
