-- shipmate schema (PostgreSQL). Times are Unix milliseconds (UTC); flags are 0/1 integers, so one
-- set of queries serves SQLite and PostgreSQL alike.

CREATE TABLE releases (
    id          BIGSERIAL PRIMARY KEY,
    service     TEXT   NOT NULL,
    version     TEXT   NOT NULL,
    commit_sha  TEXT,
    notes       TEXT,
    created_by  TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (service, version)
);

CREATE TABLE promotions (
    id                 BIGSERIAL PRIMARY KEY,
    service            TEXT   NOT NULL,
    version            TEXT   NOT NULL,
    environment        TEXT   NOT NULL,
    state              TEXT   NOT NULL,
    requested_by       TEXT   NOT NULL,
    is_rollback        BIGINT NOT NULL DEFAULT 0,
    previous_version   TEXT,
    required_approvals BIGINT NOT NULL,
    force_reason       TEXT,
    retry_of           BIGINT REFERENCES promotions (id),
    reason             TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    started_at         BIGINT,
    finished_at        BIGINT,
    expires_at         BIGINT
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

-- What runs now in each environment (see the SQLite migration for why it is kept).
CREATE TABLE current_deployments (
    service      TEXT   NOT NULL,
    environment  TEXT   NOT NULL,
    promotion_id BIGINT NOT NULL REFERENCES promotions (id),
    PRIMARY KEY (service, environment)
);

CREATE TABLE approvals (
    promotion_id BIGINT NOT NULL REFERENCES promotions (id),
    voter        TEXT   NOT NULL,
    at           BIGINT NOT NULL,
    PRIMARY KEY (promotion_id, voter)
);

CREATE TABLE audit_events (
    id           BIGSERIAL PRIMARY KEY,
    promotion_id BIGINT REFERENCES promotions (id),
    at           BIGINT NOT NULL,
    actor        TEXT   NOT NULL,
    platform     TEXT   NOT NULL,
    kind         TEXT   NOT NULL,
    detail       TEXT   NOT NULL
);
CREATE INDEX audit_events_by_promotion ON audit_events (promotion_id, id);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

-- The outbox: side effects owed by committed state changes, claimed by workers with a lease.
CREATE TABLE jobs (
    id           BIGSERIAL PRIMARY KEY,
    kind         TEXT   NOT NULL,
    promotion_id BIGINT REFERENCES promotions (id),
    payload      TEXT   NOT NULL DEFAULT '{}',
    run_at       BIGINT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    lease_owner  TEXT,
    lease_until  BIGINT,
    last_error   TEXT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX jobs_due ON jobs (kind, run_at);

CREATE TABLE deploy_log (
    id           BIGSERIAL PRIMARY KEY,
    promotion_id BIGINT NOT NULL REFERENCES promotions (id),
    at           BIGINT NOT NULL,
    line         TEXT   NOT NULL
);
CREATE INDEX deploy_log_by_promotion ON deploy_log (promotion_id, id);

-- Inbound platform events seen (Slack event_id, interaction ids): retries take effect once.
CREATE TABLE inbound_events (
    source      TEXT   NOT NULL,
    event_id    TEXT   NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (source, event_id)
);
