import type { Db } from "@mcpgw/db";
import type { Keyring } from "@mcpgw/secrets";
import type { Logger, Registry } from "@mcpgw/telemetry";
import type { LoginThrottle } from "./auth/login-throttle.ts";
import type { TokenIssuer } from "./auth/token-issuer.ts";
import type { Actor, PublishTrigger } from "./context.ts";
import type { DataPlanes } from "./data-planes.ts";

/** Everything the control-plane app is built from; tests pass real backends. */
export interface ControlPlaneDeps {
  db: Db;
  tokens: TokenIssuer;
  publisher: PublishTrigger;
  logger: Logger;
  metrics: Registry;
  /** `/metrics` needs this bearer token when set. */
  metricsToken?: string | undefined;
  /** Readiness of the backing services (database, bus). */
  ready: () => Promise<boolean>;
  allowPrivateUpstreams: boolean;
  keyring: Keyring;
  throttle: LoginThrottle;
  /** Asks the data planes what only they know (e.g. the tools of a namespace's servers). */
  dataPlanes: DataPlanes;
  /** Largest accepted request body. */
  maxBodyBytes?: number;
}

/** Hono variables set by middleware. */
export interface AppEnv {
  Variables: {
    requestId: string;
    logger: Logger;
    actor: Actor;
  };
}
