-- The event log every replica shares. An event is inserted in the transaction of the change
-- it reports; ids are taken under a transaction-scoped advisory lock as max(id) + 1, so they
-- commit in id order with no holes and a reader that has seen id N never sees N - 1 appear
-- later (a sequence would hand out ids that commit out of order).
CREATE TABLE events (
    id          BIGINT PRIMARY KEY,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    body        TEXT NOT NULL
);

-- One row per webhook endpoint: where delivery has got to (the last event the receiver
-- accepted; NULL before the first), and the lease of the replica delivering it.
CREATE TABLE event_endpoints (
    endpoint    TEXT COLLATE "C" PRIMARY KEY,
    delivered   BIGINT,
    holder      TEXT,
    expires_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
