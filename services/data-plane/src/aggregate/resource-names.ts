/*
 * Resource URIs and URI templates of a namespace. With prefixed names every member's URIs are
 * qualified like its tool names, `<server><separator><uri>` (`everything__demo://resource/1`),
 * so they never collide and a read, a subscription or a completion names its member; templates
 * are qualified the same way, so a URI expanded from a qualified template is itself qualified.
 * Unprefixed namespaces keep URIs as the members give them; a URI two members offer goes to
 * the first and is reported as a conflict.
 */

/** A member's URI or URI template as the namespace shows it. */
export const qualifyUri = (prefix: string | undefined, uri: string) => (prefix ? `${prefix}${uri}` : uri);

/** The member's own URI, when `uri` carries `prefix`. */
export function unqualifyUri(prefix: string, uri: string): string | undefined {
  return uri.startsWith(prefix) && uri.length > prefix.length ? uri.slice(prefix.length) : undefined;
}

const EXPRESSION = /\{([+#./;?&]?)([^{}]*)\}/g;

/**
 * A matcher for the URIs an RFC 6570 template expands to (levels 1-4, as MCP servers use them):
 * simple expressions match one path segment, `{+var}` and `{#var}` anything, `{?a,b}` and
 * `{&a}` a query part, `{/var}` path segments. Literal parts match exactly.
 */
export function templateMatcher(template: string): RegExp {
  let pattern = "";
  let last = 0;
  for (const m of template.matchAll(EXPRESSION)) {
    pattern += escapeRegExp(template.slice(last, m.index));
    const operator = m[1];
    const explode = (m[2] ?? "").includes("*");
    if (operator === "+" || operator === "#") pattern += operator === "#" ? "(?:#.*)?" : ".*";
    else if (operator === "?" || operator === "&") pattern += "(?:[?&][^#]*)?";
    else if (operator === "/") pattern += explode ? "(?:/[^?#]*)?" : "(?:/[^/?#]*)*";
    else if (operator === ".") pattern += "(?:\\.[^/?#]*)?";
    else if (operator === ";") pattern += "(?:;[^/?#]*)*";
    else pattern += explode ? "[^?#]*" : "[^/?#]*";
    last = (m.index ?? 0) + m[0].length;
  }
  pattern += escapeRegExp(template.slice(last));
  return new RegExp(`^${pattern}$`, "s");
}

const escapeRegExp = (literal: string) => literal.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
