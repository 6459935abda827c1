import { z } from "zod";

/**
 * Variables that would let a server's configuration run code of its own choosing inside an
 * allowed command (loader hooks, preload libraries, interpreter options) or pick another
 * executable. Checked by the control plane when a catalog entry is saved and by data planes
 * before spawning.
 */
export const UNSAFE_STDIO_ENV =
  /^(PATH|HOME|TMPDIR|NODE_OPTIONS|NODE_PATH|LD_\w*|DYLD_\w*|PYTHON\w*|PERL5\w*|PERLLIB|RUBY\w*|BASH_ENV|ENV|SHELLOPTS|BASHOPTS|PS4|GCONV_PATH|JAVA_TOOL_OPTIONS|_JAVA_OPTIONS|JDK_JAVA_OPTIONS|DENO_\w*|BUN_\w*|NPM_CONFIG_\w*|npm_config_\w*|UV_\w*)$/i;

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const PARAM_NAME = /^[a-z][a-z0-9_]{0,63}$/;
/** `{{name}}` in an argument of a catalog entry: replaced by the parameter's value. */
const PLACEHOLDER = /\{\{([a-z][a-z0-9_]{0,63})\}\}/g;

export const stdioParameterSchema = z.object({
  name: z.string().regex(PARAM_NAME, "parameter names are lowercase letters, digits and _"),
  description: z.string().max(1000).optional(),
  type: z.enum(["string", "integer", "boolean", "string_list"]),
  required: z.boolean().default(false),
  /** Write-only: sealed at rest, in snapshots and on disk; never returned or logged. */
  secret: z.boolean().default(false),
  /** The value goes into this environment variable of the child (else only into `{{name}}` args). */
  env: z.string().regex(ENV_NAME).optional(),
  /** Whole-value ECMAScript pattern a string value (or each list item) must match. */
  pattern: z.string().max(512).optional(),
  enum: z.array(z.string().max(1024)).min(1).max(100).optional(),
  max_length: z.number().int().positive().max(8192).optional(),
});
export type StdioParameter = z.infer<typeof stdioParameterSchema>;

export type StdioValue = string | number | boolean | string[];
export const stdioValueSchema = z.union([
  z.string().max(8192),
  z.number(),
  z.boolean(),
  z.array(z.string().max(8192)).max(64),
]);

/**
 * How a data plane launches a stdio server: the platform catalog entry's command, argument
 * template and fixed environment, the parameters it declares, and the org's values for them
 * (secret values sealed). Orgs never write a command line.
 */
export const stdioLaunchSchema = z.object({
  catalog_entry_id: z.string(),
  command: z.string(),
  args: z.array(z.string()),
  env: z.record(z.string(), z.string()),
  parameters: z.array(stdioParameterSchema),
  values: z.record(z.string(), stdioValueSchema),
  /** JSON object of the secret parameters' values, sealed with context `stdioSecretsContext`. */
  secrets_sealed: z.string().nullable(),
});
export type StdioLaunch = z.infer<typeof stdioLaunchSchema>;

/** Seal context of a stdio server's secret parameters: they open only for that server. */
export const stdioSecretsContext = (serverId: string) => `stdio:${serverId}`;

/** A problem with a catalog entry or with the values an org gave it; the message is safe to show. */
export class StdioLaunchError extends Error {
  override name = "StdioLaunchError";
}

/** Names of `{{…}}` placeholders in an argument. */
export function placeholders(arg: string): string[] {
  return [...arg.matchAll(PLACEHOLDER)].map((m) => m[1]!);
}

/** Checks a catalog entry's declarations against its template; throws StdioLaunchError. */
export function checkCatalogEntry(entry: {
  command: string;
  args: string[];
  env: Record<string, string>;
  parameters: StdioParameter[];
}): void {
  if (!entry.command.startsWith("/") && entry.command.includes("/"))
    throw new StdioLaunchError("command is a bare name (found on the data plane's PATH) or an absolute path");
  const names = new Set<string>();
  for (const p of entry.parameters) {
    if (names.has(p.name)) throw new StdioLaunchError(`parameter '${p.name}' is declared twice`);
    names.add(p.name);
    if (p.env && UNSAFE_STDIO_ENV.test(p.env))
      throw new StdioLaunchError(`parameter '${p.name}' may not set ${p.env} (it could change what runs)`);
    if (p.pattern !== undefined) {
      try {
        new RegExp(p.pattern, "u");
      } catch {
        throw new StdioLaunchError(`parameter '${p.name}' has an invalid pattern`);
      }
    }
  }
  for (const name of Object.keys(entry.env)) {
    if (!ENV_NAME.test(name) || UNSAFE_STDIO_ENV.test(name))
      throw new StdioLaunchError(`environment variable ${name} may not be set for a stdio server`);
  }
  const used = new Set(Object.values(entry.parameters).flatMap((p) => (p.env ? [p.env] : [])));
  for (const name of used)
    if (name in entry.env)
      throw new StdioLaunchError(`environment variable ${name} is both fixed and a parameter`);
  for (const arg of entry.args) {
    for (const name of placeholders(arg)) {
      const p = entry.parameters.find((d) => d.name === name);
      if (!p) throw new StdioLaunchError(`argument '${arg}' names undeclared parameter '${name}'`);
      if (p.type === "string_list" && arg !== `{{${name}}}`)
        throw new StdioLaunchError(`list parameter '${name}' must be an argument of its own`);
    }
  }
}

