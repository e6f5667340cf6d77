-- Remote backend calls (SPEC §5: webhook, GitHub Actions, Kubernetes, Argo CD) outlive the bot
-- process that started them. While the call at `position` runs, the rollout row keeps what the
-- next holder of the job needs to watch it to its end instead of starting it again:
-- `call_remote` (1: the backend's work lives elsewhere; such a call is resumed, not marked
-- interrupted), `call_started_at` (Unix ms, wall clock: its timeout runs from here, and remote
-- work that began before it is not ours), `call_handle` (the backend's JSON handle: status URL,
-- run id, rollout generation, operation start) and `call_status` (the line the cards show).
ALTER TABLE rollouts ADD COLUMN call_remote INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rollouts ADD COLUMN call_started_at INTEGER;
ALTER TABLE rollouts ADD COLUMN call_handle TEXT;
ALTER TABLE rollouts ADD COLUMN call_status TEXT;
