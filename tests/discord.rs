//! The Discord adapter end to end: the real bot, connected through serenity to a fake Discord on
//! loopback (REST under /api/v10 and a gateway websocket), driven with payloads in Discord's
//! documented shapes.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::discord::*;
use support::fake_discord::{self, Route, Scope, CHANNEL_ID, GUILD_ID};
use support::*;

async fn discord_bot() -> TestBot {
    let bot = TestBot::builder()
        .discord()
        .start()
        .await
        .expect("sqlite always available");
    bot.fake_discord().wait_session(WAIT).await;
    bot
}

/// `user` clicks Approve on the card of promotion `id`; returns the interaction id.
async fn approve_button(bot: &TestBot, user: u64, card: &fake_discord::Message, id: i64) -> u64 {
    click(bot, user, &[], card, &format!("shipmate:approve:{id}")).await
}

/// DISCORD_DEV runs `/release promote service:<service> version:<version>`; returns the reply.
async fn promote_as_dev(bot: &TestBot, service: &str, version: &str) -> String {
    let options = [("service", s(service)), ("version", s(version))];
    reply(bot, DISCORD_DEV, &[], "promote", &options).await
}

fn s(text: &str) -> Value {
    json!(text)
}

/// Promotes api 1.4.2 to dev and staging over the API, then asks for production on Discord as
/// DISCORD_DEV; returns the production promotion's id and its card.
async fn awaiting_production(bot: &TestBot) -> (i64, fake_discord::Message) {
    bot.reach("api", "1.4.2", &["dev", "staging"]).await;
    let text = promote_as_dev(bot, "api", "1.4.2").await;
    let id: i64 = text
        .split_once('#')
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no promotion id in {text:?}"));
    let card = card_in_state(bot, id, "awaiting_approval").await;
    (id, card)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_command_to_card_to_buttons_and_reactions_to_succeeded() {
    let bot = discord_bot().await;
    let fake = bot.fake_discord();

    // Registered on start, in the configured guild, with a subcommand per command.
    let registered = fake.registered_commands(Scope::Guild(GUILD_ID));
    assert_eq!(registered.len(), 1, "{registered:#?}");
    let subcommands: Vec<&str> = registered[0]["options"]
        .as_array()
        .expect("options")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    for name in [
        "promote", "approve", "reject", "status", "windows", "freeze", "pause", "resume",
        "advance", "abort",
    ] {
        assert!(subcommands.contains(&name), "{name} not in {subcommands:?}");
    }
    // The gateway session asked for the reaction intents and nothing privileged.
    let identify = &fake.identifies()[0];
    assert_eq!(identify.intents, 1 | (1 << 10) | (1 << 13), "{identify:?}");

    let (id, card) = awaiting_production(&bot).await;
    assert!(
        embed_title(&card).contains("api 1.4.2 → production"),
        "{card:?}"
    );
    assert!(embed_text(&card).contains("0/2"), "{card:?}");
    assert_eq!(
        button_ids(&card),
        [
            format!("shipmate:approve:{id}"),
            format!("shipmate:reject:{id}")
        ]
    );

    // The requester may not approve their own promotion: refused, ephemerally, to them only.
    let own = click(
        &bot,
        DISCORD_DEV,
        &[],
        &card,
        &format!("shipmate:approve:{id}"),
    )
    .await;
    let refusal = answer(&bot, own).await;
    assert_eq!(
        (refusal.kind, refusal.data["flags"].clone()),
        (4, json!(64)),
        "{refusal:?}"
    );
    let text = refusal.data["content"].as_str().unwrap_or_default();
    assert!(text.contains("leads"), "{text}");

    // A lead by user id approves with the button: acknowledged, the card counts 1/2.
    let approve = approve_button(&bot, DISCORD_LEAD, &card, id).await;
    assert_eq!(answer(&bot, approve).await.kind, 6);
    assert!(
        wait_until(WAIT, || {
            let shown = fake.message(CHANNEL_ID, card.id).map(|m| embed_text(&m));
            async move { shown.is_some_and(|t| t.contains("1/2")) }
        })
        .await,
        "the card never showed 1/2"
    );

    // A lead through the leads role approves with ✅: enough approvals, it deploys.
    let reaction = fake.reaction_add(
        DISCORD_LEAD2,
        &[DISCORD_LEADS_ROLE],
        CHANNEL_ID,
        GUILD_ID,
        card.id,
        "✅",
    );
    fake.dispatch("MESSAGE_REACTION_ADD", reaction).await;
    bot.wait_for_state(id, "succeeded").await;
    let done = card_in_state(&bot, id, "succeeded").await;
    assert!(
        button_ids(&done).is_empty(),
        "no buttons once it is over: {done:?}"
    );
    assert!(
        embed_text(&done).contains(&format!("<@{DISCORD_LEAD}>")),
        "{done:?}"
    );

    // Deploy output went to the card's thread, not the channel.
    assert!(
        wait_until(WAIT, || {
            let thread = fake.thread(card.id);
            async move {
                thread
                    .iter()
                    .any(|m| m.content.contains("deploying api 1.4.2 to production"))
            }
        })
        .await,
        "no deploy output in the thread: {:#?}",
        fake.thread(card.id)
    );
    let audit = bot.promotion(id).await;
    let approvers: Vec<&str> = audit["approvals"]
        .as_array()
        .expect("approvals")
        .iter()
        .filter_map(|a| a["by"].as_str())
        .collect();
    assert_eq!(
        approvers,
        [
            format!("discord:{DISCORD_LEAD}"),
            format!("discord:{DISCORD_LEAD2}")
        ]
    );
    assert!(
        fake.unknown_requests().is_empty(),
        "{:?}",
        fake.unknown_requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_seen_twice_takes_effect_once() {
    let bot = discord_bot().await;
    let fake = bot.fake_discord();
    let (id, card) = awaiting_production(&bot).await;

    // The same button interaction delivered twice (a replay after a resume).
    let interaction = next_interaction_id();
    let data = fake.button_interaction(
        interaction,
        &format!("token-{interaction}"),
        DISCORD_LEAD,
        &[],
        &card,
        &format!("shipmate:approve:{id}"),
    );
    fake.dispatch("INTERACTION_CREATE", data.clone()).await;
    fake.dispatch("INTERACTION_CREATE", data).await;
    assert_eq!(answer(&bot, interaction).await.kind, 6);

    // The same reaction twice.
    let reaction = fake.reaction_add(
        DISCORD_LEAD2,
        &[DISCORD_LEADS_ROLE],
        CHANNEL_ID,
        GUILD_ID,
        card.id,
        "👍",
    );
    fake.dispatch("MESSAGE_REACTION_ADD", reaction.clone())
        .await;
    fake.dispatch("MESSAGE_REACTION_ADD", reaction).await;
    bot.wait_for_state(id, "succeeded").await;

    let events = bot.promotion(id).await["events"].clone();
    let approvals = events
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "approval")
        .count();
    assert_eq!(approvals, 2, "one approval per delivery: {events:#}");
    let callbacks = fake
        .callbacks()
        .into_iter()
        .filter(|c| c.interaction_id == interaction)
        .count();
    assert_eq!(callbacks, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_from_people_who_may_not_approve_change_nothing_and_are_answered_once() {
    let bot = discord_bot().await;
    let fake = bot.fake_discord();
    let (id, card) = awaiting_production(&bot).await;

    for emoji in ["✅", "👍"] {
        let reaction =
            fake.reaction_add(DISCORD_STRANGER, &[], CHANNEL_ID, GUILD_ID, card.id, emoji);
        fake.dispatch("MESSAGE_REACTION_ADD", reaction).await;
    }
    let mention = format!("<@{DISCORD_STRANGER}>");
    assert!(
        wait_until(WAIT, || {
            let thread = fake.thread(card.id);
            let mention = mention.clone();
            async move { thread.iter().any(|m| m.content.starts_with(&mention)) }
        })
        .await,
        "no notice in the card's thread"
    );
    // A later event from someone else, to know both reactions have been handled.
    let approve = approve_button(&bot, DISCORD_LEAD, &card, id).await;
    answer(&bot, approve).await;
    let notices: Vec<String> = fake
        .thread(card.id)
        .into_iter()
        .map(|m| m.content)
        .filter(|c| c.starts_with(&format!("<@{DISCORD_STRANGER}>")))
        .collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].contains("leads"), "{notices:?}");
    let promotion = bot.promotion(id).await;
    assert_eq!(
        promotion["approvals"].as_array().map(Vec::len),
        Some(1),
        "{promotion:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A lead through a role: the removal event carries no member roles, and still withdraws.
async fn removing_an_approve_reaction_withdraws_the_approval() {
    let bot = discord_bot().await;
    let fake = bot.fake_discord();
    let (id, card) = awaiting_production(&bot).await;
    let add = fake.reaction_add(
        DISCORD_LEAD2,
        &[DISCORD_LEADS_ROLE],
        CHANNEL_ID,
        GUILD_ID,
        card.id,
        "✔️",
    );
    fake.dispatch("MESSAGE_REACTION_ADD", add).await;
    assert!(
        wait_until(WAIT, || async {
            bot.promotion(id).await["approvals"]
                .as_array()
                .map(Vec::len)
                == Some(1)
        })
        .await
    );
    let remove = fake.reaction_remove(DISCORD_LEAD2, CHANNEL_ID, GUILD_ID, card.id, "✔️");
    fake.dispatch("MESSAGE_REACTION_REMOVE", remove).await;
    assert!(
        wait_until(WAIT, || async {
            bot.promotion(id).await["approvals"]
                .as_array()
                .map(Vec::len)
                == Some(0)
        })
        .await,
        "the approval was not withdrawn"
    );
    assert_eq!(bot.promotion(id).await["state"], "awaiting_approval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A gateway event carries no delivery id; a resumed or handed-over session may repeat one. The
/// repeat of an add is dropped as a duplicate, while adding again after a removal counts again.
async fn a_repeated_reaction_event_takes_effect_once_and_a_readd_counts_again() {
    let bot = discord_bot().await;
    let fake = bot.fake_discord();
    let (id, _card, add, remove) = lead2_checkmark_events(&bot).await;
    let approvals = || async {
        bot.promotion(id).await["approvals"]
            .as_array()
            .map(Vec::len)
    };

    fake.dispatch("MESSAGE_REACTION_ADD", add.clone()).await;
    fake.dispatch("MESSAGE_REACTION_ADD", add.clone()).await;
    until_reactions_handled(&bot, 2).await;
    assert_eq!(approvals().await, Some(1));
    assert_eq!(reaction_outcomes(&bot, "duplicate").await, 1);

    fake.dispatch("MESSAGE_REACTION_REMOVE", remove).await;
    until_reactions_handled(&bot, 3).await;
    assert_eq!(
        approvals().await,
        Some(0),
        "the removal withdrew the approval"
    );

    fake.dispatch("MESSAGE_REACTION_ADD", add).await;
    until_reactions_handled(&bot, 4).await;
    assert_eq!(approvals().await, Some(1), "adding again approves again");
    assert_eq!(reaction_outcomes(&bot, "duplicate").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_help_and_status_are_ephemeral() {
    let bot = discord_bot().await;
    let text = promote_as_dev(&bot, "nope", "1.0.0").await;
    assert!(text.contains("nope"), "{text}");
    let help = reply(&bot, DISCORD_STRANGER, &[], "help", &[]).await;
    assert!(help.contains("/release promote"), "{help}");
    let status = reply(&bot, DISCORD_STRANGER, &[], "status", &[]).await;
    assert!(status.contains("api"), "{status}");
    let spaced = promote_as_dev(&bot, "api web", "1.0.0").await;
    assert!(spaced.contains("`service` must be one word"), "{spaced}");
    assert!(
        bot.fake_discord().messages(CHANNEL_ID).is_empty(),
        "nothing public was posted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_reconnects_after_the_gateway_drops_it() {
    let bot = discord_bot().await;
    let fake = bot.fake_discord();
    for (round, disconnect) in ["drop", "reconnect", "invalid session"]
        .into_iter()
        .enumerate()
    {
        let before = fake.connections();
        match disconnect {
            "drop" => fake.drop_connection(),
            "reconnect" => fake.send_reconnect(),
            _ => fake.send_invalid_session(false),
        }
        assert!(
            wait_until(Duration::from_secs(30), || {
                let (connections, ready) = (fake.connections(), fake.session_ready());
                async move { connections > before && ready }
            })
            .await,
            "round {round}: no new session after {disconnect}"
        );
        let status = reply(&bot, DISCORD_DEV, &[], "status", &[]).await;
        assert!(status.contains("api"), "round {round}: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_interactions_endpoint_checks_signatures_and_answers_ping() {
    let bot = discord_bot().await;
    let http = reqwest::Client::new();
    let url = format!("{}/discord/interactions", bot.base);
    let post = |body: String, signature: Option<(String, String)>| {
        let mut request = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some((signature, timestamp)) = signature {
            request = request
                .header("x-signature-ed25519", signature)
                .header("x-signature-timestamp", timestamp);
        }
        async move {
            let response = request.send().await.expect("reaches the bot");
            (
                response.status().as_u16(),
                response.text().await.unwrap_or_default(),
            )
        }
    };
    let ping = fake_discord::ping_interaction();
    let signed = fake_discord::sign_interaction(&ping, &fake_discord::now_timestamp());
    let (status, body) = post(ping.clone(), Some(signed.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).ok(),
        Some(json!({"type": 1}))
    );

    // Discord probes with bad signatures and drops endpoints that accept them.
    let (status, _) = post(
        ping.replace("A_UNIQUE_TOKEN", "B_UNIQUE_TOKEN"),
        Some(signed),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(post(ping.clone(), None).await.0, 401);
    let stale = (chrono::Utc::now().timestamp() - 600).to_string();
    assert_eq!(
        post(
            ping.clone(),
            Some(fake_discord::sign_interaction(&ping, &stale))
        )
        .await
        .0,
        401
    );

    // A signed command over HTTP is answered through the callback, like one from the gateway.
    let fake = bot.fake_discord();
    let id = next_interaction_id();
    let data = fake.command_interaction(
        id,
        &format!("token-{id}"),
        DISCORD_DEV,
        &[],
        CHANNEL_ID,
        GUILD_ID,
        "status",
        &[],
    );
    fake.expect_interaction(&data);
    let body = data.to_string();
    let (status, _) = post(
        body.clone(),
        Some(fake_discord::sign_interaction(
            &body,
            &fake_discord::now_timestamp(),
        )),
    )
    .await;
    assert_eq!(status, 202);
    let callback = answer(&bot, id).await;
    assert_eq!(callback.kind, 4);
    assert!(callback.data["content"]
        .as_str()
        .unwrap_or_default()
        .contains("api"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_card_edit_is_retried_from_the_outbox() {
    let bot = discord_bot().await;
    let fake = bot.fake_discord();
    let (id, card) = awaiting_production(&bot).await;
    fake.fail_next(Route::EditMessage, 1);
    let approve = approve_button(&bot, DISCORD_LEAD, &card, id).await;
    answer(&bot, approve).await;
    assert!(
        wait_until(WAIT, || {
            let shown = fake.message(CHANNEL_ID, card.id).map(|m| embed_text(&m));
            async move { shown.is_some_and(|t| t.contains("1/2")) }
        })
        .await,
        "the card never caught up after the 429"
    );
    let accepted: usize = fake.messages(CHANNEL_ID).iter().map(|m| m.edits).sum();
    assert_eq!(
        fake.calls(Route::EditMessage),
        accepted + 1,
        "every edit landed but the one answered 429"
    );
}

/// Fails after twelve lines of 999 characters: a failure reason quoting the last ten lines.
const LOUD_FAILURE_SCRIPT: &str = r#"#!/bin/sh
for i in 1 2 3 4 5 6 7 8 9 10 11 12; do
  head -c 999 /dev/zero | tr '\0' 'x'; echo
done
exit 3
"#;

/// Title, description, field names and values, footer: what Discord counts against 6,000.
fn embed_size(embed: &Value) -> usize {
    let len = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    let fields: usize = embed["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| len(&f["name"]) + len(&f["value"]))
        .sum();
    len(&embed["title"]) + len(&embed["description"]) + len(&embed["footer"]["text"]) + fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_notes_and_reason_are_cut_to_discords_embed_limits() {
    let bot = TestBot::builder()
        .discord()
        .script(LOUD_FAILURE_SCRIPT)
        .start()
        .await
        .expect("sqlite");
    let notes = format!("{} END", "n".repeat(5_000));
    let body = json!({"service": "api", "version": "6.6.6", "notes": notes});
    let (status, body) = bot.post("/api/v1/releases", CI_TOKEN, body).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = bot.promote(CI_TOKEN, "api", "6.6.6", Some("dev")).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_i64().expect("id");
    let card = card_in_state(&bot, id, "failed").await;
    let embed = &card.embeds[0];
    assert!(embed_size(embed) <= 6_000, "{}", embed_size(embed));
    let pointer = format!("full text: `GET /api/v1/promotions/{id}`)");
    let description = embed["description"].as_str().expect("description");
    assert!(
        description.contains("n…") && description.ends_with(&pointer),
        "{description}"
    );
    let why = embed["fields"]
        .as_array()
        .and_then(|fields| fields.iter().find(|f| f["name"] == "Why"))
        .and_then(|f| f["value"].as_str())
        .expect("a Why field");
    assert!(
        why.starts_with("exit code 3: xxx") && why.ends_with(&pointer),
        "{why}"
    );
    assert_eq!(
        bot.fake_discord().refusals(),
        vec![],
        "Discord refused nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_refused_for_good_is_dropped_and_the_card_still_ends_right() {
    let bot = discord_bot().await;
    let fake = bot.fake_discord();
    let (id, card) = awaiting_production(&bot).await;
    // The bot may not start the card's thread (403 Missing Access), whatever it tries.
    fake.refuse_next(Route::CreateThread, 1_000);
    let threads_before = fake.calls(Route::CreateThread);
    bot.act(id, "approve", LEAD_TOKEN).await;
    bot.act(id, "approve", LEAD2_TOKEN).await;
    card_in_state(&bot, id, "succeeded").await;
    assert!(fake.thread(card.id).is_empty());
    let tries = fake.calls(Route::CreateThread) - threads_before;
    assert!(
        (1..=3).contains(&tries),
        "each batch tried once, not retried: {tries}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_interaction_callback_does_not_hold_the_handler() {
    let bot = discord_bot().await;
    let fake = bot.fake_discord();
    let config = shipmate::config::load(&bot.path("bot.toml"), &|_| None).expect("config");
    let discord = shipmate::chat::discord::Discord::new(&config)
        .expect("client")
        .expect("[discord] configured");
    let inbound = shipmate::chat::discord::inbound::Inbound::new(bot.engine.clone(), discord);
    fake.hang(Route::Callback, None);
    let id = next_interaction_id();
    let data = fake.command_interaction_values(
        id,
        &format!("token-{id}"),
        DISCORD_DEV,
        &[],
        CHANNEL_ID,
        GUILD_ID,
        "help",
        &[],
    );
    fake.expect_interaction(&data);
    let interaction = serde_json::from_value(data).expect("an interaction serenity reads");
    let handled = tokio::time::timeout(Duration::from_secs(3), inbound.interaction(interaction));
    handled
        .await
        .expect("the handler returned although Discord never answered");
    assert_eq!(fake.held_calls(Route::Callback), 1);
}

/// A production promotion awaiting approval, and a lead's ✔️ add and remove events on its card.
async fn lead2_checkmark_events(bot: &TestBot) -> (i64, fake_discord::Message, Value, Value) {
    let fake = bot.fake_discord();
    let (id, card) = awaiting_production(bot).await;
    let roles = [DISCORD_LEADS_ROLE];
    let add = fake.reaction_add(DISCORD_LEAD2, &roles, CHANNEL_ID, GUILD_ID, card.id, "✔️");
    let remove = fake.reaction_remove(DISCORD_LEAD2, CHANNEL_ID, GUILD_ID, card.id, "✔️");
    (id, card, add, remove)
}

/// How many reactions the bot has handled (`shipmate_chat_events_total`, any outcome).
async fn reactions_handled(bot: &TestBot) -> u64 {
    reaction_outcomes(bot, "").await
}

/// How many reactions ended in `outcome` (every outcome: "").
async fn reaction_outcomes(bot: &TestBot, outcome: &str) -> u64 {
    let outcome = format!(r#"outcome="{outcome}"#);
    let (_, metrics) = bot
        .request(reqwest::Method::GET, "/metrics", None, None)
        .await;
    metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter(|line| {
            line.starts_with("shipmate_chat_events_total{")
                && line.contains(r#"platform="discord""#)
                && line.contains(r#"kind="reaction""#)
                && line.contains(&outcome)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn until_reactions_handled(bot: &TestBot, n: u64) {
    let handled = wait_until(WAIT, || async { reactions_handled(bot).await >= n }).await;
    assert!(
        handled,
        "{} of {n} reactions handled",
        reactions_handled(bot).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// A quick ✔️ and its removal, delivered the other way round: the approval does not come back.
async fn reaction_events_out_of_order_leave_the_vote_as_the_card_shows_it() {
    let bot = discord_bot().await;
    let fake = bot.fake_discord();
    let (id, card, add, remove) = lead2_checkmark_events(&bot).await;
    // On Discord the reaction is already gone; its two events come late and swapped.
    fake.set_user_reaction(card.id, "✔️", DISCORD_LEAD2, false);
    for (name, event) in [
        ("MESSAGE_REACTION_REMOVE", remove),
        ("MESSAGE_REACTION_ADD", add),
    ] {
        fake.try_dispatch(name, event, WAIT)
            .await
            .unwrap_or_else(|why| panic!("{why}"));
    }
    until_reactions_handled(&bot, 2).await;
    assert_eq!(bot.promotion(id).await["approvals"], json!([]));
    assert!(
        fake.thread(card.id).is_empty(),
        "nobody is told anything in the card's thread: {:?}",
        fake.thread(card.id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_one_of_two_approve_reactions_keeps_the_approval() {
    let bot = discord_bot().await;
    let fake = bot.fake_discord();
    let (id, card) = awaiting_production(&bot).await;
    let roles = [DISCORD_LEADS_ROLE];
    for emoji in ["✅", "✔️"] {
        let add = fake.reaction_add(DISCORD_LEAD2, &roles, CHANNEL_ID, GUILD_ID, card.id, emoji);
        fake.dispatch("MESSAGE_REACTION_ADD", add).await;
    }
    until_reactions_handled(&bot, 2).await;
    let remove = fake.reaction_remove(DISCORD_LEAD2, CHANNEL_ID, GUILD_ID, card.id, "✔️");
    fake.dispatch("MESSAGE_REACTION_REMOVE", remove).await;
    until_reactions_handled(&bot, 3).await;
    let approvals = bot.promotion(id).await["approvals"].clone();
    assert_eq!(approvals.as_array().map(Vec::len), Some(1), "{approvals}");
}

/// Pause, Resume and Abort clicks and the rollout subcommands reach the engine, which refuses
/// them here (nothing is rolling out), ephemerally; what they do to a running rollout is the
/// controls use case's to test. A button the bot did not make is only acknowledged (type 6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_control_buttons_and_subcommands_reach_the_engine() {
    let bot = discord_bot().await;
    let (id, card) = awaiting_production(&bot).await;
    let foreign = click(
        &bot,
        DISCORD_LEAD,
        &[],
        &card,
        &format!("shipmate:launch:{id}"),
    )
    .await;
    assert_eq!(answer(&bot, foreign).await.kind, 6);
    for action in ["pause", "resume", "abort"] {
        let clicked = click(
            &bot,
            DISCORD_LEAD,
            &[],
            &card,
            &format!("shipmate:{action}:{id}"),
        )
        .await;
        let refusal = answer(&bot, clicked).await;
        assert_eq!(
            (refusal.kind, refusal.data["flags"].clone()),
            (4, json!(64)),
            "{action}: {refusal:?}"
        );
        let text = refusal.data["content"].as_str().unwrap_or_default();
        assert!(!text.trim().is_empty(), "{action}: {refusal:?}");
    }
    for (sub, options) in [
        ("pause", vec![("id", json!(id))]),
        ("resume", vec![("id", json!(id))]),
        ("advance", vec![("id", json!(id))]),
        (
            "abort",
            vec![("id", json!(id)), ("reason", s("error rate doubled"))],
        ),
    ] {
        let text = reply(&bot, DISCORD_DEV, &[], sub, &options).await;
        assert!(
            !text.is_empty() && !text.contains("Usage:") && !text.contains("unknown command"),
            "{sub}: {text}"
        );
    }
    assert_eq!(bot.promotion(id).await["state"], "awaiting_approval");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// With Discord configured, the one replica holds the gateway (on SQLite, by being the only
/// process on the file) and says so in the cluster view.
async fn the_replica_running_the_gateway_is_shown_as_its_holder() {
    let bot = discord_bot().await;
    let held = wait_until(WAIT, || async {
        let (_, view) = bot.get("/api/v1/cluster", CI_TOKEN).await;
        view["gateway_holder"] == view["this_replica"]
            && view["replicas"][0]["holds_gateway"] == true
    })
    .await;
    assert!(held, "{}", bot.get("/api/v1/cluster", CI_TOKEN).await.1);
}
