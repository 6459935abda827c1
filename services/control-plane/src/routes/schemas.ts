import { z } from "@hono/zod-openapi";

/**
 * Text without C0/C1 control characters. Written without regex flags: the pattern is published
 * in /openapi.json, where flags do not exist.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
export const NO_CONTROL_CHARACTERS = /^[^\u0000-\u001f\u007f-\u009f]+$/;

export const Problem = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    instance: z.string().optional(),
    request_id: z.string().optional(),
  })
  .openapi("Problem");

const problemContent = { "application/problem+json": { schema: Problem } };

/** The error responses every authenticated route can give. */
export const errorResponses = {
  400: { description: "Invalid input", content: problemContent },
  401: { description: "Missing, invalid or expired token", content: problemContent },
  403: { description: "Role does not allow this", content: problemContent },
  404: { description: "Not found (or in another organization)", content: problemContent },
  409: { description: "Conflict", content: problemContent },
  429: { description: "Too many attempts", content: problemContent },
} as const;

export const IdParam = z.object({ id: z.uuid().openapi({ param: { name: "id", in: "path" } }) });

export const PageQuery = z.object({
  cursor: z.string().max(512).optional(),
  limit: z.coerce.number().int().min(1).max(200).optional(),
});

/** A name users read: printable, trimmed, no control characters. */
export const DisplayName = z
  .string()
  .trim()
  .min(1)
  .max(200)
  .regex(NO_CONTROL_CHARACTERS, "must not contain control characters")
  .refine((v) => !/\p{Cs}/u.test(v), "must not contain lone surrogates");

/** A URL-safe identifier. */
export const Slug = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?$/, "letters, digits and inner hyphens only");

export const json = <T extends z.ZodType>(schema: T, description = "OK") => ({
  description,
  content: { "application/json": { schema } },
});

export const jsonBody = <T extends z.ZodType>(schema: T) => ({
  required: true,
  content: { "application/json": { schema } },
});

/** Standard CRUD routes over one resource, so every resource reads the same way. */
export function listResponse<T extends z.ZodType>(item: T) {
  return json(z.object({ items: z.array(item), next_cursor: z.string().nullable() }));
}
