-- Robot and personal tokens: only the SHA-256 of each secret is kept.
CREATE TABLE robot_tokens (
    name         TEXT COLLATE "C" PRIMARY KEY,
    owner        TEXT,
    owner_groups TEXT[] NOT NULL DEFAULT '{}',
    scopes       TEXT[] NOT NULL,
    hash         TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT
);

-- The hash-chained audit log: each line as sealed (its bytes are what is hashed), in the
-- order appended. Appends take an advisory lock, so the chain is one line across replicas.
CREATE TABLE audit_log (
    position BIGINT PRIMARY KEY,
    line     TEXT NOT NULL
);

-- The last record appended, kept apart from the lines: cutting records from the end of
-- the log shows against it.
CREATE TABLE audit_head (
    one  BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
