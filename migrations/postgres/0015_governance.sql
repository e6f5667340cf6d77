-- Release governance (SPEC §10): hotfix promotions, checklist ticks, the one approval reminder,
-- and notes the bot owes a card's thread (reminders, cleared approvals).
ALTER TABLE promotions ADD COLUMN hotfix_reason TEXT;
ALTER TABLE promotions ADD COLUMN reminded_at BIGINT;

CREATE TABLE checklist_ticks (
    promotion_id BIGINT  NOT NULL REFERENCES promotions (id),
    item         BIGINT  NOT NULL,              -- 1-based, as people number them
    ticked_by    TEXT    NOT NULL,
    ticked_at    BIGINT  NOT NULL,
    PRIMARY KEY (promotion_id, item)
);

CREATE TABLE thread_notes (
    id           BIGSERIAL PRIMARY KEY,
    promotion_id BIGINT  NOT NULL REFERENCES promotions (id),
    at           BIGINT  NOT NULL,
    text         TEXT    NOT NULL,
    mention_approvers BOOLEAN NOT NULL DEFAULT FALSE    -- the note pings the approvers
);
CREATE INDEX thread_notes_by_promotion ON thread_notes (promotion_id, id);
ALTER TABLE chat_cards ADD COLUMN thread_note_id BIGINT NOT NULL DEFAULT 0;  -- last note posted
