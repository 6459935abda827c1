-- The global snapshot (signing keys, revocations) is versioned by this single row.
INSERT INTO "global_config" ("id") VALUES (1) ON CONFLICT DO NOTHING;
