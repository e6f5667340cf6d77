-- Chat cards: one message per promotion per platform, edited in place as the promotion moves.

CREATE TABLE chat_cards (
    promotion_id     BIGINT NOT NULL REFERENCES promotions (id),
    platform         TEXT    NOT NULL,
    channel          TEXT    NOT NULL,
    message_id       TEXT,                          -- NULL until the card is posted
    thread_log_id    BIGINT  NOT NULL DEFAULT 0,    -- last deploy_log line posted to the thread
    sent_at          BIGINT,                        -- when the card was last posted or edited
    PRIMARY KEY (promotion_id, platform)
);
CREATE UNIQUE INDEX chat_cards_by_message ON chat_cards (platform, channel, message_id);

-- A card job exists at most once per promotion and platform; a change while it is being sent
-- marks it dirty so it runs again with the newest state.
ALTER TABLE jobs ADD COLUMN dirty BIGINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX jobs_one_card ON jobs (kind, promotion_id) WHERE kind LIKE 'card:%';
