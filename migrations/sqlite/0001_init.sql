-- shipmate schema (SQLite). Times are Unix milliseconds (UTC); flags are 0/1 integers.

CREATE TABLE releases (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    service     TEXT    NOT NULL,
    version     TEXT    NOT NULL,
    commit_sha  TEXT,
    notes       TEXT,
    created_by  TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (service, version)
);

CREATE TABLE promotions (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    service            TEXT    NOT NULL,
    version            TEXT    NOT NULL,
    environment        TEXT    NOT NULL,
    state              TEXT    NOT NULL,
    requested_by       TEXT    NOT NULL,
    is_rollback        INTEGER NOT NULL DEFAULT 0,
    previous_version   TEXT,
    required_approvals INTEGER NOT NULL,
    force_reason       TEXT,
    retry_of           INTEGER REFERENCES promotions (id),
    reason             TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    started_at         INTEGER,
    finished_at        INTEGER,
    expires_at         INTEGER
);

-- At most one active promotion per (service, environment), whatever the number of replicas.
CREATE UNIQUE INDEX promotions_one_active ON promotions (service, environment)
    WHERE state IN ('awaiting_approval', 'approved', 'queued', 'deploying', 'verifying');
CREATE INDEX promotions_by_environment ON promotions (service, environment, state, id);
-- Sweeps and status read only the active promotions, however long the history.
CREATE INDEX promotions_active ON promotions (state, id)
    WHERE state IN ('awaiting_approval', 'approved', 'queued', 'deploying', 'verifying');
-- "Where has this version succeeded?" on every promote.
CREATE INDEX promotions_by_version ON promotions (service, version, state);

-- What runs now in each environment: the promotion that last succeeded there (kept in the same
-- transaction as that success so status is one indexed lookup, however long the history).
CREATE TABLE current_deployments (
    service      TEXT    NOT NULL,
    environment  TEXT    NOT NULL,
    promotion_id INTEGER NOT NULL REFERENCES promotions (id),
    PRIMARY KEY (service, environment)
);

CREATE TABLE approvals (
    promotion_id INTEGER NOT NULL REFERENCES promotions (id),
    voter        TEXT    NOT NULL,
    at           INTEGER NOT NULL,
    PRIMARY KEY (promotion_id, voter)
);

CREATE TABLE audit_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    promotion_id INTEGER REFERENCES promotions (id),
    at           INTEGER NOT NULL,
    actor        TEXT    NOT NULL,
    platform     TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    detail       TEXT    NOT NULL
);
CREATE INDEX audit_events_by_promotion ON audit_events (promotion_id, id);

CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;

-- The outbox: side effects owed by committed state changes, claimed by workers with a lease.
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT    NOT NULL,
    promotion_id INTEGER REFERENCES promotions (id),
    payload      TEXT    NOT NULL DEFAULT '{}',
    run_at       INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    lease_owner  TEXT,
    lease_until  INTEGER,
    last_error   TEXT,
    created_at   INTEGER NOT NULL
);
CREATE INDEX jobs_due ON jobs (kind, run_at);

CREATE TABLE deploy_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    promotion_id INTEGER NOT NULL REFERENCES promotions (id),
    at           INTEGER NOT NULL,
    line         TEXT    NOT NULL
);
CREATE INDEX deploy_log_by_promotion ON deploy_log (promotion_id, id);

-- Inbound platform events seen (Slack event_id, interaction ids): retries take effect once.
CREATE TABLE inbound_events (
    source      TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (source, event_id)
);
