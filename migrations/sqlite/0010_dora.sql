-- Delivery metrics (DORA) read the promotions that ended in a time window (succeeded, failed or
-- rolled back since): by end time for every service at once (the /ui/dora page), and by service
-- and environment for one. Partial, so the history of rejected, cancelled and expired requests
-- costs these indexes nothing. The state list must match the metrics query's word for word.
CREATE INDEX promotions_ended ON promotions (finished_at)
    WHERE state IN ('succeeded', 'failed', 'rolled_back');
CREATE INDEX promotions_ended_by_environment ON promotions (service, environment, finished_at)
    WHERE state IN ('succeeded', 'failed', 'rolled_back');
