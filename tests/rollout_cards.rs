//! Rollout cards on Slack and Discord (SPEC §5.2): a canary's card shows its step and the
//! countdown to the next one and offers Pause/Resume and Abort; the buttons steer the rollout for
//! the people allowed to, an abort rolls back, and the failed card names its rollback. End to end
//! against the fake Slack and the fake Discord, with a loopback health endpoint and the manual
//! clock.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::fake_discord::{self, CHANNEL_ID};
use support::fake_slack::Message;
use support::rollout::*;
use support::slack::{block_text, buttons};
use support::*;

const WAIT: Duration = Duration::from_secs(20);

/// Where the Slack promotion is asked for: not shop's channel, so its card must go there.
const ASKED_IN: &str = "C0DEVCHAT";

/// The rollout line of promotion `id` in its first gate, read from its stored start: five
/// minutes of pause at 10%, none of them gone (the manual clock stands still meanwhile).
async fn first_gate(bot: &TestBot, id: i64) -> String {
    wait_for_gate(bot, id, 1).await;
    let row = bot.store.rollout(id).await.expect("read").expect("row");
    let started = row.gate_started_at.expect("the gate's clock runs");
    let due = started + chrono::Duration::minutes(5);
    format!(
        "canary 1/3 · 10% · next step at {} UTC (in 5m)",
        due.format("%H:%M")
    )
}

/// A bot on the fake Slack (or Discord) whose service `shop` rolls out as a three-step canary
/// with a rollback on failure, already running 1.0.0, so a failed version has something to roll
/// back to.
async fn shop_running_1_0_0(builder: Builder, health: &Health) -> TestBot {
    let bot = builder
        .script(STEP_SCRIPT)
        .config(&shop_in_channels(CANARY, health, "rollback"))
        .start()
        .await
        .expect("sqlite");
    if let Some(discord) = &bot.discord {
        discord.wait_session(WAIT).await;
    }
    walk_canary(&bot, "1.0.0").await;
    bot
}

// ---- Slack ----------------------------------------------------------------------------------

/// The Slack card of promotion `id` in shop's channel, once `shows` holds for it.
async fn slack_card_when(
    bot: &TestBot,
    id: i64,
    what: &str,
    shows: impl Fn(&Message) -> bool,
) -> Message {
    let title = format!("#{id} ");
    let card = || {
        bot.fake_slack()
            .messages(RELEASES_CHANNEL)
            .into_iter()
            .find(|m| m.thread_ts.is_none() && m.text.starts_with(&title))
    };
    let shown = wait_until(WAIT, || {
        let hit = card().is_some_and(|m| shows(&m));
        async move { hit }
    })
    .await;
    let last = card();
    assert!(
        shown,
        "the card of #{id} never showed {what}; last: {:#?}",
        last.as_ref().map(block_text)
    );
    last.expect("card")
}

/// Waits for the ephemeral notices `user` was sent, `n` of them.
async fn ephemerals(bot: &TestBot, user: &str, n: usize) -> Vec<String> {
    let slack = bot.fake_slack();
    let mut notices = Vec::new();
    let told = wait_until(WAIT, || {
        notices.extend(slack.take_ephemerals(user).into_iter().map(|e| e.text));
        let enough = notices.len() >= n;
        async move { enough }
    })
    .await;
    assert!(told, "{user} was told {notices:?}, not {n} notices");
    notices
}

