/**
 * How policies name what a request targets. Tool names are matched as they are; prompts as
 * `prompt:<name>` and resources as `resource:<uri>`, so one rule language covers all three
 * (`tools: ["*"]` allows everything; `["prompt:*"]` every prompt).
 */
export function policyTarget(
  method: string | undefined,
  params: Record<string, unknown> | undefined,
): string | undefined {
  const name = typeof params?.name === "string" ? params.name : "";
  const uri = typeof params?.uri === "string" ? params.uri : "";
  switch (method) {
    case "tools/call":
      return name;
    case "prompts/get":
      return `prompt:${name}`;
    case "resources/read":
    case "resources/subscribe":
      return `resource:${uri}`;
    default:
      return undefined;
  }
}

type Item = Record<string, unknown>;

/** List methods whose results are filtered per caller: the result field and each item's policy name. */
const LISTS: Record<string, { field: string; name: (item: Item) => string | undefined }> = {
  "tools/list": { field: "tools", name: (i) => (typeof i.name === "string" ? i.name : undefined) },
  "prompts/list": {
    field: "prompts",
    name: (i) => (typeof i.name === "string" ? `prompt:${i.name}` : undefined),
  },
  "resources/list": {
    field: "resources",
    name: (i) => (typeof i.uri === "string" ? `resource:${i.uri}` : undefined),
  },
  "resources/templates/list": {
    field: "resourceTemplates",
    name: (i) => (typeof i.uriTemplate === "string" ? `resource:${i.uriTemplate}` : undefined),
  },
};

/** True for the list methods the gateway filters. */
export const isFilteredList = (method: string | undefined): boolean =>
  method !== undefined && method in LISTS;

/** The result of a list method with the items `keep` refuses removed (other results unchanged). */
export function filterListResult(
  method: string | undefined,
  result: unknown,
  keep: (target: string) => boolean,
): unknown {
  const list = method ? LISTS[method] : undefined;
  if (!list || typeof result !== "object" || result === null) return result;
  const items = (result as Item)[list.field];
  if (!Array.isArray(items)) return result;
  return {
    ...(result as Item),
    [list.field]: items.filter((item: Item) => {
      const target = list.name(item);
      return target !== undefined && keep(target);
    }),
  };
}
