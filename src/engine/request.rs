//! The one way into the engine: a [`Request`] is who asks, where, which platform delivery it is
//! (for dedupe), and what is asked. Front ends build one; [`super::Engine::handle`] does the rest.

use crate::domain::approval::ReactionVote;
use crate::domain::command::Command;
use crate::domain::identity::Actor;
use crate::domain::promotion::CardAction;
use crate::metrics::{ChatLabels, Metrics};
use crate::store::{DeliveryMark, Store};

use super::error::{EngineError, ErrorKind};
use super::reply::Reply;

use super::chat::{ChatOrigin, ChatPlatform};
use super::clock::Time;

#[derive(Debug, Clone)]
pub struct Request {
    pub actor: Actor,
    /// The chat channel it came from (`None`: the HTTP API or the scheduler).
    pub origin: Option<ChatOrigin>,
    /// The platform's id for this delivery: a second delivery of it takes no effect.
    pub delivery: Option<Delivery>,
    pub kind: RequestKind,
}

/// A platform delivery, by the id the platform repeats when it retries (Slack `event_id` or
/// `trigger_id`, Discord interaction id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Where the id comes from: `slack:event`, `slack:interaction`, `discord:interaction`,
    /// `discord:reaction`.
    pub source: &'static str,
    pub id: String,
    /// For a reaction (which carries no delivery id): whether it was added or removed. Its id
    /// (message, user, emoji) is then numbered by how often the opposite happened before, so a
    /// repeat of the same add (or remove) is caught and adding again after a removal is new.
    pub added: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    Command(Command),
    /// A line of the command grammar as typed (`promote api 1.4.2`); a parse error is a refusal
    /// like any other.
    Typed(String),
    /// A button clicked on a promotion's card.
    CardAction {
        action: CardAction,
        promotion: i64,
    },
    /// A checklist item ticked on a promotion's card (a Slack checkbox, a Discord button).
    ChecklistTick {
        promotion: i64,
        item: u32,
    },
    /// A reaction added to or removed from a message in the origin channel (maybe a card).
    Reaction {
        message_id: String,
        vote: ReactionVote,
    },
}

impl RequestKind {
    /// The `kind` label of `shipmate_chat_events_total`.
    pub(super) fn label(&self) -> &'static str {
        match self {
            RequestKind::Command(_) | RequestKind::Typed(_) => "command",
            RequestKind::CardAction { .. } | RequestKind::ChecklistTick { .. } => "button",
            RequestKind::Reaction { .. } => "reaction",
        }
    }
}

impl Request {
    /// A command from the HTTP API or the scheduler: no chat origin, no delivery id.
    pub fn command(actor: Actor, command: Command) -> Self {
        Request {
            actor,
            origin: None,
            delivery: None,
            kind: RequestKind::Command(command),
        }
    }

    /// A line of the grammar typed where `origin` says (`None`: the HTTP API).
    pub fn typed(actor: Actor, text: &str, origin: Option<ChatOrigin>) -> Self {
        Request {
            actor,
            origin,
            delivery: None,
            kind: RequestKind::Typed(text.to_string()),
        }
    }

    pub fn delivered(mut self, source: &'static str, id: impl Into<String>) -> Self {
        self.delivery = Some(Delivery {
            source,
            id: id.into(),
            added: None,
        });
        self
    }

    /// A reaction `key` (message, user and emoji) added or removed: see [`Delivery::added`].
    pub fn reacted(mut self, source: &'static str, key: impl Into<String>, added: bool) -> Self {
        self.delivery = Some(Delivery {
            source,
            id: key.into(),
            added: Some(added),
        });
        self
    }
}

/// Inbound chat deliveries: recorded once, counted by outcome.
#[derive(Clone)]
pub(super) struct Deliveries {
    store: Store,
    time: Time,
    metrics: std::sync::Arc<Metrics>,
}

impl Deliveries {
    pub fn new(store: Store, time: Time, metrics: std::sync::Arc<Metrics>) -> Self {
        Deliveries {
            store,
            time,
            metrics,
        }
    }

    /// The delivery with its final id: a reaction's is `<key>:add:<n>` or `<key>:remove:<n>`,
    /// `n` the number of opposite moves recorded for the key.
    pub async fn resolve(&self, delivery: &Delivery) -> Result<Delivery, EngineError> {
        let Some(added) = delivery.added else {
            return Ok(delivery.clone());
        };
        let (this, opposite) = if added {
            ("add", "remove")
        } else {
            ("remove", "add")
        };
        let before = self
            .store
            .count_inbound_prefixed(delivery.source, &format!("{}:{opposite}:", delivery.id))
            .await?;
        Ok(Delivery {
            source: delivery.source,
            id: format!("{}:{this}:{before}", delivery.id),
            added: None,
        })
    }

    /// Whether a delivery took effect before. A database error is an error, not "seen": the
    /// front end answers so that the platform (or the person) tries again.
    pub async fn seen(&self, delivery: &Delivery) -> Result<bool, EngineError> {
        Ok(self
            .store
            .seen_inbound(delivery.source, &delivery.id)
            .await?)
    }

    /// The mark the request's transaction writes with its effect.
    pub fn mark(&self, delivery: &Delivery) -> DeliveryMark {
        DeliveryMark::new(delivery.source, &delivery.id, self.time.now())
    }

    /// After a request: one that wrote nothing (a refusal, a read) is recorded now, so its repeat
    /// is answered as a repeat; one that failed on the database stays unrecorded, so its repeat
    /// acts.
    pub async fn settle(&self, mark: &DeliveryMark, result: &Result<Reply, EngineError>) {
        if matches!(result, Err(error) if error.kind == ErrorKind::Internal) {
            return;
        }
        if let Err(error) = self.store.record_if_pending(mark).await {
            tracing::warn!(%error, "could not record a chat delivery that changed nothing");
        }
    }

    /// Records a one-time key (a notice told once); `false` when it was recorded before or the
    /// database fails (staying silent beats repeating a notice).
    pub async fn first_time(&self, source: &str, id: &str) -> bool {
        match self.store.record_inbound(source, id, self.time.now()).await {
            Ok(first) => first,
            Err(e) => {
                tracing::error!(error = %e, source, "could not record a notice");
                false
            }
        }
    }

    /// `shipmate_chat_events_total{platform, kind, outcome}`.
    pub fn count(&self, platform: ChatPlatform, kind: &str, outcome: &str) {
        self.metrics
            .chat_events
            .get_or_create(&ChatLabels {
                platform: platform.to_string(),
                kind: kind.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }
}
