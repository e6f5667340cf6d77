//! Slack: the Web API client that keeps cards current (`ChatPort`), and the inbound endpoints in
//! [`inbound`] for slash commands, button clicks and reactions.

pub mod blocks;
pub mod inbound;
pub mod manifest;
pub mod socket_mode;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use crate::chat::limits;
use crate::config::{Config, SlackConfig};
use crate::domain::identity::Identity;
use crate::engine::card::Card;
use crate::engine::{ChatError, ChatPlatform, ChatPort};

/// How long a usergroup's member list is trusted.
const USERGROUP_TTL: Duration = Duration::from_secs(300);
/// Longest the usergroup lookups of one request may take: they run before the engine answers,
/// within Slack's 3 seconds (and, in Socket Mode, while the connection waits for the ack).
pub const USERGROUP_LOOKUP_TIMEOUT: Duration = Duration::from_millis(1_500);
/// Longest an ephemeral notice may take; it is sent off the request path, but must not pile up.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack's `ok: false` errors that say "try again later" (docs.slack.dev/apis/web-api: the
/// common errors every method may answer).
const TRANSIENT_ERRORS: &[&str] = &[
    "ratelimited",
    "internal_error",
    "fatal_error",
    "request_timeout",
    "service_unavailable",
    "team_added_to_org",
];
/// Errors about the bot's token or app, not the call: every call fails until an operator fixes
/// the configuration.
const CONFIGURATION_ERRORS: &[&str] = &[
    "not_authed",
    "invalid_auth",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "no_permission",
    "missing_scope",
    "not_allowed_token_type",
    "org_login_required",
    "ekm_access_denied",
    "team_access_not_granted",
    "two_factor_setup_required",
];

/// The Slack side of the bot: Web API client, token and the usergroups named in `[roles]`.
pub struct Slack {
    client: Arc<SlackHyperClient>,
    token: SlackApiToken,
    pub(crate) config: SlackConfig,
    /// `slack-group:<id>` identities that appear in `[roles]`.
    groups: Vec<String>,
    group_members: Mutex<HashMap<String, (Instant, HashSet<String>)>>,
}

#[derive(Debug, thiserror::Error)]
#[error("could not set up the Slack client: {0}")]
pub struct SetupError(String);

impl Slack {
    pub fn new(config: &Config) -> Result<Option<Arc<Slack>>, SetupError> {
        let Some(slack) = &config.slack else {
            return Ok(None);
        };
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| SetupError(format!("no system CA certificates: {e}")))?;
        // Plain http only for a loopback fake (`api_url = "http://127.0.0.1:…/api"`).
        let https = if slack.api_url.starts_with("http://") {
            builder.https_or_http().enable_all_versions().build()
        } else {
            builder.https_only().enable_all_versions().build()
        };
        let connector = SlackClientHyperConnector::from(https).with_slack_api_url(&slack.api_url);
        let groups = config
            .roles
            .members()
            .filter_map(|member| member.strip_prefix("slack-group:").map(str::to_string))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        Ok(Some(Arc::new(Slack {
            client: Arc::new(SlackClient::new(connector)),
            token: SlackApiToken::new(slack.bot_token.expose().to_string().into()),
            config: slack.clone(),
            groups,
            group_members: Mutex::new(HashMap::new()),
        })))
    }

    /// The Web API client, shared with the Socket Mode listener.
    pub(crate) fn client(&self) -> Arc<SlackHyperClient> {
        self.client.clone()
    }

    fn session(&self) -> SlackClientSession<'_, SlackClientHyperHttpsConnector> {
        self.client.open_session(&self.token)
    }

    /// A message only `user` sees, in `channel` (`text` already escaped). Best effort: it is a
    /// notice, not state.
    pub async fn tell(&self, channel: &str, user: &str, text: &str) {
        let text = limits::cut(text, blocks::MAX_TEXT, "");
        let request = SlackApiChatPostEphemeralRequest::new(
            channel.to_string().into(),
            user.to_string().into(),
            SlackMessageContent::new().with_text(text),
        );
        let session = self.session();
        let sent = tokio::time::timeout(NOTICE_TIMEOUT, session.chat_post_ephemeral(&request));
        match sent.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, channel, user, "could not post an ephemeral notice")
            }
            Err(_) => tracing::warn!(
                channel,
                user,
                "Slack did not answer an ephemeral notice within {}s; it is lost",
                NOTICE_TIMEOUT.as_secs()
            ),
        }
    }

    /// The Slack identity of a user, with the `[roles]` usergroups they belong to. Lookups that
    /// Slack does not answer within [`USERGROUP_LOOKUP_TIMEOUT`] count as "not a member".
    pub async fn actor_identities(&self, user: &str) -> Vec<Identity> {
        let deadline = tokio::time::Instant::now() + USERGROUP_LOOKUP_TIMEOUT;
        let mut memberships = Vec::new();
        for group in &self.groups {
            if self.group_members(group, deadline).await.contains(user) {
                memberships.push(Identity::new("slack-group", group));
            }
        }
        memberships
    }

    /// Members of a usergroup, cached for a few minutes. On failure or no answer by `deadline`:
    /// nobody (fail closed).
    async fn group_members(&self, group: &str, deadline: tokio::time::Instant) -> HashSet<String> {
        if let Some(members) = self.cached_members(group) {
            return members;
        }
        let request = SlackApiUserGroupsUsersListRequest::new(group.to_string().into());
        let session = self.session();
        let listed = tokio::time::timeout_at(deadline, session.usergroups_users_list(&request));
        let Ok(listed) = listed.await else {
            tracing::warn!(
                group,
                "Slack did not list the usergroup's members within {}ms; treating the user as not a member",
                USERGROUP_LOOKUP_TIMEOUT.as_millis()
            );
            return HashSet::new();
        };
        match listed {
            Ok(response) => {
                let members: HashSet<String> =
                    response.users.into_iter().map(|u| u.to_string()).collect();
                if let Ok(mut cache) = self.group_members.lock() {
                    cache.insert(group.to_string(), (Instant::now(), members.clone()));
                }
                members
            }
            Err(e) => {
                tracing::warn!(error = %e, group, "could not list usergroup members; treating as not a member");
                HashSet::new()
            }
        }
    }

    fn cached_members(&self, group: &str) -> Option<HashSet<String>> {
        let cache = self.group_members.lock().ok()?;
        let (at, members) = cache.get(group)?;
        (at.elapsed() < USERGROUP_TTL).then(|| members.clone())
    }
}

