import type { Db } from "@mcpgw/db";
import type { Keyring } from "@mcpgw/secrets";
import type { Logger } from "@mcpgw/telemetry";

export type Role = "admin" | "operator" | "user" | "viewer" | "api_user";

/** Who is acting: the authenticated principal of a control-plane request. */
export interface Actor {
  user_id: string;
  org_id: string;
  role: Role;
  platform_admin: boolean;
  /** The access token the request carried (for logout), when it was one. */
  token?: { jti: string; exp: number } | undefined;
}

/** Where a request came from, for the audit trail. */
export interface RequestMeta {
  ip?: string | undefined;
  request_id?: string | undefined;
  user_agent?: string | undefined;
}

/** Something that publishes an org's snapshot soon after a change commits. */
export interface PublishTrigger {
  notify(orgId: string | "global"): void;
}

/** What every service verb receives. */
export interface VerbContext {
  db: Db;
  actor: Actor;
  meta: RequestMeta;
  publisher: PublishTrigger;
  logger: Logger;
  allowPrivateUpstreams: boolean;
  /** Seals secrets at rest (upstream credentials). */
  keyring: Keyring;
}
