//! The chat port: what the engine needs from a chat platform to keep promotion cards current.
//! Adapters in `chat/` implement it; the engine never sees Block Kit or embeds.

use std::time::Duration;

use async_trait::async_trait;

pub use crate::domain::platform::ChatPlatform;

use super::card::Card;
use crate::domain::identity::Identity;

/// The chat channel a request was typed in; cards go there when the service names no channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatOrigin {
    pub platform: ChatPlatform,
    pub channel: String,
}

/// Why a platform call did not go through, and so what the outbox does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// Try again once `retry_after` has passed (HTTP 429).
    #[error("rate limited for {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// Network trouble, no answer in time, a 5xx, or Slack's own transient errors
    /// (`internal_error`, `fatal_error`, …): try again with backoff.
    #[error("platform unavailable: {0}")]
    Unavailable(String),
    /// The platform refused the bot itself (a revoked or wrong token, a missing scope): every
    /// call fails until an operator fixes the configuration, so keep trying with backoff, loudly,
    /// rather than drop every card meanwhile.
    #[error("platform refused the call: {0}")]
    Refused(String),
    /// The platform refused this very call and will refuse it again however often it is made
    /// (`msg_too_long`, `invalid_blocks`, `channel_not_found`, `not_in_channel`, a Discord
    /// 400/403/404): give up on it, loudly, so what comes after it is not blocked.
    #[error("platform refused the call for good: {0}")]
    Permanent(String),
}

impl ChatError {
    /// How long the platform asked us to wait, when it rate-limited the call.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ChatError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether trying the same call again is pointless.
    pub fn is_permanent(&self) -> bool {
        matches!(self, ChatError::Permanent(_))
    }
}

#[async_trait]
pub trait ChatPort: Send + Sync {
    fn platform(&self) -> ChatPlatform;
    /// Posts a new card; returns the platform's message id (Slack `ts`).
    async fn post_card(&self, channel: &str, card: &Card) -> Result<String, ChatError>;
    async fn update_card(
        &self,
        channel: &str,
        message_id: &str,
        card: &Card,
    ) -> Result<(), ChatError>;
    /// Posts a plain message (window and freeze announcements, scheduled command replies).
    async fn post_message(&self, channel: &str, text: &str) -> Result<(), ChatError>;
    /// Posts deploy output under the card.
    async fn post_to_thread(
        &self,
        channel: &str,
        message_id: &str,
        lines: &[String],
    ) -> Result<(), ChatError>;
    /// Posts a note of the bot's under the card (a reminder), pinging those of `mention` that
    /// are people or groups of this platform.
    async fn post_thread_note(
        &self,
        channel: &str,
        message_id: &str,
        text: &str,
        mention: &[Identity],
    ) -> Result<(), ChatError>;
}