#[tokio::test]
async fn slack_card_shows_the_canary_step_and_its_buttons_pause_resume_and_abort_it() {
    let health = Health::start().await;
    let bot = shop_running_1_0_0(TestBot::builder().slack(), &health).await;

    let reply = bot.slash(SLACK_DEV, ASKED_IN, "promote shop 1.1.0").await;
    assert!(reply.starts_with("requested: #"), "{reply}");
    let id = promotion_id(&reply);
    let first_gate = first_gate(&bot, id).await;

    // In the service's channel: the step, the countdown, and Pause and Abort.
    let card = slack_card_when(&bot, id, &first_gate, |m| {
        block_text(m).contains(&first_gate)
    })
    .await;
    assert_eq!(buttons(&card), ["shipmate:pause", "shipmate:abort"]);
    assert!(card.text.ends_with(": deploying"), "{}", card.text);
    assert!(
        !bot.fake_slack()
            .messages(ASKED_IN)
            .iter()
            .any(|m| m.text.starts_with(&format!("#{id} "))),
        "the card went to shop's channel only"
    );

    // Someone in no role clicks Pause, then Abort: told why, to them only; nothing changes.
    let before = bot.store.rollout(id).await.expect("read").expect("row");
    for action in ["pause", "abort"] {
        bot.click(SLACK_STRANGER, RELEASES_CHANNEL, &card.ts, action, id)
            .await;
    }
    let notices = ephemerals(&bot, SLACK_STRANGER, 2).await;
    assert_eq!(notices.len(), 2, "{notices:?}");
    for notice in &notices {
        assert!(
            notice.contains("only the deployer who requested it"),
            "{notice}"
        );
    }
    let after = bot.store.rollout(id).await.expect("read").expect("row");
    assert_eq!(
        after, before,
        "the refused clicks left the rollout as it was"
    );
    assert_eq!(after.paused_by, None);
    assert_eq!(after.abort_by, None);
    assert_eq!(bot.promotion(id).await["state"], "deploying");
    let unchanged = bot
        .fake_slack()
        .message(RELEASES_CHANNEL, &card.ts)
        .expect("card");
    assert!(block_text(&unchanged).contains(&first_gate));
    assert_eq!(buttons(&unchanged), ["shipmate:pause", "shipmate:abort"]);

    // The deployer who asked for it pauses: held before step 2, and the card says by whom.
    bot.click(SLACK_DEV, RELEASES_CHANNEL, &card.ts, "pause", id)
        .await;
    let held = bot.store.rollout(id).await.expect("read").expect("row");
    assert_eq!(held.paused_by.as_deref(), Some("slack:U0DEV"));
    let paused_line =
        format!("canary 1/3 · 10% · paused by <@{SLACK_DEV}> before step 2/3; checks keep running");
    let paused = slack_card_when(&bot, id, &paused_line, |m| {
        block_text(m).contains(&paused_line)
    })
    .await;
    assert_eq!(buttons(&paused), ["shipmate:resume", "shipmate:abort"]);
    assert_eq!(paused.ts, card.ts, "the same card, edited");

    // Resume: the countdown and Pause are back.
    bot.click(SLACK_DEV, RELEASES_CHANNEL, &card.ts, "resume", id)
        .await;
    let resumed = slack_card_when(&bot, id, "the countdown again", |m| {
        block_text(m).contains(&first_gate)
    })
    .await;
    assert_eq!(buttons(&resumed), ["shipmate:pause", "shipmate:abort"]);
    let row = bot.store.rollout(id).await.expect("read").expect("row");
    assert_eq!((row.position, row.paused_by), (1, None));

    // Abort: the promotion fails, naming who aborted it and its rollback.
    bot.click(SLACK_DEV, RELEASES_CHANNEL, &card.ts, "abort", id)
        .await;
    let failed = bot.wait_for_state(id, "failed").await;
    let reason = failed["reason"].as_str().expect("reason");
    let rollback = rollback_named(reason);
    assert_eq!(
        reason,
        format!("aborted by slack:U0DEV; rolled back by #{rollback} (to 1.0.0)")
    );
    let new_steps: Vec<String> = calls(&bot)
        .into_iter()
        .filter(|c| c.starts_with("1.1.0 "))
        .collect();
    assert_eq!(
        new_steps,
        ["1.1.0 1/3 10 deploy rollback=false"],
        "no step after the first"
    );

    // The rollback has its own card in the same channel: one step, verifying, Abort only.
    wait_for_gate(&bot, rollback, 1).await;
    assert_eq!(
        calls(&bot).last().map(String::as_str),
        Some("1.0.0 1/1 100 deploy rollback=true")
    );
    let rollback_title = format!("#{rollback} shop 1.0.0 → production (rollback)");
    let rollback_card = slack_card_when(&bot, rollback, "verifying", |m| {
        m.text == format!("{rollback_title}: verifying")
            && block_text(m).contains("verifying: 0s of 10m")
    })
    .await;
    assert_eq!(buttons(&rollback_card), ["shipmate:abort"]);

    // The failed card ends with its reason; no rollout line or steering buttons are left.
    let ended = bot.card_in_state(RELEASES_CHANNEL, id, "failed").await;
    assert_eq!(ended.ts, card.ts);
    let text = block_text(&ended);
    assert!(
        text.contains(&format!(
            "*Why:* aborted by slack:U0DEV; rolled back by #{rollback} (to 1.0.0)"
        )),
        "{text}"
    );
    assert!(!text.contains("canary 1/3"), "{text}");
    assert!(
        buttons(&ended)
            .iter()
            .all(|b| !["shipmate:pause", "shipmate:resume", "shipmate:abort"].contains(&b.as_str())),
        "{:?}",
        buttons(&ended)
    );
    assert!(
        bot.fake_slack().take_ephemerals(SLACK_DEV).is_empty(),
        "the deployer's clicks were all taken"
    );
}

// ---- Discord --------------------------------------------------------------------------------

fn rollout_field(card: &fake_discord::Message) -> Option<String> {
    field(card, "Rollout")
}

fn field(card: &fake_discord::Message, name: &str) -> Option<String> {
    card.embeds[0]["fields"]
        .as_array()?
        .iter()
        .find(|f| f["name"] == name)
        .and_then(|f| f["value"].as_str())
        .map(str::to_string)
}

