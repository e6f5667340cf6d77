-- Several replicas (SPEC §8). Each running `shipmate serve` keeps a heartbeat row here: what
-- `GET /api/v1/cluster` lists. `last_seen` is the database's clock (Unix ms), so replicas on
-- machines with different clocks agree on who is alive; rows not seen for a while are pruned.
CREATE TABLE replicas (
    id            TEXT    PRIMARY KEY,
    host          TEXT    NOT NULL,
    pid           BIGINT  NOT NULL,
    started_at    BIGINT  NOT NULL,
    last_seen     BIGINT  NOT NULL,
    holds_gateway BIGINT  NOT NULL DEFAULT 0,
    jobs_running  BIGINT  NOT NULL DEFAULT 0
);

-- Wake-ups without polling: a job that becomes claimable (inserted, released or rescheduled: its
-- lease is empty) notifies channel `shipmate_jobs`; every replica LISTENs and claims. Claims and
-- lease renewals (lease set) stay silent.
-- NOTIFY is delivered at commit, and identical notifications in one transaction fold into one.
CREATE FUNCTION shipmate_notify_jobs() RETURNS trigger AS $$
BEGIN
    IF NEW.lease_owner IS NULL THEN
        PERFORM pg_notify('shipmate_jobs', NEW.kind);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION shipmate_notify_jobs();
