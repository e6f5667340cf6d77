//! Discord: the REST client that keeps cards current (`ChatPort`), the gateway connection in
//! [`gateway`] that brings slash commands, buttons and reactions, and the optional signed HTTP
//! interactions endpoint in [`inbound`].

pub mod commands;
pub mod gateway;
pub mod inbound;
mod reactions;
pub mod render;

use std::num::NonZeroU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serenity::all::{
    ApplicationId, ChannelId, CreateMessage, CreateThread, EditMessage, Http, HttpBuilder,
    MessageId, UserId,
};
use serenity::http::HttpError;

use crate::config::{Config, DiscordConfig};
use crate::domain::identity::Identity;
use crate::engine::card::Card;
use crate::engine::{ChatError, ChatPlatform, ChatPort};

/// The production REST base; anything else (a loopback fake, a proxy) is a custom base.
const DISCORD_API: &str = "https://discord.com";
/// The name of the thread under a card (deploy output and notices).
const THREAD_NAME: &str = "deploy log";
/// Discord's JSON error codes the adapter reacts to.
const UNKNOWN_CHANNEL: isize = 10003;
const THREAD_ALREADY_EXISTS: isize = 160004;
/// With serenity's rate limiter off (custom base), a 429's `retry_after` is not visible to us
/// (serenity drops the body it cannot decode); wait this long before the outbox tries again.
const FALLBACK_RETRY_AFTER: Duration = Duration::from_secs(2);
/// Longest a notice in a card's thread may take (it answers a reaction; it must not pile up).
const NOTICE_TIMEOUT: Duration = Duration::from_secs(10);

/// The Discord side of the bot: REST client and configuration.
pub struct Discord {
    http: Arc<Http>,
    pub(crate) config: DiscordConfig,
    /// The bot's own user, learnt from READY, so its own reactions are not votes.
    bot_user: OnceLock<UserId>,
}

#[derive(Debug, thiserror::Error)]
#[error("could not set up the Discord client: {0}")]
pub struct SetupError(String);

impl Discord {
    pub fn new(config: &Config) -> Result<Option<Arc<Discord>>, SetupError> {
        let Some(discord) = &config.discord else {
            return Ok(None);
        };
        Ok(Some(Arc::new(Discord {
            http: Arc::new(build_http(discord)?),
            config: discord.clone(),
            bot_user: OnceLock::new(),
        })))
    }

    pub fn http(&self) -> &Http {
        &self.http
    }

    pub(crate) fn learn_bot_user(&self, user: UserId) {
        let _ = self.bot_user.set(user);
    }

    pub(crate) fn is_bot(&self, user: UserId) -> bool {
        self.bot_user.get() == Some(&user)
    }

    /// Posts `content` in the thread under a message, starting the thread on first use. Discord
    /// gives a thread started from a message the message's id, so no bookkeeping is needed.
    async fn say_in_thread(
        &self,
        channel: ChannelId,
        message: MessageId,
        content: &str,
    ) -> Result<(), ChatError> {
        let thread = ChannelId::new(message.get());
        let send =
            || thread.send_message(self.http.as_ref(), CreateMessage::new().content(content));
        match send().await {
            Err(e) if json_code(&e) == Some(UNKNOWN_CHANNEL) => {}
            other => return other.map(drop).map_err(chat_error),
        }
        let started = channel
            .create_thread_from_message(self.http.as_ref(), message, CreateThread::new(THREAD_NAME))
            .await;
        match started {
            Err(e) if json_code(&e) != Some(THREAD_ALREADY_EXISTS) => return Err(chat_error(e)),
            _ => {}
        }
        send().await.map(drop).map_err(chat_error)
    }

    /// A notice in a card's thread (Discord has no ephemeral messages outside interactions).
    pub(crate) async fn notice(&self, channel: ChannelId, message: MessageId, content: &str) {
        let content = render::truncate(content, render::MAX_CONTENT);
        let said = tokio::time::timeout(
            NOTICE_TIMEOUT,
            self.say_in_thread(channel, message, &content),
        );
        match said.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, %channel, "could not post a notice in the card's thread")
            }
            Err(_) => tracing::warn!(
                %channel,
                "Discord did not answer a notice within {}s; it is lost",
                NOTICE_TIMEOUT.as_secs()
            ),
        }
    }
}

