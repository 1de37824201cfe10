-- Exact quotas: the blobs charged to each quota (keyed by its rule, see
-- registry::governance) and their total, written under the quota's advisory lock.
CREATE TABLE quota_usage (
    quota TEXT PRIMARY KEY,
    bytes BIGINT NOT NULL
);
CREATE TABLE quota_blobs (
    quota  TEXT NOT NULL,
    digest TEXT NOT NULL,
    size   BIGINT NOT NULL,
    PRIMARY KEY (quota, digest)
);

-- Small records every replica reads (store::state::Records): job reports by job, UI
-- sign-out stamps by user.
CREATE TABLE wharf_records (
    kind  TEXT NOT NULL,
    name  TEXT NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (kind, name)
);

-- A tag list is served from memory while its repository's tag version is unchanged:
-- every change to a repository's tags bumps it, in the same statement's transaction.
ALTER TABLE repositories ADD COLUMN tags_version BIGINT NOT NULL DEFAULT 0;
CREATE FUNCTION wharf_bump_tags_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        UPDATE repositories SET tags_version = tags_version + 1 WHERE id = OLD.repository_id;
    ELSE
        UPDATE repositories SET tags_version = tags_version + 1 WHERE id = NEW.repository_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tags_version AFTER INSERT OR UPDATE OR DELETE ON tags
    FOR EACH ROW EXECUTE FUNCTION wharf_bump_tags_version();

-- Repository search (a substring of the name) by trigram index where the server has
-- pg_trgm (a trusted extension since PostgreSQL 13: the database owner may create it).
-- Without it the search still works, by a scan.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE INDEX repositories_name_trgm ON repositories USING gin (name gin_trgm_ops);
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm is not available (%): repository search scans', SQLERRM;
END $$;
