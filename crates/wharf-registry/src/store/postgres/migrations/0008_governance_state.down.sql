DROP INDEX IF EXISTS repositories_name_trgm;
DROP TRIGGER IF EXISTS tags_version ON tags;
DROP FUNCTION IF EXISTS wharf_bump_tags_version();
ALTER TABLE repositories DROP COLUMN IF EXISTS tags_version;
DROP TABLE IF EXISTS wharf_records;
DROP TABLE IF EXISTS quota_blobs;
DROP TABLE IF EXISTS quota_usage;
