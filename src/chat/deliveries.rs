//! What every chat adapter does with an inbound delivery: count it by outcome, and act on it only
//! the first time the platform sends it (platforms retry and replay).

use crate::engine::{ChatPlatform, Engine};
use crate::metrics::ChatLabels;

/// `shipmate_chat_events_total{platform, kind, outcome}`.
pub(crate) fn count(engine: &Engine, platform: ChatPlatform, kind: &str, outcome: &str) {
    engine
        .metrics()
        .chat_events
        .get_or_create(&ChatLabels {
            platform: platform.to_string(),
            kind: kind.to_string(),
            outcome: outcome.to_string(),
        })
        .inc();
}

/// Records a delivery; `false` when it was seen before. A database error counts as seen: acting
/// twice is worse than acting late, and the platform delivers again.
pub(crate) async fn first_time(engine: &Engine, source: &str, id: &str) -> bool {
    match engine
        .store()
        .record_inbound(source, id, engine.now())
        .await
    {
        Ok(first) => first,
        Err(e) => {
            tracing::error!(error = %e, source, "could not record a chat delivery");
            false
        }
    }
}
