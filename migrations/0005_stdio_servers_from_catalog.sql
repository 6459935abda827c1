-- stdio servers registered with a command line (before the catalog) cannot run any more: they are
-- disabled, and their clear-text env and args go with the dropped columns. Re-create them from a
-- catalog entry (/api/v1/stdio-catalog).
UPDATE "mcp_servers" SET "enabled" = false WHERE "transport" = 'stdio' AND "catalog_entry_id" IS NULL;--> statement-breakpoint
ALTER TABLE "mcp_servers" DROP COLUMN "command";--> statement-breakpoint
ALTER TABLE "mcp_servers" DROP COLUMN "args";--> statement-breakpoint
ALTER TABLE "mcp_servers" DROP COLUMN "env";--> statement-breakpoint
ALTER TABLE "mcp_servers" DROP COLUMN "cwd";