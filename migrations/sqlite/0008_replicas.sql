-- The replica heartbeat row of SPEC §8 (see the PostgreSQL migration). On SQLite there is one
-- process per database file, so this table holds one live row; wake-ups are in-process.
CREATE TABLE replicas (
    id            TEXT    PRIMARY KEY,
    host          TEXT    NOT NULL,
    pid           INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    holds_gateway INTEGER NOT NULL DEFAULT 0,
    jobs_running  INTEGER NOT NULL DEFAULT 0
);
