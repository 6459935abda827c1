-- citext backs case-insensitive emails and slugs; PGlite loads it as a bundled extension.
CREATE EXTENSION IF NOT EXISTS citext;