/** Checks one value against its declaration and returns it in canonical form. */
function checkValue(p: StdioParameter, value: unknown): StdioValue {
  const fail = (why: string): never => {
    throw new StdioLaunchError(`parameter '${p.name}' ${why}`);
  };
  const checkString = (s: unknown): string => {
    if (typeof s !== "string") return fail("must be a string");
    if (s.length > (p.max_length ?? 4096)) fail(`is longer than ${p.max_length ?? 4096} characters`);
    // biome-ignore lint/suspicious/noControlCharactersInRegex: NUL and line breaks are refused.
    if (/[\u0000\r\n]/.test(s)) fail("may not contain NUL or line breaks");
    if (p.enum && !p.enum.includes(s)) fail(`must be one of ${p.enum.join(", ")}`);
    if (p.pattern !== undefined) {
      if (!new RegExp(`^(?:${p.pattern})$`, "u").test(s)) fail("does not match its pattern");
    } else if (s.startsWith("-") && !p.env) {
      // An argument value that looks like an option could switch on what the entry did not declare.
      fail("may not start with '-'");
    }
    return s;
  };
  switch (p.type) {
    case "string":
      return checkString(value);
    case "integer":
      if (typeof value !== "number" || !Number.isSafeInteger(value)) return fail("must be an integer");
      return value;
    case "boolean":
      if (typeof value !== "boolean") return fail("must be true or false");
      return value;
    case "string_list":
      if (!Array.isArray(value) || value.length > 64) return fail("must be a list of at most 64 strings");
      return value.map(checkString);
  }
}

/**
 * Checks an org's values (secret and not) against the entry's declarations: unknown names,
 * types, patterns, required ones. Returns the values split into the clear and the secret part.
 */
export function checkStdioValues(
  parameters: StdioParameter[],
  given: Record<string, unknown>,
): { values: Record<string, StdioValue>; secrets: Record<string, StdioValue> } {
  const values: Record<string, StdioValue> = {};
  const secrets: Record<string, StdioValue> = {};
  for (const name of Object.keys(given)) {
    if (!parameters.some((p) => p.name === name))
      throw new StdioLaunchError(`the catalog entry declares no parameter '${name}'`);
  }
  for (const p of parameters) {
    const value = given[p.name];
    if (value === undefined || value === null) {
      if (p.required) throw new StdioLaunchError(`parameter '${p.name}' is required`);
      continue;
    }
    (p.secret ? secrets : values)[p.name] = checkValue(p, value);
  }
  return { values, secrets };
}

const text = (v: StdioValue): string => (Array.isArray(v) ? v.join(",") : String(v));

/**
 * The command line and environment of a launch: placeholders replaced by the values (an
 * argument naming a parameter without a value is left out; a list parameter becomes one
 * argument per item), parameters with an `env` target set in the environment.
 */
export function resolveStdioLaunch(
  launch: Pick<StdioLaunch, "command" | "args" | "env" | "parameters" | "values">,
  secrets: Record<string, StdioValue>,
): { command: string; args: string[]; env: Record<string, string> } {
  const all = { ...launch.values, ...secrets };
  const args: string[] = [];
  for (const arg of launch.args) {
    const names = placeholders(arg);
    if (names.some((n) => all[n] === undefined)) continue;
    const only = names.length === 1 && arg === `{{${names[0]}}}` ? all[names[0]!] : undefined;
    if (Array.isArray(only)) args.push(...only);
    else args.push(arg.replace(PLACEHOLDER, (_, n: string) => text(all[n]!)));
  }
  const env = { ...launch.env };
  for (const p of launch.parameters) {
    const value = all[p.name];
    if (p.env && value !== undefined) env[p.env] = text(value);
  }
  return { command: launch.command, args, env };
}
