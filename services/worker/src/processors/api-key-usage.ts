import { type Db, schema } from "@mcpgw/db";
import type { ApiKeyUsagePayload } from "@mcpgw/queue";
import { and, inArray, isNull, lt, or } from "drizzle-orm";

/**
 * The `api-key-usage` processor: records when keys were last used. Idempotent, and a late
 * batch never moves `last_used_at` backwards.
 */
export function apiKeyUsageProcessor(deps: { db: Db }) {
  return async ({ key_ids, used_at }: ApiKeyUsagePayload): Promise<void> => {
    const at = new Date(used_at);
    await deps.db
      .update(schema.apiKeys)
      .set({ last_used_at: at })
      .where(
        and(
          inArray(schema.apiKeys.id, key_ids),
          or(isNull(schema.apiKeys.last_used_at), lt(schema.apiKeys.last_used_at, at)),
        ),
      );
  };
}
