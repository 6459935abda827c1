ALTER TABLE "mcp_servers" ADD COLUMN "last_error" text;--> statement-breakpoint
ALTER TABLE "mcp_servers" ADD COLUMN "data_plane_reports" jsonb DEFAULT '{}'::jsonb NOT NULL;