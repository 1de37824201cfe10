-- Each repository's pull count, added to in batches by every replica. Keyed by name, not
-- by repositories.id, so that a count outlives its repository row being recreated.
CREATE TABLE pull_counts (
    repository TEXT COLLATE "C" PRIMARY KEY,
    pulls      BIGINT NOT NULL
);
