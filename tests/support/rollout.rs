//! Rollout helpers (SPEC §5.1, §5.2): a step-recording deploy script, a loopback health endpoint
//! whose answer the test sets, service `shop` rolled out by a strategy and verified by it, and
//! waits on the rollout row.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::{fake_discord, wait_until, TestBot, CI_TOKEN, RELEASES_CHANNEL};

/// Records every call (`version step/steps weight phase`) to `calls.log` (a rollback's wall-clock
/// start also to `rollback-called-at`, in nanoseconds, written whole by a rename so a reader
/// never sees it empty);
/// blocks while the file `hold-<version>-<step>` exists, so a test can catch a step running.
pub const STEP_SCRIPT: &str = r#"#!/bin/sh
echo "$SHIPMATE_VERSION $SHIPMATE_STEP/$SHIPMATE_STEPS $SHIPMATE_WEIGHT $SHIPMATE_PHASE rollback=$SHIPMATE_ROLLBACK" >> calls.log
if [ "$SHIPMATE_ROLLBACK" = true ]; then date +%s%N > rollback-called-at.part && mv rollback-called-at.part rollback-called-at; fi
echo "calling step $SHIPMATE_STEP of $SHIPMATE_STEPS at $SHIPMATE_WEIGHT%"
while [ -f "hold-$SHIPMATE_VERSION-$SHIPMATE_STEP" ]; do sleep 0.05; done
if [ -f "fail-$SHIPMATE_VERSION-$SHIPMATE_PHASE" ]; then echo "phase $SHIPMATE_PHASE broke" >&2; exit 4; fi
echo "ok"
"#;

/// A loopback health endpoint whose answer the test sets.
pub struct Health {
    pub url: String,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
    /// Probes still to answer 503 before `status` applies again.
    failing: Arc<AtomicUsize>,
    /// When (wall clock) a probe last got a failing answer.
    failed_at: Arc<Mutex<Option<SystemTime>>>,
}

impl Health {
    pub async fn start() -> Health {
        let status = Arc::new(AtomicU16::new(200));
        let hits = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(AtomicUsize::new(0));
        let failed_at = Arc::new(Mutex::new(None));
        let app = axum::Router::new().route(
            "/healthz",
            axum::routing::get({
                let status = status.clone();
                let hits = hits.clone();
                let failing = failing.clone();
                let failed_at = failed_at.clone();
                move || {
                    let fails = failing
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    let status = if fails {
                        503
                    } else {
                        status.load(Ordering::SeqCst)
                    };
                    hits.fetch_add(1, Ordering::SeqCst);
                    if status >= 400 {
                        *failed_at.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(SystemTime::now());
                    }
                    async move {
                        axum::http::StatusCode::from_u16(status)
                            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/healthz", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Health {
            url,
            status,
            hits,
            failing,
            failed_at,
        }
    }

    /// When a probe last got a failing answer.
    pub fn failed_at(&self) -> Option<SystemTime> {
        *self.failed_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next `probes` probes get 503; later ones `status` again.
    pub fn fail_next(&self, probes: usize) {
        self.failing.store(probes, Ordering::SeqCst);
    }

    pub fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Service `shop`, one environment `production` rolled out as `strategy`, verified by `health`.
pub fn shop(strategy: &str, health: &Health, on_failure: &str) -> String {
    shop_config(strategy, health, on_failure, "")
}

/// [`shop`] with its cards in the channels of service `api`: `RELEASES_CHANNEL` on Slack, the
/// fake Discord's `CHANNEL_ID`.
pub fn shop_in_channels(strategy: &str, health: &Health, on_failure: &str) -> String {
    let channels = format!(
        "channels = {{ slack = \"{RELEASES_CHANNEL}\", discord = \"{}\" }}\n",
        fake_discord::CHANNEL_ID
    );
    shop_config(strategy, health, on_failure, &channels)
}

fn shop_config(strategy: &str, health: &Health, on_failure: &str, channels: &str) -> String {
    format!(
        r#"
[[service]]
name = "shop"
{channels}  [[service.environment]]
  name = "production"
  backend = {{ kind = "command", run = ["./deploy.sh"], timeout = "30s" }}
  strategy = {strategy}
  verify = [ {{ kind = "http", url = "{url}", for = "10m", every = "30s" }} ]
  on_failure = "{on_failure}"
"#,
        url = health.url
    )
}

pub const CANARY: &str = r#"{ kind = "canary", steps = [10, 50, 100], pause = "5m" }"#;

pub async fn promote(bot: &TestBot, version: &str) -> i64 {
    let (status, body) = bot.promote(CI_TOKEN, "shop", version, None).await;
    assert_eq!(status, 202, "{body}");
    body["id"].as_i64().expect("id")
}

/// Waits until promotion `id` has reached plan position `position` and that gate's clock runs.
pub async fn wait_for_gate(bot: &TestBot, id: i64, position: i64) {
    let query = format!(
        "SELECT COUNT(*) FROM rollouts WHERE promotion_id = {id} AND position = {position} \
         AND calling = 0 AND gate_started_at IS NOT NULL"
    );
    let reached = wait_until(Duration::from_secs(20), || async {
        bot.sql_count(&query).await == 1
    })
    .await;
    let last = bot.promotion(id).await;
    assert!(
        reached,
        "#{id} never waited at position {position}: {last:#}"
    );
}

pub fn calls(bot: &TestBot) -> Vec<String> {
    std::fs::read_to_string(bot.path("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Walks a canary of `version` through its three steps and its verification.
pub async fn walk_canary(bot: &TestBot, version: &str) -> i64 {
    let id = promote(bot, version).await;
    for gate in [1, 3] {
        wait_for_gate(bot, id, gate).await;
        bot.clock.advance(Duration::from_secs(300));
    }
    wait_for_gate(bot, id, 5).await;
    assert_eq!(bot.promotion(id).await["state"], "verifying");
    bot.clock.advance(Duration::from_secs(600));
    bot.wait_for_state(id, "succeeded").await;
    id
}

/// The id of the rollback a failure reason names: `…; rolled back by #12 (to 1.0.0)`.
pub fn rollback_named(reason: &str) -> i64 {
    reason
        .split("rolled back by #")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rollback named in {reason:?}"))
}
