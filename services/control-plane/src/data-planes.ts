import type { Bus } from "@mcpgw/bus";
import type { Logger } from "@mcpgw/telemetry";
import { z } from "zod";

/**
 * The subject one data-plane replica (a queue group) answers namespace inspections on: one
 * replica does the work, not all of them.
 */
export const dataPlaneInspectSubject = (busPrefix: string) => `${busPrefix}.dataplane.inspect`;

const NamespaceInspectionAnswer = z.discriminatedUnion("status", [
  z.object({
    status: z.literal("ok"),
    replica: z.string(),
    snapshot_version: z.number().int(),
    namespace: z.object({
      id: z.string(),
      slug: z.string(),
      tool_naming: z.enum(["prefix", "none"]),
      tool_separator: z.string(),
    }),
    conflicts: z.array(z.object({ kind: z.string(), name: z.string(), servers: z.array(z.string()) })),
    unavailable: z.array(z.object({ server: z.string(), reason: z.string() })),
  }),
  z.object({
    status: z.enum(["unknown_namespace", "org_disabled"]),
    replica: z.string(),
    snapshot_version: z.number().int().nullable(),
  }),
]);

/** What one data plane reported about a namespace. */
export type NamespaceInspectionAnswer = z.infer<typeof NamespaceInspectionAnswer>;

/** Questions only a data plane can answer (it alone talks to upstream servers). */
export interface DataPlanes {
  /**
   * One data plane's report on a namespace's name conflicts, or undefined when it did not
   * answer in time (or could not).
   */
  inspectNamespace(request: {
    org_id: string;
    namespace_id: string;
    /** The org's config version now: a replica behind it waits briefly for the snapshot. */
    min_version: number;
  }): Promise<NamespaceInspectionAnswer | undefined>;
}

/**
 * Asks one data plane over the bus (a queue group: one replica connects to the members, not all
 * of them), waiting at most `waitMs` for its answer.
 */
export function dataPlanesOnBus(o: {
  bus: Bus;
  busPrefix: string;
  logger: Logger;
  waitMs?: number;
}): DataPlanes {
  // Long enough for a member to take the data plane's own per-member budget (5 s by default).
  const waitMs = o.waitMs ?? 6_000;
  const subject = dataPlaneInspectSubject(o.busPrefix);
  return {
    async inspectNamespace(request) {
      // The replica sizes its work to the budget; the margin covers the bus round trip.
      const answer = await o.bus.ask(
        subject,
        { action: "namespace_conflicts", ...request, budget_ms: waitMs - 500 },
        waitMs,
      );
      if (answer === undefined) return undefined;
      const parsed = NamespaceInspectionAnswer.safeParse(answer);
      if (!parsed.success) {
        // An older replica ("unknown action") or one whose inspection failed.
        o.logger.warn({ answer }, "a data plane could not inspect a namespace");
        return undefined;
      }
      return parsed.data;
    },
  };
}
