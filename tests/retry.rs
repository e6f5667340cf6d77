//! A retry passes the same gates as a new promotion (issue 11, defect 1): approvals carry over
//! only while unexpired and never from the person retrying, the count is judged against today's
//! policy, and the pipeline rule is checked again.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// Fails in production while the file `fail-production` exists, succeeds everywhere else.
const PRODUCTION_FAILS_SCRIPT: &str = r#"#!/bin/sh
echo "deploying $SHIPMATE_VERSION to $SHIPMATE_ENVIRONMENT"
if [ "$SHIPMATE_ENVIRONMENT" = production ] && [ -f fail-production ]; then
  echo "health check failed" >&2; exit 1
fi
"#;

fn id(body: &Value) -> i64 {
    body["id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no id in {body:#}"))
}

fn approvers(body: &Value) -> Vec<&str> {
    body["approvals"]
        .as_array()
        .unwrap_or_else(|| panic!("no approvals in {body:#}"))
        .iter()
        .filter_map(|a| a["by"].as_str())
        .collect()
}

async fn bot() -> TestBot {
    TestBot::builder()
        .script(PRODUCTION_FAILS_SCRIPT)
        .start()
        .await
        .expect("sqlite")
}

/// api 1.4.2 approved by both leads, failed in production.
async fn failed_in_production(bot: &TestBot) -> i64 {
    std::fs::write(bot.path("fail-production"), "").expect("arm the failure");
    bot.reach("api", "1.4.2", &["dev", "staging"]).await;
    let (status, promotion) = bot.promote(CI_TOKEN, "api", "1.4.2", None).await;
    assert_eq!(status, 202, "{promotion}");
    let failed = id(&promotion);
    for token in [LEAD_TOKEN, LEAD2_TOKEN] {
        let (status, body) = bot.act(failed, "approve", token).await;
        assert_eq!(status, 200, "{body}");
    }
    bot.wait_for_state(failed, "failed").await;
    std::fs::remove_file(bot.path("fail-production")).expect("disarm the failure");
    failed
}

#[tokio::test]
async fn a_retry_with_fresh_approvals_from_others_starts_at_once() {
    let bot = bot().await;
    let failed = failed_in_production(&bot).await;

    let (status, retry) = bot.act(failed, "retry", CI_TOKEN).await;
    assert_eq!(status, 202, "{retry}");
    assert_eq!(approvers(&retry), ["api:lead", "api:lead2"]);
    bot.wait_for_state(id(&retry), "succeeded").await;
}

#[tokio::test]
async fn a_retry_after_the_approvals_expired_awaits_approval_again() {
    let bot = bot().await;
    let failed = failed_in_production(&bot).await;
    bot.clock.advance(Duration::from_secs(25 * 3600));

    let (status, retry) = bot.act(failed, "retry", CI_TOKEN).await;
    assert_eq!(status, 202, "{retry}");
    assert_eq!(retry["state"], "awaiting_approval", "{retry:#}");
    assert!(approvers(&retry).is_empty(), "{retry:#}");
    let (status, body) = bot.act(id(&retry), "approve", LEAD_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "awaiting_approval", "two approvals needed");
}

#[tokio::test]
async fn an_approver_who_retries_does_not_approve_their_own_retry() {
    let bot = bot().await;
    let failed = failed_in_production(&bot).await;

    let (status, retry) = bot.act(failed, "retry", LEAD_TOKEN).await;
    assert_eq!(status, 202, "{retry}");
    assert_eq!(retry["state"], "awaiting_approval", "{retry:#}");
    assert_eq!(
        approvers(&retry),
        ["api:lead2"],
        "the retrier's vote stays behind"
    );
    let (status, body) = bot.act(id(&retry), "approve", LEAD_TOKEN).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = bot.act(id(&retry), "approve", ADMIN_TOKEN).await;
    assert_eq!(status, 200, "{body}");
    bot.wait_for_state(id(&retry), "succeeded").await;
}

#[tokio::test]
async fn a_retry_is_refused_when_the_version_no_longer_stands_in_the_previous_environment() {
    let bot = bot().await;
    bot.reach("web", "1.0.0", &["staging"]).await;
    std::fs::write(bot.path("fail-production"), "").expect("arm the failure");
    bot.reach("web", "1.1.0", &["staging"]).await;
    let (_, promotion) = bot.promote(CI_TOKEN, "web", "1.1.0", None).await;
    let failed = id(&promotion);
    bot.wait_for_state(failed, "failed").await;
    // Staging goes back to 1.0.0: 1.1.0 no longer stands succeeded there.
    let (status, rollback) = bot
        .post(
            "/api/v1/rollbacks",
            CI_TOKEN,
            json!({"service": "web", "environment": "staging"}),
        )
        .await;
    assert_eq!(status, 202, "{rollback}");
    bot.wait_for_state(id(&rollback), "succeeded").await;

    let (status, body) = bot.act(failed, "retry", CI_TOKEN).await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("staging"),
        "the refusal names the missing environment: {message}"
    );
    let (_, history) = bot
        .get(
            "/api/v1/services/web/history?environment=production",
            CI_TOKEN,
        )
        .await;
    assert_eq!(id(&history[0]), failed, "nothing was opened");
}
