-- Ad-hoc freezes (/release freeze); planned ones live in bot.toml.
CREATE TABLE freezes (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    environment  TEXT    NOT NULL,              -- an environment name, or '*' for all
    starts_at    INTEGER NOT NULL,
    ends_at      INTEGER NOT NULL,
    reason       TEXT,
    created_by   TEXT    NOT NULL,
    lifted_at    INTEGER,                       -- set by /release unfreeze
    lifted_by    TEXT
);
CREATE INDEX freezes_by_end ON freezes (ends_at);

-- Every scheduler occurrence that fired (window announcements, openings and closings, freeze
-- announcements, scheduled commands). The key makes each fire once, across restarts and replicas.
CREATE TABLE schedule_occurrences (
    name      TEXT    NOT NULL,                 -- window:<name>, schedule:<name>, freeze:<id>, …
    event     TEXT    NOT NULL,                 -- open, close, announce:30m, run, lifted, …
    at        INTEGER NOT NULL,                 -- when it was due
    fired_at  INTEGER NOT NULL,
    PRIMARY KEY (name, event, at)
);