/// The REST client. Production keeps serenity's rate limiter (it reads Discord's bucket headers and
/// waits out 429s itself). A custom `api_url` needs it off: serenity's limiter ignores the base URL.
pub fn build_http(config: &DiscordConfig) -> Result<Http, SetupError> {
    let application = NonZeroU64::new(config.application_id)
        .ok_or_else(|| SetupError("discord.application_id must not be 0".into()))?;
    let builder = HttpBuilder::new(config.bot_token.expose())
        .application_id(ApplicationId::from(application));
    let builder = if config.api_url == DISCORD_API {
        builder
    } else {
        builder
            .proxy(config.api_url.clone())
            .ratelimiter_disabled(true)
    };
    Ok(builder.build())
}

fn channel_id(text: &str) -> Result<ChannelId, ChatError> {
    text.parse::<NonZeroU64>()
        .map(ChannelId::from)
        .map_err(|_| ChatError::Permanent(format!("`{text}` is not a Discord channel id")))
}

fn message_id(text: &str) -> Result<MessageId, ChatError> {
    text.parse::<NonZeroU64>()
        .map(MessageId::from)
        .map_err(|_| ChatError::Permanent(format!("`{text}` is not a Discord message id")))
}

fn unsuccessful(error: &serenity::Error) -> Option<&serenity::http::ErrorResponse> {
    match error {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(response)) => Some(response),
        _ => None,
    }
}

fn json_code(error: &serenity::Error) -> Option<isize> {
    unsuccessful(error).map(|response| response.error.code)
}

/// A failed REST call by its status (or serenity's own check of the message): 429 and 5xx pass; 401 is the bot's token (keep trying until
/// an operator fixes it); any other 4xx (400 invalid body, 403 missing access, 404 unknown
/// channel or message, 413 too large) would be refused again.
fn chat_error(error: serenity::Error) -> ChatError {
    let Some(response) = unsuccessful(&error) else {
        return match error {
            // serenity checked the message itself (an embed too large, too many buttons): the
            // same message would be refused again.
            serenity::Error::Model(problem) => ChatError::Permanent(problem.to_string()),
            other => ChatError::Unavailable(other.to_string()),
        };
    };
    let status = response.status_code;
    let described = || {
        format!(
            "HTTP {status} (code {}): {}",
            response.error.code, response.error.message
        )
    };
    match status.as_u16() {
        429 => ChatError::RateLimited {
            retry_after: FALLBACK_RETRY_AFTER,
        },
        401 => ChatError::Refused(described()),
        _ if status.is_server_error() => ChatError::Unavailable(format!("HTTP {status}")),
        _ if status.is_client_error() => ChatError::Permanent(described()),
        _ => ChatError::Unavailable(described()),
    }
}

#[async_trait]
impl ChatPort for Discord {
    fn platform(&self) -> ChatPlatform {
        ChatPlatform::Discord
    }

    async fn post_card(&self, channel: &str, card: &Card) -> Result<String, ChatError> {
        let message = CreateMessage::new()
            .content(render::card_content(card))
            .embed(render::card_embed(card))
            .components(render::card_components(card));
        let sent = channel_id(channel)?
            .send_message(self.http.as_ref(), message)
            .await
            .map_err(chat_error)?;
        Ok(sent.id.to_string())
    }

    async fn update_card(
        &self,
        channel: &str,
        message_id: &str,
        card: &Card,
    ) -> Result<(), ChatError> {
        let edit = EditMessage::new()
            .content(render::card_content(card))
            .embed(render::card_embed(card))
            .components(render::card_components(card));
        channel_id(channel)?
            .edit_message(self.http.as_ref(), self::message_id(message_id)?, edit)
            .await
            .map_err(chat_error)?;
        Ok(())
    }

    async fn post_message(&self, channel: &str, text: &str) -> Result<(), ChatError> {
        let message = CreateMessage::new().content(render::truncate(text, render::MAX_CONTENT));
        channel_id(channel)?
            .send_message(self.http.as_ref(), message)
            .await
            .map_err(chat_error)?;
        Ok(())
    }

    async fn post_to_thread(
        &self,
        channel: &str,
        message_id: &str,
        lines: &[String],
    ) -> Result<(), ChatError> {
        let (channel, message) = (channel_id(channel)?, self::message_id(message_id)?);
        for content in render::thread_messages(lines) {
            self.say_in_thread(channel, message, &content).await?;
        }
        Ok(())
    }

    async fn post_thread_note(
        &self,
        channel: &str,
        message_id: &str,
        text: &str,
        mention: &[Identity],
    ) -> Result<(), ChatError> {
        let (channel, message) = (channel_id(channel)?, self::message_id(message_id)?);
        let pings: Vec<String> = mention.iter().filter_map(render::ping).collect();
        let content = format!("{} {text}", pings.join(" "));
        let content = render::truncate(content.trim_start(), render::MAX_CONTENT);
        self.say_in_thread(channel, message, &content).await
    }
}
