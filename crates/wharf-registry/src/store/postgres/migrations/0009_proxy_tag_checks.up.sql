-- When the pull-through cache last confirmed each cached tag with its upstream: shared by
-- every replica, so a tag one of them confirmed is fresh on all of them for its ttl.
CREATE TABLE proxy_tag_checks (
    repository TEXT COLLATE "C" NOT NULL,
    tag        TEXT COLLATE "C" NOT NULL,
    checked    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (repository, tag)
);
