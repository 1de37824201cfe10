-- wharf's metadata: what registry:2 keeps as link files under repositories/<name>/.
-- Names sort bytewise (COLLATE "C"), as _catalog and tag lists are ordered.
-- Times are in the registry's clock (the one the blob store stamps retains with), since
-- garbage collection compares them with the instant its mark began.

CREATE TABLE repositories (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Which blobs a repository may serve (registry:2's _layers links).
CREATE TABLE blob_links (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest        TEXT NOT NULL,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX blob_links_digest ON blob_links (digest);

-- A repository's manifests (_manifests/revisions) with what each references.
CREATE TABLE manifests (
    repository_id BIGINT NOT NULL REFERENCES repositories (id) ON DELETE CASCADE,
    digest        TEXT NOT NULL,
    -- When it was last put, or retained by an index put that names it.
    put_at        TIMESTAMPTZ NOT NULL,
    blobs         TEXT[] NOT NULL,
    foreign_blobs TEXT[] NOT NULL,
    children      TEXT[] NOT NULL,
    -- Set for a manifest with a subject: its descriptor in the subject's referrers list.
    subject       TEXT,
    referrer      JSONB,
    PRIMARY KEY (repository_id, digest)
);
CREATE INDEX manifests_subject ON manifests (repository_id, subject) WHERE subject IS NOT NULL;
CREATE INDEX manifests_digest ON manifests (digest);

-- Tags; deleting a manifest takes the tags that point at it, as in registry:2.
CREATE TABLE tags (
    repository_id BIGINT NOT NULL,
    name          TEXT COLLATE "C" NOT NULL,
    digest        TEXT NOT NULL,
    pushed_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (repository_id, name),
    FOREIGN KEY (repository_id, digest)
        REFERENCES manifests (repository_id, digest) ON DELETE CASCADE
);
CREATE INDEX tags_target ON tags (repository_id, digest);
