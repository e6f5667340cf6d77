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
    assert_eq!(status, 201, "{updated}");
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