/// The Discord card of promotion `id`, once `shows` holds for it.
async fn discord_card_when(
    bot: &TestBot,
    id: i64,
    what: &str,
    shows: impl Fn(&fake_discord::Message) -> bool,
) -> fake_discord::Message {
    let title = format!("#{id} ");
    let card = || {
        bot.fake_discord()
            .messages(CHANNEL_ID)
            .into_iter()
            .find(|m| support::discord::embed_title(m).contains(&title))
    };
    let shown = wait_until(WAIT, || {
        let hit = card().is_some_and(|m| shows(&m));
        async move { hit }
    })
    .await;
    let last = card();
    assert!(
        shown,
        "the card of #{id} never showed {what}; last: {:#?}",
        last.as_ref().map(|m| m.embeds.clone())
    );
    last.expect("card")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_card_shows_the_canary_step_and_its_abort_button_rolls_back() {
    let health = Health::start().await;
    let bot = shop_running_1_0_0(TestBot::builder().discord(), &health).await;

    let options = [
        ("service", Value::from("shop")),
        ("version", Value::from("1.1.0")),
    ];
    let text = support::discord::reply(&bot, DISCORD_DEV, &[], "promote", &options).await;
    let id = promotion_id(&text);
    let first_gate = first_gate(&bot, id).await;

    let card = discord_card_when(&bot, id, &first_gate, |m| {
        rollout_field(m).as_deref() == Some(first_gate.as_str())
    })
    .await;
    assert_eq!(
        support::discord::button_ids(&card),
        [
            format!("shipmate:pause:{id}"),
            format!("shipmate:abort:{id}")
        ]
    );

    // The deployer who asked for it clicks Abort, signed over the HTTP interactions endpoint.
    let click = support::discord::click_over_http(
        &bot,
        DISCORD_DEV,
        &card,
        &format!("shipmate:abort:{id}"),
    )
    .await;
    assert_eq!(
        support::discord::answer(&bot, click).await.kind,
        6,
        "acknowledged; the card shows the change"
    );
    let failed = bot.wait_for_state(id, "failed").await;
    let reason = failed["reason"].as_str().expect("reason");
    let rollback = rollback_named(reason);
    assert_eq!(
        reason,
        format!("aborted by discord:{DISCORD_DEV}; rolled back by #{rollback} (to 1.0.0)")
    );

    // The rollback's card, in the same channel.
    wait_for_gate(&bot, rollback, 1).await;
    let rollback_card = discord_card_when(&bot, rollback, "its rollback card", |m| {
        support::discord::embed_title(m).contains("shop 1.0.0 → production (rollback)")
            && rollout_field(m).is_some_and(|line| line.starts_with("verifying: "))
    })
    .await;
    assert_eq!(
        support::discord::button_ids(&rollback_card),
        [format!("shipmate:abort:{rollback}")]
    );

    // The failed card ends with its reason naming the rollback, its rollout line gone.
    let ended = support::discord::card_in_state(&bot, id, "failed").await;
    assert_eq!(ended.id, card.id, "the same card, edited");
    assert_eq!(field(&ended, "Why").as_deref(), Some(reason));
    assert_eq!(rollout_field(&ended), None);
    assert!(
        !support::discord::button_ids(&ended)
            .iter()
            .any(|b| b.starts_with("shipmate:pause") || b.starts_with("shipmate:abort")),
        "{:?}",
        support::discord::button_ids(&ended)
    );
}

/// A service that names no channel gets its cards where it was asked for; the automatic
/// rollback of a promotion asked for there gets its card there too, not nowhere.
#[tokio::test]
async fn an_automatic_rollback_is_carded_beside_the_promotion_it_undoes() {
    let health = Health::start().await;
    let bot = TestBot::builder()
        .slack()
        .script(STEP_SCRIPT)
        .config(&shop(CANARY, &health, "rollback"))
        .start()
        .await
        .expect("sqlite");
    walk_canary(&bot, "1.0.0").await;
    let reply = bot.slash(SLACK_DEV, ASKED_IN, "promote shop 1.1.0").await;
    let id = promotion_id(&reply);
    wait_for_gate(&bot, id, 1).await;
    health.fail_next(1);
    bot.clock.advance(Duration::from_secs(30));
    let failed = bot.wait_for_state(id, "failed").await;
    let rollback = rollback_named(failed["reason"].as_str().expect("reason"));

    let title = format!("#{rollback} shop 1.0.0 → production (rollback)");
    let carded = wait_until(WAIT, || {
        let seen = bot
            .fake_slack()
            .messages(ASKED_IN)
            .iter()
            .any(|m| m.thread_ts.is_none() && m.text.starts_with(&title));
        async move { seen }
    })
    .await;
    assert!(
        carded,
        "no rollback card in {ASKED_IN}: {:#?}",
        bot.fake_slack().messages(ASKED_IN)
    );
}
