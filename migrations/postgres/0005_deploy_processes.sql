-- Deploy scripts' process groups while they run (the `command` backend): after a crash, the next
-- start on the same host kills the groups still alive, and no new deploy of the environment
-- starts while an older one's group may still run. `host` is hostname/boot id; `started` the
-- group leader's start time in clock ticks since boot (tells it from a reused pid).
CREATE TABLE deploy_processes (
    promotion_id BIGINT NOT NULL PRIMARY KEY REFERENCES promotions (id),
    host         TEXT    NOT NULL,
    pgid         BIGINT  NOT NULL,
    started      BIGINT  NOT NULL,
    recorded_at  BIGINT  NOT NULL
);
CREATE INDEX deploy_processes_by_host ON deploy_processes (host);
