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

const EXPRESSION = /\{[^{}]*\}/g;

/** Longest URI matched against templates: longer ones are nobody's (and cost nothing to refuse). */
export const MAX_MATCHED_URI = 8192;

/**
 * A matcher for the URIs an RFC 6570 template expands to, in linear time (a client's URI must
 * never make matching expensive): the template's literal parts must appear in order, the first
 * at the start and the last at the end; what the expressions expand to is not checked. Enough
 * to pick the member a URI belongs to; `prefixLength` (the literal text before the first
 * expression) ranks templates that both match, the more specific first.
 */
export function templateMatcher(template: string): { test(uri: string): boolean; prefixLength: number } {
  const literals = template.split(EXPRESSION);
  const first = literals[0] ?? "";
  const last = literals.length > 1 ? (literals[literals.length - 1] ?? "") : "";
  const middle = literals.slice(1, -1).filter(Boolean);
  const exact = literals.length === 1;
  return {
    prefixLength: first.length,
    test(uri: string): boolean {
      if (uri.length > MAX_MATCHED_URI) return false;
      if (exact) return uri === template;
      if (!uri.startsWith(first) || !uri.endsWith(last) || uri.length < first.length + last.length)
        return false;
      let at = first.length;
      const end = uri.length - last.length;
      for (const literal of middle) {
        const found = uri.indexOf(literal, at);
        if (found < 0 || found + literal.length > end) return false;
        at = found + literal.length;
      }
      return true;
    },
  };
}
