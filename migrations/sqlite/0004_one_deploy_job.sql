-- One deploy job per promotion, as a database fact: replicas that race to queue a deploy insert
-- one row (`ON CONFLICT … DO NOTHING`). A database that already holds duplicates keeps, per
-- promotion, the job a worker holds a lease on (its deploy is running), else the oldest.
DELETE FROM jobs WHERE kind = 'deploy' AND EXISTS (
    SELECT 1 FROM jobs AS kept
    WHERE kept.kind = 'deploy' AND kept.promotion_id = jobs.promotion_id AND kept.id <> jobs.id
      AND ((kept.lease_owner IS NOT NULL AND jobs.lease_owner IS NULL)
           OR ((kept.lease_owner IS NULL) = (jobs.lease_owner IS NULL) AND kept.id < jobs.id))
);
CREATE UNIQUE INDEX jobs_one_deploy ON jobs (promotion_id) WHERE kind = 'deploy';
