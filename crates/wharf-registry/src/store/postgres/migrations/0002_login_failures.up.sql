-- Failed logins per client address and user name, shared by every replica, so that the
-- limit holds for the registry as a whole, not once per process behind a load balancer.
CREATE TABLE login_failures (
    address      TEXT NOT NULL,
    username     TEXT NOT NULL,
    window_start TIMESTAMPTZ NOT NULL,
    failures     INTEGER NOT NULL,
    PRIMARY KEY (address, username)
);
CREATE INDEX login_failures_window ON login_failures (window_start);
