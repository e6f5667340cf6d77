//! Scenarios through the HTTP API against the real bot: real command backends in a temp dir,
//! a temp database and a manual clock.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

fn id(body: &Value) -> i64 {
    body["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no id in {body:#}"))
}

fn error_message(body: &Value) -> &str {
    body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body:#}"))
}

#[tokio::test]
async fn a_release_goes_dev_staging_production_with_two_approvals() {
    let bot = TestBot::start().await;
    let (status, release) = bot
        .post("/api/v1/releases", CI_TOKEN, json!({"service": "api", "version": "v1.4.2", "commit": "abc1234", "notes": "faster search"}))
        .await;
    assert_eq!(status, 201, "{release}");
    assert_eq!(release["version"], "1.4.2");

    bot.reach("api", "1.4.2", &["dev", "staging"]).await;
    let (status, promotion) = bot.promote(CI_TOKEN, "api", "1.4.2", None).await;
    assert_eq!(status, 202, "{promotion}");
    assert_eq!(
        promotion["environment"], "production",
        "next environment is chosen"
    );
    assert_eq!(promotion["state"], "awaiting_approval");
    assert_eq!(promotion["required_approvals"], 2);
    let prod = id(&promotion);

    let (status, body) = bot.act(prod, "approve", LEAD_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "awaiting_approval");
    assert_eq!(body["approvals"][0]["by"], "api:lead");
    // A double click counts once.
    let (status, body) = bot.act(prod, "approve", LEAD_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["approvals"].as_array().map(Vec::len), Some(1));

    let (status, body) = bot.act(prod, "approve", LEAD2_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "approved");

    let done = bot.wait_for_state(prod, "succeeded").await;
    assert_eq!(done["commit"], "abc1234");
    let kinds: Vec<&str> = done["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "requested",
            "approval",
            "approval",
            "approved",
            "deploying",
            "succeeded"
        ]
    );

    let recorded =
        std::fs::read_to_string(bot.path(&format!("deployed-{prod}.env"))).expect("script ran");
    for expected in [
        "SHIPMATE_SERVICE=api",
        "SHIPMATE_VERSION=1.4.2",
        "SHIPMATE_ENVIRONMENT=production",
        "SHIPMATE_PREVIOUS_VERSION=",
        "SHIPMATE_ROLLBACK=false",
        "SHIPMATE_COMMIT=abc1234",
        "SHIPMATE_REQUESTED_BY=api:ci",
        &format!("SHIPMATE_PROMOTION_ID={prod}"),
    ] {
        assert!(
            recorded.lines().any(|l| l == expected),
            "{expected} missing in:\n{recorded}"
        );
    }

    let (status, log) = bot
        .get(&format!("/api/v1/promotions/{prod}/log"), CI_TOKEN)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        log["lines"],
        json!(["deploying api 1.4.2 to production", "step 2", "done"])
    );

    let (_, services) = bot.get("/api/v1/services", CI_TOKEN).await;
    let api = &services[0];
    assert_eq!(api["service"], "api");
    let versions: Vec<&Value> = api["environments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["version"])
        .collect();
    assert_eq!(
        versions,
        [&json!("1.4.2"), &json!("1.4.2"), &json!("1.4.2")]
    );
}

#[tokio::test]
async fn policy_refusals_explain_themselves_and_change_nothing() {
    let bot = TestBot::start().await;
    bot.reach("api", "1.4.2", &["dev"]).await;

    let cases = [
        (json!({"service": "api", "version": "1.4"}), 400, "`1.4` is not a version: write MAJOR.MINOR.PATCH"),
        (json!({"service": "apu", "version": "1.4.2"}), 404, "unknown service `apu`; known services: api, web"),
        (json!({"service": "api", "version": "1.4.2", "environment": "prod"}), 404, "its pipeline is dev → staging → production"),
        (json!({"service": "api", "version": "1.4.2", "environment": "production"}), 422, "it has not succeeded in staging. Promote it there first: /release promote api 1.4.2 to staging"),
        (json!({"service": "api", "version": "1.4.1", "environment": "dev"}), 422, "dev already runs api 1.4.2; a promotion must move to a newer version than that. To go back, use /release rollback api dev"),
        (json!({"service": "api", "version": "1.4.2", "environment": "dev"}), 422, "dev already runs api 1.4.2"),
        (json!({"service": "api", "version": "1.5.0", "force_reason": "hotfix"}), 403, "only `admins` may use --force"),
    ];
    for (body, status, message) in cases {
        let (got, reply) = bot.post("/api/v1/promotions", CI_TOKEN, body.clone()).await;
        assert_eq!(got, status, "{body} → {reply}");
        assert!(error_message(&reply).contains(message), "{body} → {reply}");
    }
    let (_, history) = bot.get("/api/v1/services/api/history", CI_TOKEN).await;
    assert_eq!(
        history.as_array().map(Vec::len),
        Some(1),
        "only the dev promotion exists: {history:#}"
    );
}

