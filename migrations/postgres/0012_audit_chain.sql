-- The tamper-evident audit trail (SPEC §10): every event written from now on carries
-- hash = sha256(previous hash ‖ the event's canonical JSON). `audit_chain` holds the newest hash;
-- a transaction locks it to append, so concurrent writers keep one chain. Events written before
-- this migration have no hash: the chain begins with the first event after it.
ALTER TABLE audit_events ADD COLUMN hash TEXT;
CREATE TABLE audit_chain (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    last_hash TEXT    NOT NULL
);
INSERT INTO audit_chain (id, last_hash)
    VALUES (1, '0000000000000000000000000000000000000000000000000000000000000000');
