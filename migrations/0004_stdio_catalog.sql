CREATE TABLE "stdio_catalog" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"slug" "citext" NOT NULL,
	"name" text NOT NULL,
	"description" text,
	"command" text NOT NULL,
	"args" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"env" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"parameters" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"enabled" boolean DEFAULT true NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "stdio_catalog_slug_unique" UNIQUE("slug")
);
--> statement-breakpoint
ALTER TABLE "mcp_servers" ADD COLUMN "catalog_entry_id" uuid;--> statement-breakpoint
ALTER TABLE "mcp_servers" ADD COLUMN "parameters" jsonb DEFAULT '{}'::jsonb NOT NULL;--> statement-breakpoint
ALTER TABLE "mcp_servers" ADD COLUMN "secrets_sealed" text;--> statement-breakpoint
ALTER TABLE "mcp_servers" ADD CONSTRAINT "mcp_servers_catalog_entry_id_stdio_catalog_id_fk" FOREIGN KEY ("catalog_entry_id") REFERENCES "public"."stdio_catalog"("id") ON DELETE restrict ON UPDATE no action;