//! Announcements: which channels hear about a window, a freeze or a schedule, and queueing the
//! message for them in the outbox (inside the caller's transaction, so it is sent once it commits).

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::{Channels, Config};
use crate::domain::platform::ChatPlatform;
use crate::domain::window::Freeze;
use crate::store::Tx;

use super::clock::Time;
use super::EngineError;

#[derive(Clone)]
pub(super) struct Announcer {
    config: Arc<Config>,
    time: Time,
    /// The platforms this bot speaks; channels on others are skipped.
    platforms: Arc<HashSet<ChatPlatform>>,
}

pub(super) fn channels_of(channels: &Channels) -> Vec<(ChatPlatform, String)> {
    let mut list = Vec::new();
    if let Some(slack) = &channels.slack {
        list.push((ChatPlatform::Slack, slack.clone()));
    }
    if let Some(discord) = &channels.discord {
        list.push((ChatPlatform::Discord, discord.clone()));
    }
    list
}

fn add_unique(list: &mut Vec<(ChatPlatform, String)>, more: Vec<(ChatPlatform, String)>) {
    for channel in more {
        if !list.contains(&channel) {
            list.push(channel);
        }
    }
}

impl Announcer {
    pub fn new(config: Arc<Config>, time: Time, platforms: Arc<HashSet<ChatPlatform>>) -> Self {
        Announcer {
            config,
            time,
            platforms,
        }
    }

    /// Queues `text` for each channel on the platforms this bot speaks.
    pub async fn announce(
        &self,
        tx: &mut Tx,
        channels: &[(ChatPlatform, String)],
        text: &str,
    ) -> Result<(), EngineError> {
        let now = self.time.real_now();
        for (platform, channel) in channels {
            if self.platforms.contains(platform) {
                tx.enqueue_announcement(*platform, channel, text, now)
                    .await?;
            }
        }
        Ok(())
    }

    /// The channels of the services that have `environment` (`*`: every service).
    pub fn environment_channels(&self, environment: &str) -> Vec<(ChatPlatform, String)> {
        let mut list = Vec::new();
        for service in &self.config.services {
            if environment == Freeze::ALL
                || service.environments.iter().any(|e| e.name == environment)
            {
                add_unique(&mut list, channels_of(&service.channels));
            }
        }
        list
    }

    /// The channels of every environment a freeze lists, each once.
    pub fn freeze_channels(&self, freeze: &Freeze) -> Vec<(ChatPlatform, String)> {
        let mut list = Vec::new();
        for env in &freeze.environments {
            add_unique(&mut list, self.environment_channels(env));
        }
        list
    }

    /// A window's own channels, or those of the services whose environments use it.
    pub fn window_channels(&self, window: &str) -> Vec<(ChatPlatform, String)> {
        if let Some(channels) = self
            .config
            .windows
            .iter()
            .find(|w| w.name == window)
            .and_then(|w| w.channels.as_ref())
        {
            return channels_of(channels);
        }
        let mut list = Vec::new();
        for service in &self.config.services {
            if service
                .environments
                .iter()
                .any(|e| e.windows.iter().any(|w| w == window))
            {
                add_unique(&mut list, channels_of(&service.channels));
            }
        }
        list
    }
}
