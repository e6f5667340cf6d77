-- Ad-hoc freezes (/release freeze); planned ones live in bot.toml.
CREATE TABLE freezes (
    id           BIGSERIAL PRIMARY KEY,
    environment  TEXT    NOT NULL,              -- an environment name, or '*' for all
    starts_at    BIGINT  NOT NULL,
    ends_at      BIGINT  NOT NULL,
    reason       TEXT,
    created_by   TEXT    NOT NULL,
    lifted_at    BIGINT,                        -- set by /release unfreeze
    lifted_by    TEXT
);
CREATE INDEX freezes_by_end ON freezes (ends_at);

-- Every scheduler occurrence that fired (window announcements, openings and closings, freeze
-- announcements, scheduled commands). The key makes each fire once, across restarts and replicas.
CREATE TABLE schedule_occurrences (
    name      TEXT    NOT NULL,                 -- window:<name>, schedule:<name>, freeze:<id>, …
    event     TEXT    NOT NULL,                 -- open, close, announce:30m, run, lifted, …
    at        BIGINT  NOT NULL,                 -- when it was due
    fired_at  BIGINT  NOT NULL,
    PRIMARY KEY (name, event, at)
);
