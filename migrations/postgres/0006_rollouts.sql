-- Where each promotion's rollout is (SPEC §5.1, §5.2), so a restart resumes a pause or a
-- verification, and the controls people gave it (pause, advance, abort), which the deploy worker
-- running it reads on whatever replica it runs. `position` indexes the plan's actions (calls
-- and check gates); `calling` is 1 while the backend call at `position` runs (a bot that dies
-- then leaves the promotion interrupted, as before). Times are Unix ms on the rules clock.
CREATE TABLE rollouts (
    promotion_id    BIGINT NOT NULL PRIMARY KEY REFERENCES promotions (id),
    position        BIGINT NOT NULL,
    calling         BIGINT NOT NULL DEFAULT 0,
    gate_started_at BIGINT,
    paused_by       TEXT,
    advance         BIGINT NOT NULL DEFAULT 0,
    abort_by        TEXT,
    abort_reason    TEXT,
    -- The rollback a failure or an abort started for this promotion.
    rolled_back_by  BIGINT REFERENCES promotions (id)
);

-- Each check's tally in a gate: probes so far, inconclusive ones in a row, and its failure.
CREATE TABLE check_tallies (
    promotion_id        BIGINT NOT NULL REFERENCES promotions (id),
    position            BIGINT NOT NULL,
    check_index         BIGINT NOT NULL,
    probes              BIGINT NOT NULL,
    inconclusive_in_row BIGINT NOT NULL,
    done                BIGINT NOT NULL,
    failure             TEXT,
    PRIMARY KEY (promotion_id, position, check_index)
);
