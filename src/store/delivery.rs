//! A platform delivery (Slack event or interaction, Discord interaction) is marked seen by the
//! same transaction that carries its effect: a database error before the commit leaves it unseen,
//! so the platform's retry (or the person's second try) acts; a second delivery racing the first
//! finds the mark at commit and its effect rolls back.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

/// What became of one delivery's mark.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MarkState {
    /// Not written yet: the first transaction of the request that commits writes it.
    Pending {
        source: String,
        id: String,
        at: DateTime<Utc>,
    },
    Recorded,
    /// Another delivery of the same id got there first; this one must take no effect.
    SeenBefore,
}

/// One request's delivery mark, shared by the transactions the request opens.
#[derive(Debug, Clone)]
pub struct DeliveryMark(Arc<Mutex<MarkState>>);

impl DeliveryMark {
    pub fn new(source: &str, id: &str, at: DateTime<Utc>) -> Self {
        DeliveryMark(Arc::new(Mutex::new(MarkState::Pending {
            source: source.to_string(),
            id: id.to_string(),
            at,
        })))
    }

    /// Whether an earlier delivery of the same id was found when this one tried to record itself.
    pub fn seen_before(&self) -> bool {
        *self.state() == MarkState::SeenBefore
    }

    /// The mark to write, once: later transactions of the same request write nothing.
    pub(super) fn take_pending(&self) -> Option<(String, String, DateTime<Utc>)> {
        let mut state = self.state();
        match std::mem::replace(&mut *state, MarkState::Recorded) {
            MarkState::Pending { source, id, at } => Some((source, id, at)),
            other => {
                *state = other;
                None
            }
        }
    }

    /// What writing the mark found: `first` when no delivery of this id was recorded before.
    pub(super) fn written(&self, first: bool) {
        if !first {
            *self.state() = MarkState::SeenBefore;
        }
    }

    /// A transaction that took the mark failed to commit: the mark is pending again.
    pub(super) fn restore(&self, source: String, id: String, at: DateTime<Utc>) {
        *self.state() = MarkState::Pending { source, id, at };
    }

    fn state(&self) -> std::sync::MutexGuard<'_, MarkState> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
