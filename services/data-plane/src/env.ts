import type { HttpBindings } from "@hono/node-server";

/** Hono bindings of the data plane: the raw node request and response, for streaming. */
export interface DataPlaneEnv {
  Bindings: HttpBindings;
}
