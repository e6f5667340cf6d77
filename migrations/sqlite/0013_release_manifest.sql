-- Release records (SPEC §10): when the commit was made, the artifact's digest, and the changes
-- (a JSON array of commit subjects). A promotion keeps the digest it deploys: promoting into the
-- next environment needs the digest that succeeded in the one before.
ALTER TABLE releases ADD COLUMN committed_at INTEGER;
ALTER TABLE releases ADD COLUMN digest TEXT;
ALTER TABLE releases ADD COLUMN changes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE promotions ADD COLUMN digest TEXT;
