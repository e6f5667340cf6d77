//! Driving the bot on the fake Discord: slash commands and button clicks as the gateway delivers
//! them (or signed, over `POST /discord/interactions`), their answers, and what a card shows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use super::fake_discord::{self, CHANNEL_ID, GUILD_ID};
use super::{wait_until, TestBot};

pub const WAIT: Duration = Duration::from_secs(20);

/// Interaction ids: snowflake-sized and unique within the test binary.
pub fn next_interaction_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1_600_000_000_000_000_000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// `user` (holding `roles`) runs `/release <subcommand> …`; returns the interaction id.
pub async fn command(
    bot: &TestBot,
    user: u64,
    roles: &[&str],
    subcommand: &str,
    options: &[(&str, Value)],
) -> u64 {
    let fake = bot.fake_discord();
    let id = next_interaction_id();
    let token = format!("token-{id}");
    let data = fake.command_interaction_values(
        id, &token, user, roles, CHANNEL_ID, GUILD_ID, subcommand, options,
    );
    fake.dispatch("INTERACTION_CREATE", data).await;
    id
}

/// The answer to an interaction: its callback.
pub async fn answer(bot: &TestBot, interaction: u64) -> fake_discord::Callback {
    bot.fake_discord().wait_callback(interaction, WAIT).await
}

/// Runs a command and returns the ephemeral reply text, checking it came back in time.
pub async fn reply(
    bot: &TestBot,
    user: u64,
    roles: &[&str],
    sub: &str,
    options: &[(&str, Value)],
) -> String {
    let id = command(bot, user, roles, sub, options).await;
    let callback = answer(bot, id).await;
    assert_eq!(callback.kind, 4, "a message response: {callback:?}");
    assert_eq!(callback.data["flags"], 64, "ephemeral: {callback:?}");
    assert!(
        callback.latency.is_some_and(|l| l < Duration::from_secs(3)),
        "{callback:?}"
    );
    callback.data["content"]
        .as_str()
        .expect("content")
        .to_string()
}

pub fn embed_title(message: &fake_discord::Message) -> String {
    message.embeds[0]["title"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn embed_text(message: &fake_discord::Message) -> String {
    message.embeds.to_string()
}

pub fn button_ids(message: &fake_discord::Message) -> Vec<String> {
    message
        .components
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
        .filter_map(|button| button["custom_id"].as_str().map(str::to_string))
        .collect()
}

/// The card of promotion `id`, once its embed shows `state`.
pub async fn card_in_state(bot: &TestBot, id: i64, state: &str) -> fake_discord::Message {
    let fake = bot.fake_discord();
    let prefix = format!("#{id} ");
    let label = format!("**{}**", state.replace('_', " "));
    let mut seen = Vec::new();
    let found = wait_until(WAIT, || {
        seen = fake.messages(CHANNEL_ID);
        let hit = seen.iter().any(|m| {
            embed_title(m).contains(&prefix)
                && m.embeds[0]["description"]
                    .as_str()
                    .is_some_and(|d| d.starts_with(&label))
        });
        async move { hit }
    })
    .await;
    assert!(found, "card #{id} never showed {state}: {seen:#?}");
    seen.into_iter()
        .find(|m| embed_title(m).contains(&prefix))
        .expect("card")
}

/// `user` clicks the button `custom_id` on `card`, delivered through the gateway; returns the
/// interaction id.
pub async fn click(
    bot: &TestBot,
    user: u64,
    roles: &[&str],
    card: &fake_discord::Message,
    custom_id: &str,
) -> u64 {
    let fake = bot.fake_discord();
    let id = next_interaction_id();
    let data = fake.button_interaction(id, &format!("token-{id}"), user, roles, card, custom_id);
    fake.dispatch("INTERACTION_CREATE", data).await;
    id
}

/// `user` clicks the button `custom_id` on `card`, delivered to `POST /discord/interactions`
/// signed with the test key; checks the bot took it (202) and returns the interaction id.
pub async fn click_over_http(
    bot: &TestBot,
    user: u64,
    card: &fake_discord::Message,
    custom_id: &str,
) -> u64 {
    let fake = bot.fake_discord();
    let id = next_interaction_id();
    let data = fake.button_interaction(id, &format!("token-{id}"), user, &[], card, custom_id);
    fake.expect_interaction(&data);
    let body = data.to_string();
    let (signature, timestamp) =
        fake_discord::sign_interaction(&body, &fake_discord::now_timestamp());
    let response = reqwest::Client::new()
        .post(format!("{}/discord/interactions", bot.base))
        .header("content-type", "application/json")
        .header("x-signature-ed25519", signature)
        .header("x-signature-timestamp", timestamp)
        .body(body)
        .send()
        .await
        .expect("reaches the bot");
    assert_eq!(
        response.status().as_u16(),
        202,
        "the signed click was taken"
    );
    id
}