#[tokio::test]
async fn approvals_follow_the_policy() {
    let bot = TestBot::start().await;
    bot.reach("api", "2.0.0", &["dev", "staging"]).await;
    // A lead requests: the lead may not approve their own promotion.
    let (_, promotion) = bot
        .promote(LEAD_TOKEN, "api", "2.0.0", Some("production"))
        .await;
    let prod = id(&promotion);
    let approve = |token| bot.act(prod, "approve", token);
    let (status, body) = approve(LEAD_TOKEN).await;
    assert_eq!(status, 422, "{body}");
    assert!(error_message(&body)
        .contains("you requested this promotion, so you can't approve it yourself"));
    let (status, body) = approve(CI_TOKEN).await;
    assert_eq!(status, 403, "{body}");
    assert!(error_message(&body).contains("only members of `leads` may approve"));
    assert_eq!(
        bot.promotion(prod).await["approvals"],
        json!([]),
        "refusals change nothing"
    );

    let (status, body) = bot
        .post(
            &format!("/api/v1/promotions/{prod}/reject"),
            LEAD2_TOKEN,
            json!({"reason": "not during the sale"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "rejected");
    assert_eq!(body["reason"], "rejected by api:lead2: not during the sale");
    let (status, body) = approve(ADMIN_TOKEN).await;
    assert_eq!(status, 409, "{body}");
    assert!(error_message(&body)
        .contains("it is rejected and can't be approved now (only while awaiting approval)"));
}

#[tokio::test]
async fn approval_requests_expire_on_the_manual_clock() {
    let bot = TestBot::start().await;
    bot.reach("api", "1.0.0", &["dev", "staging"]).await;
    let (_, promotion) = bot.promote(CI_TOKEN, "api", "1.0.0", None).await;
    let prod = id(&promotion);
    bot.clock.advance(Duration::from_secs(24 * 3600 - 60));
    let (status, body) = bot.act(prod, "approve", LEAD_TOKEN).await;
    assert_eq!(
        (status, &body["state"]),
        (200, &json!("awaiting_approval")),
        "still open a minute before"
    );

    bot.clock.advance(Duration::from_secs(61));
    let expired = bot.wait_for_state(prod, "expired").await;
    assert!(expired["reason"]
        .as_str()
        .unwrap()
        .contains("approval deadline"));
    let (status, _) = bot.promote(CI_TOKEN, "api", "1.0.0", None).await;
    assert_eq!(status, 202, "the environment is free again");
}

#[tokio::test]
async fn a_second_request_for_a_busy_environment_names_the_active_one() {
    let bot = TestBot::builder()
        .script(GATED_SCRIPT)
        .start()
        .await
        .unwrap();
    let (_, first) = bot.promote(CI_TOKEN, "web", "1.0.0", None).await;
    let first = id(&first);
    bot.wait_for_state(first, "deploying").await;
    bot.clock.advance(Duration::from_secs(180));
    let (status, body) = bot.promote(CI_TOKEN, "web", "1.0.1", None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        error_message(&body),
        format!("web staging already has a promotion in progress: #{first} web 1.0.0 → staging, deploying, by api:ci, 3m ago. Wait for it to finish or cancel it with /release cancel {first}")
    );
    std::fs::write(bot.path(&format!("release-{first}")), "").unwrap();
    bot.wait_for_state(first, "succeeded").await;
}

async fn twenty_concurrent_requests_start_one_deploy(db: Db) {
    let Some(bot) = TestBot::builder().db(db).script(GATED_SCRIPT).start().await else {
        return;
    };
    let requests = (0..20).map(|_| bot.promote(CI_TOKEN, "web", "3.0.0", None));
    let answers = futures::future::join_all(requests).await;
    let accepted: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == 202)
        .map(|(_, b)| b)
        .collect();
    let conflicts = answers.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!(accepted.len(), 1, "{db:?}: {answers:#?}");
    assert_eq!(conflicts, 19, "{db:?}: {answers:#?}");
    let winner = id(accepted[0]);
    bot.wait_for_state(winner, "deploying").await;
    std::fs::write(bot.path(&format!("release-{winner}")), "").unwrap();
    bot.wait_for_state(winner, "succeeded").await;
    let (_, history) = bot.get("/api/v1/services/web/history", CI_TOKEN).await;
    assert_eq!(
        history.as_array().map(Vec::len),
        Some(1),
        "{db:?}: one promotion, one deploy"
    );
}

#[tokio::test]
async fn twenty_concurrent_requests_start_one_deploy_on_sqlite() {
    twenty_concurrent_requests_start_one_deploy(Db::Sqlite).await;
}

#[tokio::test]
async fn twenty_concurrent_requests_start_one_deploy_on_postgres() {
    twenty_concurrent_requests_start_one_deploy(Db::Postgres).await;
}

#[tokio::test]
async fn a_failed_deploy_says_why_and_can_be_retried() {
    let bot = TestBot::builder()
        .script(UNLUCKY_SCRIPT)
        .start()
        .await
        .unwrap();
    let (_, promotion) = bot.promote(CI_TOKEN, "web", "1.0.13", None).await;
    let failed = id(&promotion);
    let body = bot.wait_for_state(failed, "failed").await;
    assert_eq!(
        body["reason"],
        "exit code 3: deploying 1.0.13\nmigration 42 failed: table locked"
    );

    let (status, retry) = bot.act(failed, "retry", CI_TOKEN).await;
    assert_eq!(status, 202, "{retry}");
    assert_eq!(retry["retry_of"], failed);
    assert_ne!(id(&retry), failed, "a retry is a new promotion");
    bot.wait_for_state(id(&retry), "failed").await;

    let (status, body) = bot.say(CI_TOKEN, "promote web 1.0.14").await;
    assert_eq!(status, 200, "{body}");
    let (_, history) = bot
        .get("/api/v1/services/web/history?limit=1", CI_TOKEN)
        .await;
    let latest = id(&history[0]);
    bot.wait_for_state(latest, "succeeded").await;
    let (status, body) = bot.act(latest, "retry", CI_TOKEN).await;
    assert_eq!(status, 409, "{body}");
    assert!(error_message(&body).contains("only failed or interrupted promotions can be retried"));
}

#[tokio::test]
async fn a_rollback_deploys_the_previous_version_and_marks_the_replaced_one() {
    let bot = TestBot::start().await;
    bot.reach("web", "1.0.0", &["staging"]).await;
    bot.reach("web", "1.1.0", &["staging"]).await;
    let (_, history) = bot
        .get("/api/v1/services/web/history?environment=staging", CI_TOKEN)
        .await;
    let replaced = id(&history[0]);

    let (status, rollback) = bot
        .post(
            "/api/v1/rollbacks",
            CI_TOKEN,
            json!({"service": "web", "environment": "staging"}),
        )
        .await;
    assert_eq!(status, 202, "{rollback}");
    assert_eq!(
        (&rollback["version"], &rollback["rollback"]),
        (&json!("1.0.0"), &json!(true))
    );
    assert_eq!(rollback["previous_version"], "1.1.0");
    bot.wait_for_state(id(&rollback), "succeeded").await;
    assert_eq!(bot.promotion(replaced).await["state"], "rolled_back");
    let recorded =
        std::fs::read_to_string(bot.path(&format!("deployed-{}.env", id(&rollback)))).unwrap();
    assert!(
        recorded.contains("SHIPMATE_ROLLBACK=true")
            && recorded.contains("SHIPMATE_PREVIOUS_VERSION=1.1.0"),
        "{recorded}"
    );

    let (_, services) = bot.get("/api/v1/services", CI_TOKEN).await;
    assert_eq!(services[1]["environments"][0]["version"], "1.0.0");
    let (status, body) = bot
        .post(
            "/api/v1/rollbacks",
            CI_TOKEN,
            json!({"service": "web", "environment": "staging"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        error_message(&body),
        "web has no earlier version in staging to roll back to"
    );
    let (status, body) = bot
        .post(
            "/api/v1/rollbacks",
            CI_TOKEN,
            json!({"service": "web", "environment": "production"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(error_message(&body).contains("never been deployed to production"));
}

#[tokio::test]
async fn cancel_works_while_waiting_and_not_during_a_deploy() {
    let bot = TestBot::start().await;
    bot.reach("api", "1.0.0", &["dev", "staging"]).await;
    let (_, promotion) = bot.promote(CI_TOKEN, "api", "1.0.0", None).await;
    let prod = id(&promotion);
    let (status, body) = bot.act(prod, "cancel", OUTSIDER_TOKEN).await;
    assert_eq!(status, 403, "{body}");
    assert!(error_message(&body)
        .contains("you need the `deployers` role to cancel someone else's promotion"));
    let (status, body) = bot.act(prod, "cancel", CI_TOKEN).await;
    assert_eq!(
        (status, &body["state"]),
        (200, &json!("cancelled")),
        "{body}"
    );

    let gated = TestBot::builder()
        .script(GATED_SCRIPT)
        .start()
        .await
        .unwrap();
    let (_, promotion) = gated.promote(CI_TOKEN, "web", "1.0.0", None).await;
    let deploying = id(&promotion);
    gated.wait_for_state(deploying, "deploying").await;
    let (status, body) = gated.act(deploying, "cancel", CI_TOKEN).await;
    assert_eq!(status, 409, "{body}");
    assert!(error_message(&body).contains("it is deploying and can't be cancelled now (only while awaiting approval, approved or queued)"));
    std::fs::write(gated.path(&format!("release-{deploying}")), "").unwrap();
    gated.wait_for_state(deploying, "succeeded").await;
}

#[tokio::test]
async fn latest_is_a_release_train() {
    let bot = TestBot::start().await;
    for version in ["1.0.0", "1.2.0", "1.1.0"] {
        let (status, _) = bot
            .post(
                "/api/v1/releases",
                CI_TOKEN,
                json!({"service": "api", "version": version}),
            )
            .await;
        assert_eq!(status, 201);
    }
    let (_, dev) = bot.promote(CI_TOKEN, "api", "latest", Some("dev")).await;
    assert_eq!(
        dev["version"], "1.1.0",
        "first environment: the newest release created"
    );
    bot.wait_for_state(id(&dev), "succeeded").await;
    bot.reach("api", "1.2.0", &["dev"]).await;
    let (_, staging) = bot
        .promote(CI_TOKEN, "api", "latest", Some("staging"))
        .await;
    assert_eq!(
        staging["version"], "1.2.0",
        "later: the newest that succeeded before"
    );
    bot.wait_for_state(id(&staging), "succeeded").await;
    let (status, body) = bot
        .promote(CI_TOKEN, "api", "latest", Some("staging"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(error_message(&body), "nothing newer to promote to staging: it runs api 1.2.0 and dev has nothing newer that succeeded");
}

#[tokio::test]
async fn the_commands_endpoint_speaks_the_chat_grammar() {
    let bot = TestBot::start().await;
    let (status, body) = bot.say(CI_TOKEN, "promote web v2.0.0").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["reply"]
            .as_str()
            .unwrap()
            .starts_with("requested: #1 web 2.0.0 → staging"),
        "{body}"
    );
    bot.wait_for_state(1, "succeeded").await;
    let (_, body) = bot.say(CI_TOKEN, "/release status web").await;
    assert_eq!(
        body["reply"],
        "web:\n  staging: 2.0.0\n  production: nothing deployed"
    );
    let (status, body) = bot.say(CI_TOKEN, "promote web").await;
    assert_eq!(status, 400);
    assert!(
        error_message(&body).contains("Usage: /release promote <service> <version>"),
        "{body}"
    );
    let (status, body) = bot.say(CI_TOKEN, "help").await;
    assert_eq!(status, 200);
    assert!(
        body["reply"]
            .as_str()
            .unwrap()
            .contains("/release rollback"),
        "{body}"
    );
    let (status, body) = bot.say(CI_TOKEN, "history web last 5").await;
    assert_eq!(status, 200);
    assert!(
        body["reply"]
            .as_str()
            .unwrap()
            .starts_with("#1 web 2.0.0 → staging succeeded by api:ci"),
        "{body}"
    );
}

#[tokio::test]
async fn the_api_rejects_bad_requests_before_they_reach_the_engine() {
    let bot = TestBot::start().await;
    let promote = json!({"service": "web", "version": "1.0.0"});
    let (status, body) = bot
        .request(
            reqwest::Method::POST,
            "/api/v1/promotions",
            None,
            Some(promote.clone()),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = bot
        .post("/api/v1/promotions", "not-a-token", promote.clone())
        .await;
    assert_eq!(status, 401);

    let (status, body) = bot
        .post(
            "/api/v1/promotions",
            CI_TOKEN,
            json!({"service": "web", "version": 5}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        error_message(&body).contains("version: invalid type"),
        "names the field: {body}"
    );
    let (status, body) = bot
        .post("/api/v1/promotions", CI_TOKEN, json!({"service": "web"}))
        .await;
    assert_eq!(status, 400);
    assert!(
        error_message(&body).contains("missing field `version`"),
        "{body}"
    );
    let (status, body) = bot
        .post(
            "/api/v1/promotions",
            CI_TOKEN,
            json!({"service": "web", "version": "1.0.0", "env": "x"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        error_message(&body).contains("unknown field `env`"),
        "{body}"
    );

    let huge = json!({"text": "x".repeat(1 << 20)});
    let (status, body) = bot.post("/api/v1/commands", CI_TOKEN, huge).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    let (status, body) = bot.get("/api/v1/promotions/abc", CI_TOKEN).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = bot.get("/api/v1/promotions/999", CI_TOKEN).await;
    assert_eq!(status, 404, "{body}");
    assert!(error_message(&body).contains("there is no promotion #999"));

    let (_, history) = bot.get("/api/v1/services/web/history", CI_TOKEN).await;
    assert_eq!(history, json!([]), "nothing changed");
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let bot = TestBot::start().await;
    let (status, _) = bot
        .request(reqwest::Method::GET, "/healthz", None, None)
        .await;
    assert_eq!(status, 200);
    let (status, body) = bot
        .request(reqwest::Method::GET, "/readyz", None, None)
        .await;
    assert_eq!((status, &body["status"]), (200, &json!("ready")));

    bot.reach("web", "1.0.0", &["staging"]).await;
    let (_, waiting) = bot.promote(CI_TOKEN, "api", "1.0.0", Some("dev")).await;
    bot.wait_for_state(id(&waiting), "succeeded").await;
    let (_, metrics) = bot
        .request(reqwest::Method::GET, "/metrics", None, None)
        .await;
    let metrics = metrics.as_str().expect("text");
    for expected in [
        r#"shipmate_releases_created_total{service="web"} 1"#,
        r#"shipmate_deploys_started_total{service="web",environment="staging"} 1"#,
        r#"shipmate_promotions_total{service="web",environment="staging",state="succeeded"} 1"#,
        r#"shipmate_deploy_duration_seconds_count{service="web",environment="staging",outcome="succeeded"} 1"#,
        r#"shipmate_promotion_lead_seconds_count{service="web",environment="staging"} 1"#,
        r#"shipmate_http_requests_total{route="/api/v1/promotions/{id}",status="200"}"#,
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing in\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("route=\"/api/v1/promotions/1\""),
        "raw paths never become labels"
    );
}

/// The rollout controls of SPEC §5.2, as routes.
const CONTROLS: [&str; 4] = ["pause", "resume", "advance", "abort"];

/// The router's own answer to a path it has no route for (as opposed to any engine answer).
fn is_route_fallback(status: u16, body: &Value) -> bool {
    status == 404
        && body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("no such API route"))
}

/// A refusal from the engine: nothing is rolling out, so there is nothing to control. (What a
/// control does to a running rollout is the controls use case's to test.)
fn assert_refused_by_the_engine(what: &str, status: u16, body: &Value) {
    assert!(!is_route_fallback(status, body), "{what}: no route: {body}");
    assert!(
        matches!(status, 409 | 422),
        "{what}: expected a conflict or refusal, got {status}: {body}"
    );
    assert!(!error_message(body).trim().is_empty(), "{what}: {body}");
}

/// api 1.0.0 awaiting approval for production: a promotion that exists but is not rolling out.
async fn awaiting_production(bot: &TestBot) -> i64 {
    bot.reach("api", "1.0.0", &["dev", "staging"]).await;
    let (status, promotion) = bot.promote(CI_TOKEN, "api", "1.0.0", None).await;
    assert_eq!(
        (status, &promotion["state"]),
        (202, &json!("awaiting_approval")),
        "{promotion}"
    );
    id(&promotion)
}

#[tokio::test]
async fn rollout_control_routes_need_a_token_and_an_id_and_reach_the_engine() {
    let bot = TestBot::start().await;
    let prod = awaiting_production(&bot).await;
    let (status, body) = bot.act(prod, "launch", CI_TOKEN).await;
    assert!(is_route_fallback(status, &body), "{status}: {body}");

    for action in CONTROLS {
        let path = format!("/api/v1/promotions/{prod}/{action}");
        let (status, body) = bot
            .request(reqwest::Method::POST, &path, None, Some(json!({})))
            .await;
        assert_eq!(status, 401, "{action}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{action}: {body}");
        let (status, _) = bot.post(&path, "not-a-token", json!({})).await;
        assert_eq!(status, 401, "{action}");

        for bad in ["abc", "0", "-3", "4.2"] {
            let bad_path = format!("/api/v1/promotions/{bad}/{action}");
            let (status, body) = bot.post(&bad_path, CI_TOKEN, json!({})).await;
            assert_eq!(status, 400, "{bad_path}: {body}");
            assert!(
                error_message(&body).contains(&format!("`{bad}` is not a promotion id")),
                "{bad_path}: {body}"
            );
        }
        let (status, body) = bot.get(&path, CI_TOKEN).await;
        assert_eq!(status, 405, "{action} is a POST: {body}");

        let (status, body) = bot.act(prod, action, CI_TOKEN).await;
        assert_refused_by_the_engine(action, status, &body);
        // Like cancel and retry, the body may be left out.
        let (status, body) = bot
            .request(reqwest::Method::POST, &path, Some(CI_TOKEN), None)
            .await;
        assert_refused_by_the_engine(&format!("{action} without a body"), status, &body);
    }
    assert_eq!(
        bot.promotion(prod).await["state"],
        "awaiting_approval",
        "nothing changed"
    );

    let (_, metrics) = bot
        .request(reqwest::Method::GET, "/metrics", None, None)
        .await;
    let metrics = metrics.as_str().expect("text");
    for action in CONTROLS {
        for status in [400, 401] {
            let expected = format!(
                r#"shipmate_http_requests_total{{route="/api/v1/promotions/{{id}}/{action}",status="{status}"}}"#
            );
            assert!(
                metrics.contains(&expected),
                "{expected} missing in\n{metrics}"
            );
        }
        assert!(
            !metrics.contains(&format!("/{prod}/{action}\"")) && !metrics.contains("/abc/"),
            "raw paths never become labels"
        );
    }
}

#[tokio::test]
async fn abort_takes_an_optional_reason_and_refuses_a_malformed_body() {
    let bot = TestBot::start().await;
    let prod = awaiting_production(&bot).await;
    let path = format!("/api/v1/promotions/{prod}/abort");

    let (status, body) = bot
        .post(&path, CI_TOKEN, json!({"reason": "error rate doubled"}))
        .await;
    assert_refused_by_the_engine("abort with a reason", status, &body);

    let (status, body) = bot.post(&path, CI_TOKEN, json!({"reason": 5})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        error_message(&body).contains("reason: invalid type"),
        "names the field: {body}"
    );
    let (status, body) = bot.post(&path, CI_TOKEN, json!({"why": "broken"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        error_message(&body).contains("unknown field `why`"),
        "{body}"
    );
    let (status, body) = bot.post(&path, CI_TOKEN, json!("broken")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
    assert_eq!(bot.promotion(prod).await["state"], "awaiting_approval");
}

#[tokio::test]
async fn the_commands_endpoint_speaks_the_rollout_controls() {
    let bot = TestBot::start().await;
    let prod = awaiting_production(&bot).await;
    for text in [
        format!("pause #{prod}"),
        format!("resume {prod}"),
        format!("/release advance #{prod}"),
        format!("abort #{prod} error rate doubled on the canary"),
    ] {
        let (status, body) = bot.say(CI_TOKEN, &text).await;
        assert_refused_by_the_engine(&text, status, &body);
    }
    for (text, expected) in [
        ("pause", "Usage: /release pause <#id>"),
        ("resume #1 now", "unexpected `now`"),
        ("advance forty-two", "`forty-two` is not a promotion id"),
        ("abort", "missing <#id>: which promotion should be aborted?"),
    ] {
        let (status, body) = bot.say(CI_TOKEN, text).await;
        assert_eq!(status, 400, "{text}: {body}");
        assert!(error_message(&body).contains(expected), "{text}: {body}");
    }
    let (_, body) = bot.say(CI_TOKEN, "help").await;
    let help = body["reply"].as_str().unwrap_or_default();
    for usage in [
        "/release pause <#id>",
        "/release resume <#id>",
        "/release advance <#id>",
        "/release abort <#id> [reason...]",
    ] {
        assert!(help.contains(usage), "{usage} missing in {help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// SPEC §8's cluster view on a single replica: its own heartbeat row; no chat platform, so nobody
/// holds the gateway. A token is needed, as for every /api/v1 route.
async fn the_cluster_view_lists_this_replica_from_its_heartbeat() {
    let bot = TestBot::start().await;
    let (status, _) = bot
        .request(reqwest::Method::GET, "/api/v1/cluster", None, None)
        .await;
    assert_eq!(status, 401);
    let listed = wait_until(Duration::from_secs(10), || async {
        let (_, view) = bot.get("/api/v1/cluster", CI_TOKEN).await;
        view["replicas"].as_array().is_some_and(|r| r.len() == 1)
    })
    .await;
    assert!(listed, "the replica's heartbeat row did not show");
    let (status, view) = bot.get("/api/v1/cluster", CI_TOKEN).await;
    assert_eq!(status, 200);
    let replica = &view["replicas"][0];
    assert_eq!(replica["id"], view["this_replica"]);
    assert_eq!(replica["pid"], json!(std::process::id()));
    assert_eq!(replica["holds_gateway"], json!(false));
    assert_eq!(view["gateway_holder"], Value::Null);
    assert!(replica["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(replica["last_seen"].as_str().is_some());
}

/// The routes the README's HTTP API section lists, as (method, path) without query strings.
fn readme_routes() -> std::collections::BTreeSet<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    readme
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let method = words.next()?;
            let path = words.next()?;
            (matches!(method, "GET" | "POST") && path.starts_with("/api/v1/")).then(|| {
                let path = path.split('?').next().unwrap_or(path);
                (method.to_lowercase(), path.to_string())
            })
        })
        .collect()
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_each_one_exists() {
    let bot = TestBot::start().await;
    let response = reqwest::get(format!("{}/api/v1/openapi.json", bot.base))
        .await
        .expect("openapi.json");
    assert_eq!(response.status().as_u16(), 200, "no token is needed");
    let doc: Value = response.json().await.expect("JSON");
    let mut described = std::collections::BTreeSet::new();
    let paths = doc["paths"].as_object().expect("paths");
    for probe in ["/healthz", "/readyz", "/metrics"] {
        assert!(paths.contains_key(probe), "{probe} is described too");
    }
    for (path, item) in paths
        .iter()
        .filter(|(path, _)| path.starts_with("/api/v1/"))
    {
        for method in item.as_object().expect("path item").keys() {
            described.insert((method.clone(), path.clone()));
        }
    }
    assert_eq!(
        described,
        readme_routes(),
        "the README's route list and the OpenAPI document differ"
    );
    let client = reqwest::Client::new();
    for (method, path) in &described {
        if path.ends_with("/openapi.json") {
            continue;
        }
        let url = format!(
            "{}{}",
            bot.base,
            path.replace("{id}", "1")
                .replace("{item}", "1")
                .replace("{name}", "api")
        );
        let request = match method.as_str() {
            "get" => client.get(&url),
            _ => client.post(&url).json(&json!({})),
        };
        let response = request.send().await.expect("request");
        // A described route that the router did not have would answer the API's 404.
        assert_eq!(response.status().as_u16(), 401, "{method} {path}");
        let body: Value = response.json().await.expect("error envelope");
        assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}");
    }
}