fn chat_error(error: SlackClientError) -> ChatError {
    match error {
        SlackClientError::RateLimitError(limit) => ChatError::RateLimited {
            retry_after: limit.retry_after.unwrap_or(Duration::from_secs(1)),
        },
        SlackClientError::ApiError(api) => api_error(api.code),
        other => ChatError::Unavailable(other.to_string()),
    }
}

/// An `ok: false` answer by its error code. Codes not known to be transient or about the bot's
/// configuration are about the call itself (`msg_too_long`, `invalid_blocks`,
/// `channel_not_found`, `not_in_channel`, `is_archived`, `message_not_found`,
/// `cant_update_message`, …): the same call would be refused again.
fn api_error(code: String) -> ChatError {
    if TRANSIENT_ERRORS.contains(&code.as_str()) {
        ChatError::Unavailable(code)
    } else if CONFIGURATION_ERRORS.contains(&code.as_str()) {
        ChatError::Refused(code)
    } else {
        ChatError::Permanent(code)
    }
}

fn card_content(card: &Card) -> SlackMessageContent {
    SlackMessageContent::new()
        .with_text(blocks::fallback_text(card))
        .with_blocks(blocks::card_blocks(card))
}

#[async_trait]
impl ChatPort for Slack {
    fn platform(&self) -> ChatPlatform {
        ChatPlatform::Slack
    }

    async fn post_card(&self, channel: &str, card: &Card) -> Result<String, ChatError> {
        let request =
            SlackApiChatPostMessageRequest::new(channel.to_string().into(), card_content(card));
        let response = self
            .session()
            .chat_post_message(&request)
            .await
            .map_err(chat_error)?;
        Ok(response.ts.to_string())
    }

    async fn update_card(
        &self,
        channel: &str,
        message_id: &str,
        card: &Card,
    ) -> Result<(), ChatError> {
        let request = SlackApiChatUpdateRequest::new(
            channel.to_string().into(),
            card_content(card),
            message_id.to_string().into(),
        );
        self.session()
            .chat_update(&request)
            .await
            .map_err(chat_error)?;
        Ok(())
    }

    async fn post_message(&self, channel: &str, text: &str) -> Result<(), ChatError> {
        let content =
            SlackMessageContent::new().with_text(blocks::escaped_within(text, blocks::MAX_TEXT));
        let request = SlackApiChatPostMessageRequest::new(channel.to_string().into(), content);
        self.session()
            .chat_post_message(&request)
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
        for text in blocks::thread_messages(lines) {
            self.say_in_thread(channel, message_id, text).await?;
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
        let pings: Vec<String> = mention.iter().filter_map(blocks::ping).collect();
        let text = format!("{} {}", pings.join(" "), blocks::escape(text));
        self.say_in_thread(channel, message_id, text.trim_start().to_string())
            .await
    }
}

impl Slack {
    /// Posts `text` as a reply in the thread of message `ts`.
    async fn say_in_thread(&self, channel: &str, ts: &str, text: String) -> Result<(), ChatError> {
        let content = SlackMessageContent::new().with_text(text);
        let request = SlackApiChatPostMessageRequest::new(channel.to_string().into(), content)
            .with_thread_ts(ts.to_string().into());
        self.session()
            .chat_post_message(&request)
            .await
            .map_err(chat_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_errors_are_sorted_into_transient_configuration_and_permanent() {
        for code in [
            "ratelimited",
            "internal_error",
            "fatal_error",
            "request_timeout",
            "service_unavailable",
        ] {
            assert!(
                matches!(api_error(code.into()), ChatError::Unavailable(_)),
                "{code}"
            );
        }
        for code in ["invalid_auth", "token_revoked", "missing_scope"] {
            assert!(
                matches!(api_error(code.into()), ChatError::Refused(_)),
                "{code}"
            );
        }
        for code in [
            "msg_too_long",
            "invalid_blocks",
            "channel_not_found",
            "not_in_channel",
            "is_archived",
            "message_not_found",
            "no_text",
        ] {
            assert!(api_error(code.into()).is_permanent(), "{code}");
        }
    }
}
