-- One deploy job per promotion, as a database fact: replicas that race to queue a deploy insert
-- one row (`ON CONFLICT … DO NOTHING`). Databases that already hold a duplicate keep the oldest.
DELETE FROM jobs WHERE kind = 'deploy' AND id NOT IN
    (SELECT MIN(id) FROM jobs WHERE kind = 'deploy' GROUP BY promotion_id);
CREATE UNIQUE INDEX jobs_one_deploy ON jobs (promotion_id) WHERE kind = 'deploy';
