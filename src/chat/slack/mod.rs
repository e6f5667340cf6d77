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

use crate::config::{Config, SlackConfig};
use crate::domain::identity::Identity;
use crate::engine::card::Card;
use crate::engine::{ChatError, ChatPlatform, ChatPort};

/// How long a usergroup's member list is trusted.
const USERGROUP_TTL: Duration = Duration::from_secs(300);

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

    /// A message only `user` sees, in `channel`. Best effort: it is a notice, not state.
    pub async fn tell(&self, channel: &str, user: &str, text: &str) {
        let request = SlackApiChatPostEphemeralRequest::new(
            channel.to_string().into(),
            user.to_string().into(),
            SlackMessageContent::new().with_text(text.to_string()),
        );
        if let Err(e) = self.session().chat_post_ephemeral(&request).await {
            tracing::warn!(error = %e, channel, user, "could not post an ephemeral notice");
        }
    }

    /// The Slack identity of a user, with the `[roles]` usergroups they belong to.
    pub async fn actor_identities(&self, user: &str) -> Vec<Identity> {
        let mut memberships = Vec::new();
        for group in &self.groups {
            if self.group_members(group).await.contains(user) {
                memberships.push(Identity::new("slack-group", group));
            }
        }
        memberships
    }

    /// Members of a usergroup, cached for a few minutes. On failure: nobody (fail closed).
    async fn group_members(&self, group: &str) -> HashSet<String> {
        if let Some(members) = self.cached_members(group) {
            return members;
        }
        let request = SlackApiUserGroupsUsersListRequest::new(group.to_string().into());
        match self.session().usergroups_users_list(&request).await {
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
        SlackClientError::ApiError(api) => ChatError::Refused(api.code),
        other => ChatError::Unavailable(other.to_string()),
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
        let content = SlackMessageContent::new().with_text(blocks::escape(text));
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
        let content = SlackMessageContent::new().with_text(blocks::thread_text(lines));
        let request = SlackApiChatPostMessageRequest::new(channel.to_string().into(), content)
            .with_thread_ts(message_id.to_string().into());
        self.session()
            .chat_post_message(&request)
            .await
            .map_err(chat_error)?;
        Ok(())
    }
}
