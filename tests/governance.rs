//! Release records and governance (SPEC §10) through the HTTP API and the chat grammar: the
//! manifest, "what was tested is what ships", and approvals cleared by a changed digest.

mod support;

use serde_json::{json, Value};
use support::*;

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

async fn create(bot: &TestBot, body: Value) -> (u16, Value) {
    bot.post("/api/v1/releases", CI_TOKEN, body).await
}

fn kinds(promotion: &Value) -> Vec<String> {
    promotion["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["kind"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_carries_its_manifest_and_refuses_a_bad_one() {
    let bot = TestBot::start().await;
    let (status, release) = create(
        &bot,
        json!({"service": "api", "version": "1.4.2", "commit": "abc1234",
               "committed_at": "2026-12-01T09:30:00Z", "digest": digest('A'),
               "changes": ["feat: search by tag", "fix!: drop v1 API"]}),
    )
    .await;
    assert_eq!(status, 201, "{release}");
    assert_eq!(
        release["digest"],
        digest('a'),
        "digests are stored in lower case"
    );
    assert_eq!(release["committed_at"], "2026-12-01T09:30:00.000Z");
    assert_eq!(release["changes"][1], "fix!: drop v1 API");

    for (body, problem) in [
        (
            json!({"service": "api", "version": "1.4.3", "digest": "sha256:abc"}),
            "digest",
        ),
        (
            json!({"service": "api", "version": "1.4.3", "committed_at": "yesterday"}),
            "committed_at",
        ),
        (
            json!({"service": "api", "version": "1.4.3", "changes": ["x".repeat(1001)]}),
            "changes[0]",
        ),
    ] {
        let (status, answer) = create(&bot, body).await;
        assert_eq!(status, 400, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(problem), "{message}");
    }
    let (_, history) = bot.get("/api/v1/services/api/history", CI_TOKEN).await;
    assert_eq!(history, json!([]), "a refused release changes nothing");

    // The same release again with nothing new is still refused as existing.
    let (status, again) = create(&bot, json!({"service": "api", "version": "1.4.2"})).await;
    assert_eq!(status, 409, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_environment_needs_the_digest_the_one_before_tested() {
    let bot = TestBot::start().await;
    let (status, _) = create(
        &bot,
        json!({"service": "api", "version": "1.0.0", "digest": digest('a')}),
    )
    .await;
    assert_eq!(status, 201);
    let dev = bot.promote_id("api", "1.0.0", Some("dev")).await;
    bot.wait_for_state(dev, "succeeded").await;
    let env = std::fs::read_to_string(bot.path(&format!("deployed-{dev}.env"))).unwrap_or_default();
    assert!(
        env.contains(&format!("SHIPMATE_DIGEST={}", digest('a'))),
        "the deploy script sees the digest it deploys: {env}"
    );

    // A new artifact for the same version after dev tested the old one.
    let (status, updated) = create(
        &bot,
        json!({"service": "api", "version": "1.0.0", "digest": digest('b')}),
    )
    .await;
    assert_eq!(status, 200, "an update answers 200: {updated}");
    assert_eq!(updated["digest"], digest('b'));
    let (status, refused) = bot.promote(CI_TOKEN, "api", "1.0.0", Some("staging")).await;
    assert_eq!(status, 422, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("now sha256:bbbbbbb but dev tested sha256:aaaaaaa")
            && message.contains("release the new artifact as a new version"),
        "{message}"
    );

    // The new artifact as a new version goes through, tested at each step.
    let (status, _) = create(
        &bot,
        json!({"service": "api", "version": "1.0.1", "digest": digest('b')}),
    )
    .await;
    assert_eq!(status, 201);
    bot.reach("api", "1.0.1", &["dev", "staging"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_digest_clears_the_approvals_of_a_waiting_promotion() {
    let bot = TestBot::start().await;
    let (status, _) = create(
        &bot,
        json!({"service": "api", "version": "2.0.0", "digest": digest('a')}),
    )
    .await;
    assert_eq!(status, 201);
    bot.reach("api", "2.0.0", &["dev", "staging"]).await;
    let (status, waiting) = bot
        .promote(CI_TOKEN, "api", "2.0.0", Some("production"))
        .await;
    assert_eq!(status, 202, "{waiting}");
    let prod = waiting["id"].as_i64().expect("id");
    let (status, approved_once) = bot.act(prod, "approve", LEAD_TOKEN).await;
    assert_eq!(status, 200, "{approved_once}");
    assert_eq!(approved_once["approvals"].as_array().map(Vec::len), Some(1));

    // The digest is changed through the chat grammar this time.
    let (status, reply) = bot
        .post(
            "/api/v1/commands",
            CI_TOKEN,
            json!({"text": format!("create api 2.0.0 digest {}", digest('c'))}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply
            .to_string()
            .contains("updated the manifest of api 2.0.0"),
        "the reply says it updated, not created: {reply}"
    );

    let promotion = bot.promotion(prod).await;
    assert_eq!(promotion["state"], "awaiting_approval");
    assert_eq!(promotion["approvals"], json!([]), "{promotion:#}");
    assert!(
        kinds(&promotion).contains(&"approvals_cleared".to_string()),
        "{promotion:#}"
    );
    let cleared = promotion["events"]
        .as_array()
        .and_then(|events| events.iter().find(|e| e["kind"] == "approvals_cleared"))
        .cloned()
        .unwrap_or_default();
    assert!(
        cleared["detail"]
            .as_str()
            .is_some_and(|d| d.contains("1 approval(s) cleared") && d.contains("sha256:ccccccc")),
        "{cleared}"
    );

    // Staging tested the first artifact: the new one may not be approved into production.
    let (status, refused) = bot.act(prod, "approve", LEAD_TOKEN).await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        message(&refused).contains("is now sha256:ccccccc but staging tested sha256:aaaaaaa"),
        "{refused}"
    );
    let explained = why(&bot, prod).await;
    assert_eq!(
        blocker_kinds(&explained),
        ["approvals", "digest"],
        "{explained:#}"
    );
}

const BILLING: &str = r#"
[[service]]
name = "billing"
  [[service.environment]]
  name = "production"
  backend = { kind = "command", run = ["./deploy.sh"], timeout = "30s" }
  approvals = { required = 1, from = "leads", major = 2 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_major_release_asks_for_the_major_number_of_approvals() {
    let bot = TestBot::with_config(BILLING).await;
    let required = |body: &Value| body["required_approvals"].as_i64();

    let (status, first) = bot.promote(CI_TOKEN, "billing", "1.0.0", None).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(required(&first), Some(1), "a first release is not major");
    let first = first["id"].as_i64().expect("id");
    bot.act(first, "approve", LEAD_TOKEN).await;
    bot.wait_for_state(first, "succeeded").await;

    let (_, minor) = bot.promote(CI_TOKEN, "billing", "1.1.0", None).await;
    assert_eq!(required(&minor), Some(1), "{minor}");
    let minor = minor["id"].as_i64().expect("id");
    let (status, _) = bot.act(minor, "cancel", CI_TOKEN).await;
    assert_eq!(status, 200);

    let (_, major) = bot.promote(CI_TOKEN, "billing", "2.0.0", None).await;
    assert_eq!(required(&major), Some(2), "1.0.0 → 2.0.0 is major: {major}");
    let major = major["id"].as_i64().expect("id");
    let (_, once) = bot.act(major, "approve", LEAD_TOKEN).await;
    assert_eq!(once["state"], "awaiting_approval", "one of two: {once}");
    let (_, twice) = bot.act(major, "approve", LEAD2_TOKEN).await;
    assert_eq!(twice["state"], "approved", "{twice}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// DORA's lead time runs from the release's commit time when the manifest gives one.
async fn lead_time_starts_at_the_commit_time_when_the_release_has_one() {
    let bot = TestBot::start().await;
    let committed = start_time() - chrono::Duration::days(2);
    let (status, _) = create(
        &bot,
        json!({"service": "web", "version": "3.0.0", "committed_at": committed.to_rfc3339()}),
    )
    .await;
    assert_eq!(status, 201);
    let id = bot.promote_id("web", "3.0.0", Some("staging")).await;
    bot.wait_for_state(id, "succeeded").await;
    let (status, dora) = bot
        .get(
            "/api/v1/dora?service=web&environment=staging&days=30",
            CI_TOKEN,
        )
        .await;
    assert_eq!(status, 200, "{dora}");
    let p50 = dora["lead_time_seconds"]["p50"]
        .as_f64()
        .unwrap_or_default();
    assert!(
        p50 >= 2.0 * 86_400.0,
        "from the commit two days ago: {dora}"
    );
}

/// `shop`: production asks two lead approvals after a two-item checklist, starts only on Sunday
/// nights, and has a hotfix path of one lead approval.
fn shop(discord_channel: &str) -> String {
    format!(
        r#"
[[window]]
name = "sunday-night"
cron = "0 0 3 * * Sun"
duration = "1h"
timezone = "UTC"

[[service]]
name = "shop"
channels = {{ slack = "{RELEASES_CHANNEL}", discord = "{discord_channel}" }}
  [[service.environment]]
  name = "production"
  backend = {{ kind = "command", run = ["./deploy.sh"], timeout = "30s" }}
  approvals = {{ required = 2, from = "leads", expires = "10h" }}
  checklist = ["Changelog reviewed", "Migrations are backward compatible"]
  windows = ["sunday-night"]
  hotfix = {{ from = "leads", required = 1 }}
"#
    )
}

fn message(answer: &Value) -> String {
    answer["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn why(bot: &TestBot, id: i64) -> Value {
    let (status, why) = bot
        .get(&format!("/api/v1/promotions/{id}/why"), CI_TOKEN)
        .await;
    assert_eq!(status, 200, "{why}");
    why
}

fn blocker_kinds(why: &Value) -> Vec<String> {
    why["blockers"]
        .as_array()
        .map(|blockers| {
            blockers
                .iter()
                .filter_map(|b| b["kind"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn tick(bot: &TestBot, id: i64, item: &str, token: &str) -> (u16, Value) {
    bot.post(
        &format!("/api/v1/promotions/{id}/checklist/{item}"),
        token,
        json!({}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_wait_for_the_checklist_and_why_says_so() {
    let bot = TestBot::with_config(&shop("1")).await;
    let (status, waiting) = bot.promote(CI_TOKEN, "shop", "1.0.0", None).await;
    assert_eq!(status, 202, "{waiting}");
    let id = waiting["id"].as_i64().expect("id");

    let explained = why(&bot, id).await;
    assert_eq!(
        blocker_kinds(&explained),
        ["checklist", "approvals", "window"],
        "{explained:#}"
    );
    let text = explained["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("1. Changelog reviewed; 2. Migrations are backward compatible")
            && text.contains("needs 2 more approvals (0/2)")
            && text.contains("slack-group:S0LEADS")
            && text.contains("sunday-night opens"),
        "{text}"
    );

    let (status, refused) = bot.act(id, "approve", LEAD_TOKEN).await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        message(&refused).contains("not ticked yet: 1. Changelog reviewed; 2. Migrations"),
        "the refusal names the open items: {refused}"
    );
    // The refusal and `why` are the same words.
    let checklist_reason = explained["blockers"][0]["problem"].as_str().unwrap_or("?");
    assert!(message(&refused).contains(checklist_reason), "{refused}");

    for (item, token, status_wanted) in [
        ("0", CI_TOKEN, 400),
        ("3", CI_TOKEN, 404),
        ("1", OUTSIDER_TOKEN, 403),
        ("1", CI_TOKEN, 200),
        ("1", LEAD_TOKEN, 200),
    ] {
        let (status, answer) = tick(&bot, id, item, token).await;
        assert_eq!(status, status_wanted, "item {item}: {answer}");
    }
    let (_, still) = bot.act(id, "approve", LEAD_TOKEN).await;
    assert!(
        message(&still).contains("not ticked yet: 2. Migrations are backward compatible"),
        "only item 2 is open: {still}"
    );
    // Item 2 through the chat grammar, as a lead.
    let (status, reply) = bot.say(LEAD_TOKEN, &format!("check #{id} 2")).await;
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply["reply"]
            .as_str()
            .is_some_and(|r| r.contains("checklist 2/2 ticked")),
        "{reply}"
    );
    assert_eq!(blocker_kinds(&why(&bot, id).await), ["approvals", "window"]);

    let (_, once) = bot.act(id, "approve", LEAD_TOKEN).await;
    assert_eq!(once["state"], "awaiting_approval", "{once}");
    let (_, twice) = bot.act(id, "approve", LEAD2_TOKEN).await;
    assert_eq!(
        twice["state"], "queued",
        "approved outside its window: {twice}"
    );
    let queued = why(&bot, id).await;
    assert_eq!(blocker_kinds(&queued), ["window"], "{queued:#}");

    let promotion = bot.promotion(id).await;
    let ticks: Vec<(String, String)> = promotion["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "checklist_ticked")
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or_default().to_string(),
                e["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        ticks,
        [
            (
                "api:ci".to_string(),
                "checklist 1/2 ticked: 1. Changelog reviewed".to_string()
            ),
            (
                "api:lead".to_string(),
                "checklist 2/2 ticked: 2. Migrations are backward compatible".to_string()
            ),
        ],
        "each tick audited once, with who (the second tick of item 1 was a no-op)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hotfix_starts_outside_its_window_with_the_hotfix_approvals_but_never_in_a_freeze() {
    let bot = TestBot::with_config(&shop("1")).await;
    let (status, hotfix) = bot
        .post(
            "/api/v1/promotions",
            CI_TOKEN,
            json!({"service": "shop", "version": "1.0.0", "hotfix_reason": "incident 512"}),
        )
        .await;
    assert_eq!(status, 202, "{hotfix}");
    assert_eq!(hotfix["required_approvals"], 1, "the hotfix path's number");
    let id = hotfix["id"].as_i64().expect("id");
    for item in ["1", "2"] {
        assert_eq!(tick(&bot, id, item, LEAD_TOKEN).await.0, 200);
    }
    let (status, approved) = bot.act(id, "approve", LEAD_TOKEN).await;
    assert_eq!(status, 200, "{approved}");
    bot.wait_for_state(id, "succeeded").await;
    let requested = bot.promotion(id).await["events"][0]["detail"].clone();
    assert!(
        requested
            .as_str()
            .is_some_and(|d| d.contains("(hotfix: incident 512)")),
        "audited: {requested}"
    );

    let (status, _) = bot
        .say(ADMIN_TOKEN, "freeze production for 2h incident 513")
        .await;
    assert_eq!(status, 200);
    let (status, said) = bot
        .say(CI_TOKEN, "promote shop 1.0.1 --hotfix \"incident 513\"")
        .await;
    assert_eq!(status, 422, "the chat grammar takes --hotfix: {said}");
    let (status, refused) = bot
        .post(
            "/api/v1/promotions",
            CI_TOKEN,
            json!({"service": "shop", "version": "1.0.1", "hotfix_reason": "incident 513"}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(message(&said), message(&refused));
    assert!(
        message(&refused)
            .starts_with("a hotfix never starts in a freeze: production is frozen until")
            && message(&refused).contains("set by api:admin"),
        "{refused}"
    );
    // A normal promote may wait through the freeze; why names it and who set it.
    let waiting = bot.promote_id("shop", "1.0.1", None).await;
    let frozen = why(&bot, waiting).await;
    assert_eq!(
        blocker_kinds(&frozen),
        ["checklist", "approvals", "freeze"],
        "{frozen:#}"
    );
    assert!(
        frozen["blockers"][2]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("(incident 513), set by api:admin")),
        "{frozen:#}"
    );
    let (status, no_path) = bot
        .post(
            "/api/v1/promotions",
            CI_TOKEN,
            json!({"service": "web", "version": "1.0.0", "environment": "staging", "hotfix_reason": "x"}),
        )
        .await;
    assert_eq!(status, 422, "{no_path}");
    assert!(
        message(&no_path).contains("has no hotfix path"),
        "{no_path}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_explains_an_ended_promotion_and_an_unknown_one_is_not_found() {
    let bot = TestBot::with_config(&shop("1")).await;
    let id = bot.promote_id("shop", "1.0.0", None).await;
    let (status, _) = bot
        .post(
            &format!("/api/v1/promotions/{id}/reject"),
            LEAD_TOKEN,
            json!({"reason": "not this week"}),
        )
        .await;
    assert_eq!(status, 200);
    let rejected = why(&bot, id).await;
    assert_eq!(blocker_kinds(&rejected), ["ended"], "{rejected:#}");
    assert!(
        rejected["text"]
            .as_str()
            .is_some_and(|t| t.contains("not this week") && t.contains("promote again")),
        "{rejected:#}"
    );
    let (status, _) = bot.get("/api/v1/promotions/999/why", CI_TOKEN).await;
    assert_eq!(status, 404);
    let (status, _) = bot.get(&format!("/api/v1/promotions/{id}/why"), "").await;
    assert_eq!(status, 401);
    let (status, reply) = bot.say(CI_TOKEN, &format!("why #{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        reply["reply"], rejected["text"],
        "chat and API say the same"
    );
}

/// The actors of a promotion's `kind` events, oldest first.
async fn actors_of(bot: &TestBot, id: i64, kind: &str) -> Vec<String> {
    bot.promotion(id).await["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == kind)
        .filter_map(|e| e["actor"].as_str().map(str::to_string))
        .collect()
}

async fn wait_for_actors(bot: &TestBot, id: i64, kind: &str, wanted: &[String]) {
    let reached = wait_until(std::time::Duration::from_secs(20), || async move {
        actors_of(bot, id, kind).await.as_slice() == wanted
    })
    .await;
    let seen = actors_of(bot, id, kind).await;
    assert!(reached, "{kind} by {wanted:?}, saw {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_card_pings_the_approvers_takes_checkbox_ticks_and_reminds_once() {
    let bot = TestBot::builder()
        .slack()
        .config(&shop(&support::fake_discord::CHANNEL_ID.to_string()))
        .start()
        .await
        .expect("sqlite");
    let id = bot.promote_id("shop", "1.0.0", None).await;
    let card = bot
        .card_in_state(RELEASES_CHANNEL, id, "awaiting_approval")
        .await;
    let blocks = card.blocks.to_string();
    assert!(
        blocks.contains(&format!("<@{SLACK_LEAD}>"))
            && blocks.contains(&format!("<!subteam^{SLACK_LEADS_GROUP}>")),
        "the card asks the leads by name and group: {blocks}"
    );
    let action_id = format!("shipmate:check:{id}");
    assert!(blocks.contains(&action_id), "checkboxes: {blocks}");

    let check = |selected: Vec<String>| {
        let selected: Vec<&str> = selected.iter().map(String::as_str).collect();
        support::fake_slack::checkboxes_action_body(
            SLACK_LEAD,
            RELEASES_CHANNEL,
            &card.ts,
            &action_id,
            &selected,
        )
    };
    let (status, _) = bot
        .slack_post(
            "/slack/interactions",
            FORM,
            check(vec![format!("{id}:1")]),
            0,
        )
        .await;
    assert_eq!(status, 200);
    let lead = format!("slack:{SLACK_LEAD}");
    wait_for_actors(&bot, id, "checklist_ticked", std::slice::from_ref(&lead)).await;
    // Slack sends every checked box: item 1 again is no new tick.
    let both = vec![format!("{id}:1"), format!("{id}:2")];
    let (status, _) = bot
        .slack_post("/slack/interactions", FORM, check(both), 0)
        .await;
    assert_eq!(status, 200);
    wait_for_actors(&bot, id, "checklist_ticked", &[lead.clone(), lead.clone()]).await;

    // 80 % of the 10 h approval time is 8 h: nothing at 7 h, one reminder after 8 h, only one.
    let thread = || {
        bot.fake_slack()
            .thread(RELEASES_CHANNEL, &card.ts)
            .into_iter()
            .map(|m| m.text)
            .collect::<Vec<_>>()
    };
    bot.clock.advance(std::time::Duration::from_secs(7 * 3600));
    bot.clock.advance(std::time::Duration::from_secs(3600 + 60));
    let reminded = wait_until(std::time::Duration::from_secs(20), || {
        let hit = thread().iter().any(|t| t.contains("reminder"));
        async move { hit }
    })
    .await;
    assert!(reminded, "a reminder in the thread: {:?}", thread());
    let reminders: Vec<String> = thread()
        .into_iter()
        .filter(|t| t.contains("reminder"))
        .collect();
    assert_eq!(reminders.len(), 1, "{reminders:?}");
    assert!(
        reminders[0].contains(&format!("<!subteam^{SLACK_LEADS_GROUP}>"))
            && reminders[0].contains("needs 2 more approvals (0/2)"),
        "{reminders:?}"
    );
    bot.clock.advance(std::time::Duration::from_secs(3600));
    wait_for_actors(&bot, id, "reminded", &["shipmate:bot".to_string()]).await;
    assert_eq!(
        thread().iter().filter(|t| t.contains("reminder")).count(),
        1,
        "reminded once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discord_card_pings_the_lead_role_and_ticks_with_buttons() {
    use support::discord::{button_ids, card_in_state, click};
    let bot = TestBot::builder()
        .discord()
        .config(&shop(&support::fake_discord::CHANNEL_ID.to_string()))
        .start()
        .await
        .expect("sqlite");
    let id = bot.promote_id("shop", "1.0.0", None).await;
    let card = card_in_state(&bot, id, "awaiting_approval").await;
    assert!(
        card.content.contains(&format!("<@&{DISCORD_LEADS_ROLE}>"))
            && card.content.contains(&format!("<@{DISCORD_LEAD}>")),
        "the message pings the lead role and the leads: {}",
        card.content
    );
    let ids = button_ids(&card);
    let first = format!("shipmate:check:{id}:1");
    assert!(ids.contains(&first), "{ids:?}");
    click(&bot, DISCORD_LEAD, &[], &card, &first).await;
    let lead = format!("discord:{DISCORD_LEAD}");
    wait_for_actors(&bot, id, "checklist_ticked", std::slice::from_ref(&lead)).await;
    // Someone who is neither the requester nor a lead may not tick.
    click(
        &bot,
        DISCORD_STRANGER,
        &[],
        &card,
        &format!("shipmate:check:{id}:2"),
    )
    .await;
    click(
        &bot,
        DISCORD_LEAD,
        &[],
        &card,
        &format!("shipmate:check:{id}:2"),
    )
    .await;
    wait_for_actors(&bot, id, "checklist_ticked", &[lead.clone(), lead]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_promotion_page_shows_the_checklist_with_who_ticked_it() {
    let config = format!("{}\n[web]\naccess = \"open\"\n", shop("1"));
    let bot = TestBot::with_config(&config).await;
    let id = bot.promote_id("shop", "1.0.0", None).await;
    assert_eq!(tick(&bot, id, "2", CI_TOKEN).await.0, 200);
    let page = reqwest::get(format!("{}/ui/promotions/{id}", bot.base))
        .await
        .expect("page");
    assert_eq!(page.status().as_u16(), 200);
    let body = page.text().await.expect("body");
    assert!(
        body.contains("<h2 id=\"checklist\">Checklist</h2>")
            && body.contains("1. Changelog reviewed</th><td><span class=\"muted\">☐ not yet")
            && body.contains("2. Migrations are backward compatible</th><td>☑ api:ci"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_names_the_check_that_failed_and_what_it_saw() {
    let bot = TestBot::with_config(
        r#"
[[service]]
name = "checked"
  [[service.environment]]
  name = "staging"
  backend = { kind = "command", run = ["./deploy.sh"], timeout = "30s" }
  verify = [{ kind = "command", run = ["sh", "-c", "echo 'smoke: 3 of 5 pages 500'; exit 1"] }]
"#,
    )
    .await;
    let id = bot.promote_id("checked", "1.0.0", None).await;
    bot.wait_for_state(id, "failed").await;
    let failed = why(&bot, id).await;
    assert_eq!(
        blocker_kinds(&failed),
        ["check_failed", "ended"],
        "{failed:#}"
    );
    let check = &failed["blockers"][0];
    assert!(
        check["problem"]
            .as_str()
            .is_some_and(|p| p.starts_with("the check command check 1 failed:")
                && p.contains("3 of 5 pages 500")),
        "{failed:#}"
    );
    assert!(
        failed["blockers"][1]["unblock"]
            .as_str()
            .is_some_and(|u| u.contains("/release retry")),
        "{failed:#}"
    );
}

/// Runs git in `repo` as a fixed author, failing the test when git does.
fn git(repo: &std::path::Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=Dev", "-c", "user.email=dev@example.com"])
        .args(args)
        .status()
        .expect("run git");
    assert!(status.success(), "git {args:?}");
}

fn commit(repo: &std::path::Path, message: &str) {
    git(repo, &["commit", "--allow-empty", "-q", "-m", message]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_come_from_git_tags_grouped_on_the_card_and_all_on_the_page() {
    let config = format!(
        r#"
[web]
access = "open"

[[service]]
name = "lib"
channels = {{ slack = "{RELEASES_CHANNEL}" }}
git = {{ path = "repo", tag = "v{{version}}" }}
  [[service.environment]]
  name = "production"
  backend = {{ kind = "command", run = ["./deploy.sh"], timeout = "30s" }}
"#
    );
    let bot = TestBot::builder()
        .slack()
        .config(&config)
        .start()
        .await
        .expect("sqlite");
    let repo = bot.path("repo");
    std::fs::create_dir_all(&repo).expect("repo dir");
    git(&repo, &["init", "-q"]);
    commit(&repo, "feat: first feature");
    git(&repo, &["tag", "v1.0.0"]);
    for n in 1..=12 {
        commit(&repo, &format!("fix: bug {n}"));
    }
    commit(&repo, "chore: bump deps");
    commit(&repo, "feat!: drop the v1 API");
    commit(
        &repo,
        "feat: new tokens\n\nThey rotate daily.\n\nBREAKING CHANGE: old tokens stop working",
    );
    commit(&repo, "feat: search by tag");
    git(&repo, &["tag", "v1.1.0"]);

    // The first release the bot knows of reads back to the start of history.
    let (status, first) = create(&bot, json!({"service": "lib", "version": "1.0.0"})).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["changes"], json!(["feat: first feature"]));
    let (status, second) = create(&bot, json!({"service": "lib", "version": "1.1.0"})).await;
    assert_eq!(status, 201, "{second}");
    let changes: Vec<&str> = second["changes"]
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(changes.len(), 16, "v1.0.0..v1.1.0: {changes:?}");
    assert_eq!(changes[0], "feat: search by tag", "newest first");
    assert_eq!(
        changes[1],
        "feat: new tokens (BREAKING CHANGE: old tokens stop working)"
    );
    // Changes given with the release win over git's; an update answers 200.
    let digest_update = json!({"service": "lib", "version": "1.1.0", "digest": digest('c')});
    let (status, updated) = create(&bot, digest_update).await;
    assert_eq!(status, 200, "an update is not a creation: {updated}");
    assert_eq!(updated["changes"].as_array().map(Vec::len), Some(16));

    let old = bot.promote_id("lib", "1.0.0", None).await;
    bot.wait_for_state(old, "succeeded").await;
    let id = bot.promote_id("lib", "1.1.0", None).await;
    let card = bot.card_in_state(RELEASES_CHANNEL, id, "succeeded").await;
    let blocks = card.blocks.to_string();
    for shown in [
        "*Release*\\nminor",
        "*Digest*\\n`sha256:ccccccc`",
        "*Changes*\\n*Breaking*\\n• feat: new tokens (BREAKING CHANGE: old tokens stop working)\\n• feat!: drop the v1 API\\n*Features*\\n• feat: search by tag\\n*Fixes*\\n• fix: bug 12",
        "and 6 more",
    ] {
        assert!(blocks.contains(shown), "`{shown}` on the card: {blocks}");
    }
    assert!(
        !blocks.contains("fix: bug 5"),
        "only ten on the card: {blocks}"
    );

    let page = reqwest::get(format!("{}/ui/promotions/{id}", bot.base))
        .await
        .expect("page")
        .text()
        .await
        .expect("body");
    assert!(
        page.contains("lib 1.1.0 (minor)")
            && page.contains("<h3>Other</h3>\n<ul><li>chore: bump deps</li></ul>")
            && (1..=12).all(|n| page.contains(&format!("<li>fix: bug {n}</li>"))),
        "the page lists every change: {page}"
    );

    // A version without its tag is released all the same, and the card says what to do.
    let (status, untagged) = create(&bot, json!({"service": "lib", "version": "1.2.0"})).await;
    assert_eq!(status, 201, "{untagged}");
    assert_eq!(untagged["changes"], json!([]));
    let note = untagged["changes_note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("no tag `v1.2.0` in ") && note.contains("push the tag"),
        "{note}"
    );
    let id = bot.promote_id("lib", "1.2.0", None).await;
    let card = bot.card_in_state(RELEASES_CHANNEL, id, "succeeded").await;
    let blocks = card.blocks.to_string();
    assert!(
        blocks.contains("*Changes*\\n_no tag `v1.2.0` in "),
        "{blocks}"
    );
}

fn version(text: &str) -> shipmate::domain::version::Version {
    text.parse().expect("version")
}

#[tokio::test]
async fn without_a_known_previous_release_the_nearest_older_tag_bounds_the_changes() {
    use shipmate::config::GitSource;
    use shipmate::git::read_changes;
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = dir.path();
    git(repo, &["init", "-q"]);
    for (message, tag) in [
        ("feat: old", Some("release-0.9.0")),
        ("fix: unrelated tag", Some("nightly")),
        ("fix: new", None),
        ("feat: newer", Some("release-1.0.0")),
    ] {
        commit(repo, message);
        if let Some(tag) = tag {
            git(repo, &["tag", tag]);
        }
    }
    let source = GitSource {
        path: repo.to_path_buf(),
        tag: "release-{version}".to_string(),
    };
    let read = read_changes(&source, None, &version("1.0.0")).await;
    assert_eq!(
        read.changes,
        ["feat: newer", "fix: new", "fix: unrelated tag"],
        "{read:?}"
    );
    // A previous release whose tag is missing falls back the same way.
    let read = read_changes(&source, Some(&version("0.9.5")), &version("1.0.0")).await;
    assert_eq!(read.changes.len(), 3, "{read:?}");
    let first = read_changes(&source, None, &version("0.9.0")).await;
    assert_eq!(first.changes, ["feat: old"], "{first:?}");

    // A directory that is no repository is a note, not a failure.
    let missing = GitSource {
        path: dir.path().join("missing"),
        tag: "v{version}".to_string(),
    };
    let read = read_changes(&missing, None, &version("1.0.0")).await;
    assert!(read.changes.is_empty());
    let note = read.note.unwrap_or_default();
    assert!(note.starts_with("git could not read "), "{note}");
}
