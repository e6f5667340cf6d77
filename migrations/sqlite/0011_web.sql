-- The web pages' audit log filtered by actor reads one actor's events newest first, however
-- long the log (filters by service and environment go through promotions' own indexes).
CREATE INDEX audit_events_by_actor ON audit_events (actor, id);
