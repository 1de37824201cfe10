-- Online garbage collection from review queues, after GitLab's container registry
-- (docs/spec/gitlab/online-garbage-collection.md), on wharf's schema. docs/storage.md says
-- why each race is safe. No foreign keys: a row whose subject is gone is dropped when
-- reviewed, and a cascade that deletes a repository must not trip over its own queueing.

-- How long after an event its candidate is reviewed; `wharf serve` writes gc.reviewafter
-- into 'default'. An event without a row of its own takes 'default', else an hour.
CREATE TABLE gc_review_after_defaults (
    event TEXT PRIMARY KEY,
    value INTERVAL NOT NULL
);

CREATE FUNCTION gc_review_after(e TEXT) RETURNS TIMESTAMPTZ AS $$
    SELECT now() + COALESCE(
        (SELECT value FROM gc_review_after_defaults WHERE event = e),
        (SELECT value FROM gc_review_after_defaults WHERE event = 'default'),
        INTERVAL '1 hour')
$$ LANGUAGE sql STABLE;

-- Blobs (layers, configs, and manifests' own bytes) that may no longer be referenced.
CREATE TABLE gc_blob_review_queue (
    digest       TEXT PRIMARY KEY,
    review_after TIMESTAMPTZ NOT NULL,
    review_count INTEGER NOT NULL DEFAULT 0,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- When the latest event queued it: `wharf garbage-collect --grace` counts from here.
    queued_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    event        TEXT NOT NULL
);
CREATE INDEX gc_blob_review_queue_due ON gc_blob_review_queue (review_after);

-- Manifests that may be untagged and unreferenced in their repository (--delete-untagged).
CREATE TABLE gc_manifest_review_queue (
    repository_id BIGINT NOT NULL,
    digest        TEXT NOT NULL,
    review_after  TIMESTAMPTZ NOT NULL,
    review_count  INTEGER NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    queued_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    event         TEXT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX gc_manifest_review_queue_due ON gc_manifest_review_queue (review_after);

-- A review asks "does any manifest still name this digest?": these make it an index probe,
-- the role of GitLab's gc_blobs_layers and gc_blobs_configurations.
CREATE INDEX manifests_blobs ON manifests USING GIN (blobs);
CREATE INDEX manifests_foreign_blobs ON manifests USING GIN (foreign_blobs);
CREATE INDEX manifests_children ON manifests USING GIN (children);

-- Queueing postpones a row that is already there (DO UPDATE, not DO NOTHING): a review
-- holding it that finds the digest referenced deletes it, and this event must survive that.
CREATE FUNCTION gc_queue_blobs(ds TEXT[], e TEXT) RETURNS VOID AS $$
    INSERT INTO gc_blob_review_queue (digest, review_after, event)
    SELECT DISTINCT d, gc_review_after(e), e FROM unnest(ds) AS d WHERE d IS NOT NULL ORDER BY 1
    ON CONFLICT (digest) DO UPDATE
        SET review_after = EXCLUDED.review_after, queued_at = now(), event = EXCLUDED.event
$$ LANGUAGE sql;

CREATE FUNCTION gc_queue_manifest(repo BIGINT, d TEXT, e TEXT) RETURNS VOID AS $$
    INSERT INTO gc_manifest_review_queue (repository_id, digest, review_after, event)
    VALUES (repo, d, gc_review_after(e), e)
    ON CONFLICT (repository_id, digest) DO UPDATE
        SET review_after = EXCLUDED.review_after, queued_at = now(), event = EXCLUDED.event
$$ LANGUAGE sql;

-- A manifest deleted: its blobs and its own bytes, and in its repository the children
-- and referrers it kept.
CREATE FUNCTION gc_track_deleted_manifests() RETURNS TRIGGER AS $$
BEGIN
    PERFORM gc_queue_blobs(OLD.blobs || OLD.foreign_blobs || ARRAY[OLD.digest], 'manifest_delete');
    INSERT INTO gc_manifest_review_queue (repository_id, digest, review_after, event)
    SELECT m.repository_id, m.digest, gc_review_after('manifest_delete'), 'manifest_delete'
    FROM manifests m
    WHERE m.repository_id = OLD.repository_id
      AND (m.digest = ANY (OLD.children) OR m.subject = OLD.digest)
    ORDER BY m.digest
    ON CONFLICT (repository_id, digest) DO UPDATE
        SET review_after = EXCLUDED.review_after, queued_at = now(), event = EXCLUDED.event;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER gc_track_deleted_manifests_trigger
    AFTER DELETE ON manifests FOR EACH ROW EXECUTE FUNCTION gc_track_deleted_manifests();

-- A manifest put by digest is untagged until a tag or an index names it.
CREATE FUNCTION gc_track_manifest_uploads() RETURNS TRIGGER AS $$
BEGIN
    PERFORM gc_queue_manifest(NEW.repository_id, NEW.digest, 'manifest_upload');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER gc_track_manifest_uploads_trigger
    AFTER INSERT ON manifests FOR EACH ROW EXECUTE FUNCTION gc_track_manifest_uploads();

CREATE FUNCTION gc_track_deleted_tags() RETURNS TRIGGER AS $$
BEGIN
    PERFORM gc_queue_manifest(OLD.repository_id, OLD.digest, 'tag_delete');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER gc_track_deleted_tags_trigger
    AFTER DELETE ON tags FOR EACH ROW EXECUTE FUNCTION gc_track_deleted_tags();

CREATE FUNCTION gc_track_switched_tags() RETURNS TRIGGER AS $$
BEGIN
    PERFORM gc_queue_manifest(OLD.repository_id, OLD.digest, 'tag_switch');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER gc_track_switched_tags_trigger
    AFTER UPDATE OF digest ON tags FOR EACH ROW
    WHEN (OLD.digest IS DISTINCT FROM NEW.digest)
    EXECUTE FUNCTION gc_track_switched_tags();

CREATE FUNCTION gc_track_deleted_blob_links() RETURNS TRIGGER AS $$
BEGIN
    PERFORM gc_queue_blobs(ARRAY[OLD.digest], 'blob_unlink');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER gc_track_deleted_blob_links_trigger
    AFTER DELETE ON blob_links FOR EACH ROW EXECUTE FUNCTION gc_track_deleted_blob_links();
