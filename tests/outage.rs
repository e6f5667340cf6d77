//! The outage test of the reliability suite (issue 11): the fake Slack (then the fake Discord)
//! answers every card call with 500s and 429s carrying `Retry-After` for 5 minutes of fake time
//! while promotions go on. Afterwards every card shows its promotion's final state, once; deploy
//! output is in each card's thread, once; no call was made inside a `Retry-After`; no card was
//! edited twice within a second; and the platform refused nothing the bot sent.
//!
//! How time moves. Job due times, backoff, `Retry-After` and card pacing are all judged on
//! `Time::real_now()`, which the harness takes from a manual clock (`manual_real_time`); the fakes
//! judge rate limits and edit pacing on the same clock. The workers themselves still wake on
//! tokio's real timer (when a job is enqueued, or every 500 ms at most). So the test moves fake
//! time in steps of [`STEP`] and after each step waits, on the real clock and bounded, until the
//! workers have caught up with the new fake "now": no job is leased (nothing in flight) and no
//! job due by now is left unclaimed, except card jobs of a platform whose last 429 has not run
//! out (the bot must hold those back). That is the state a live bot reaches between two timer
//! ticks; every due time is honoured at `STEP` granularity and nothing sleeps "long enough".

mod support;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use shipmate::engine::{Clock, ManualClock};
use support::fake_discord::{self, OutageAnswer, Route, CHANNEL_ID};
use support::fake_slack::Failure;
use support::*;

const STEP: Duration = Duration::from_secs(5);
const OUTAGE: Duration = Duration::from_secs(300);
/// After the outage, cards may wait out the longest backoff (5 minutes) before they catch up.
const RECOVERY: Duration = Duration::from_secs(600);

/// One platform under test: how the test reads its fake.
trait Platform {
    /// The `jobs.kind` of its card jobs.
    fn card_kind(&self) -> &'static str;
    /// Until when its last 429 asked the bot to wait, on the fake clock.
    fn limited_until(&self) -> Option<DateTime<Utc>>;
    /// Whether the card of promotion `id` exists and shows `state` (exactly one card for it).
    fn card_shows(&self, id: i64, state: &str) -> bool;
}

struct Slack(support::fake_slack::FakeSlack);
struct Discord(fake_discord::FakeDiscord);

impl Platform for Slack {
    fn card_kind(&self) -> &'static str {
        "card:slack"
    }
    fn limited_until(&self) -> Option<DateTime<Utc>> {
        self.0.rate_limited_until()
    }
    fn card_shows(&self, id: i64, state: &str) -> bool {
        let cards: Vec<_> = self
            .0
            .messages(RELEASES_CHANNEL)
            .into_iter()
            .filter(|m| m.text.starts_with(&format!("#{id} ")))
            .collect();
        cards.len() == 1
            && cards[0]
                .text
                .ends_with(&format!(": {}", state.replace('_', " ")))
    }
}

impl Platform for Discord {
    fn card_kind(&self) -> &'static str {
        "card:discord"
    }
    fn limited_until(&self) -> Option<DateTime<Utc>> {
        self.0.rate_limited_until()
    }
    fn card_shows(&self, id: i64, state: &str) -> bool {
        let label = format!("**{}**", state.replace('_', " "));
        let cards: Vec<_> = self
            .0
            .messages(CHANNEL_ID)
            .into_iter()
            .filter(|m| {
                m.embeds[0]["title"]
                    .as_str()
                    .is_some_and(|t| t.contains(&format!("#{id} ")))
            })
            .collect();
        cards.len() == 1
            && cards[0].embeds[0]["description"]
                .as_str()
                .is_some_and(|d| d.starts_with(&label))
    }
}

/// A row of the outbox, shown when the workers do not catch up.
type JobRow = (
    i64,
    String,
    Option<i64>,
    i64,
    Option<String>,
    Option<String>,
);

struct Driver<'a> {
    bot: &'a TestBot,
    real: Arc<ManualClock>,
    pool: sqlx::AnyPool,
    platform: &'a dyn Platform,
}

impl Driver<'_> {
    /// Whether the workers have done everything due at the fake now (see the module comment).
    async fn caught_up(&self) -> bool {
        let now = self.real.now();
        let held = self
            .platform
            .limited_until()
            .is_some_and(|until| until > now);
        let jobs: Vec<(String, i64, Option<String>)> =
            sqlx::query_as("SELECT kind, run_at, lease_owner FROM jobs")
                .fetch_all(&self.pool)
                .await
                .expect("read jobs");
        jobs.iter().all(|(kind, run_at, lease)| {
            let due = *run_at <= now.timestamp_millis();
            let waits = held && kind == self.platform.card_kind();
            lease.is_none() && (!due || waits)
        })
    }

    async fn settle(&self) {
        let settled = wait_until(Duration::from_secs(20), || self.caught_up()).await;
        if !settled {
            let jobs: Vec<JobRow> = sqlx::query_as(
                "SELECT id, kind, promotion_id, run_at, lease_owner, last_error FROM jobs",
            )
            .fetch_all(&self.pool)
            .await
            .expect("read jobs");
            panic!(
                "the workers never caught up at {} (rate-limited until {:?}): {jobs:#?}",
                self.real.now().timestamp_millis(),
                self.platform.limited_until().map(|t| t.timestamp_millis())
            );
        }
    }

    /// Moves fake time by `by` in steps, letting the workers catch up after each.
    async fn pass(&self, by: Duration) {
        let mut passed = Duration::ZERO;
        while passed < by {
            self.real.advance(STEP);
            passed += STEP;
            self.settle().await;
        }
    }

    /// Moves fake time until `done` holds; false if it did not within `limit`.
    async fn pass_until(&self, limit: Duration, done: impl Fn() -> bool) -> bool {
        let mut passed = Duration::ZERO;
        while !done() {
            if passed >= limit {
                return false;
            }
            self.real.advance(STEP);
            passed += STEP;
            self.settle().await;
        }
        true
    }

    async fn promote(&self, version: &str, environment: &str) -> i64 {
        let (status, body) = self
            .bot
            .promote(CI_TOKEN, "api", version, Some(environment))
            .await;
        assert_eq!(status, 202, "{body}");
        let id = body["id"].as_i64().expect("id");
        self.settle().await;
        id
    }

    async fn state(&self, id: i64) -> Value {
        self.bot.promotion(id).await["state"].clone()
    }
}

/// The promotions of the test and the states they end in, made while the platform is down.
async fn promotions_during_the_outage(driver: &Driver<'_>) -> Vec<(i64, &'static str)> {
    let bot = driver.bot;
    let mut ends = Vec::new();
    ends.push((driver.promote("1.1.0", "dev").await, "succeeded"));
    driver.pass(Duration::from_secs(20)).await;
    ends.push((driver.promote("1.0.0", "staging").await, "succeeded"));
    driver.pass(Duration::from_secs(20)).await;
    ends.push((driver.promote("2.0.13", "dev").await, "failed"));
    driver.pass(Duration::from_secs(20)).await;
    let production = driver.promote("1.0.0", "production").await;
    driver.pass(Duration::from_secs(30)).await;
    bot.act(production, "approve", LEAD_TOKEN).await;
    driver.pass(Duration::from_secs(10)).await;
    bot.act(production, "approve", LEAD2_TOKEN).await;
    driver.settle().await;
    ends.push((production, "succeeded"));
    ends.push((driver.promote("1.1.0", "staging").await, "succeeded"));
    let rejected = driver.promote("1.1.0", "production").await;
    driver.pass(Duration::from_secs(20)).await;
    let (status, body) = bot
        .post(
            &format!("/api/v1/promotions/{rejected}/reject"),
            LEAD_TOKEN,
            json!({"reason": "not during the outage"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    ends.push((rejected, "rejected"));
    for (id, state) in &ends {
        assert_eq!(driver.state(*id).await, *state, "promotion #{id}");
    }
    ends
}

async fn start(platform: &str) -> (TestBot, Arc<ManualClock>, sqlx::AnyPool) {
    let builder = TestBot::builder().script(UNLUCKY_SCRIPT).manual_real_time();
    let builder = match platform {
        "slack" => builder.slack(),
        _ => builder.discord(),
    };
    let bot = builder.start().await.expect("sqlite");
    let real = bot.real_clock.clone().expect("manual real time");
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&bot.database_url)
        .await
        .expect("raw connect");
    (bot, real, pool)
}

fn fake_clock(real: &Arc<ManualClock>) -> Arc<dyn Fn() -> DateTime<Utc> + Send + Sync> {
    let real = real.clone();
    Arc::new(move || real.now())
}

/// Consecutive edits of one card at least a second apart (fake time).
fn paced(times: &[DateTime<Utc>]) -> bool {
    times
        .windows(2)
        .all(|pair| pair[1] - pair[0] >= chrono::Duration::seconds(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_outage_of_five_minutes_ends_with_every_card_right() {
    let (bot, real, pool) = start("slack").await;
    let fake = bot.fake_slack().clone();
    fake.use_clock(fake_clock(&real));
    let platform = Slack(fake.clone());
    let driver = Driver {
        bot: &bot,
        real: real.clone(),
        pool,
        platform: &platform,
    };
    let before = driver.promote("1.0.0", "dev").await;
    assert!(
        driver
            .pass_until(RECOVERY, || platform.card_shows(before, "succeeded"))
            .await
    );

    fake.start_outage(vec![
        Failure::ServerError,
        Failure::RateLimited {
            retry_after_secs: 30,
        },
        Failure::ServerError,
        Failure::RateLimited {
            retry_after_secs: 7,
        },
    ]);
    let outage_start = real.now();
    let mut ends = promotions_during_the_outage(&driver).await;
    let elapsed = (real.now() - outage_start).to_std().unwrap_or_default();
    driver.pass(OUTAGE.saturating_sub(elapsed)).await;
    let failed_calls = fake.calls("chat.postMessage") + fake.calls("chat.update");
    fake.end_outage();
    ends.push((before, "succeeded"));

    let all_right = || {
        ends.iter()
            .all(|(id, state)| platform.card_shows(*id, state))
    };
    let outage_end = real.now();
    assert!(
        driver.pass_until(RECOVERY, all_right).await,
        "cards after the outage: {:#?}",
        fake.messages(RELEASES_CHANNEL)
    );
    eprintln!(
        "slack outage: {failed_calls} card calls made up to the end of 300 s of fake outage; every card right {} s after it ended",
        (real.now() - outage_end).num_seconds()
    );
    assert!(
        failed_calls > 20,
        "the outage was met: {failed_calls} calls"
    );
    for (id, state) in &ends {
        let card = fake
            .messages(RELEASES_CHANNEL)
            .into_iter()
            .find(|m| m.text.starts_with(&format!("#{id} ")))
            .expect("card");
        assert!(
            paced(&fake.edit_times(RELEASES_CHANNEL, &card.ts)),
            "#{id} edited too fast"
        );
        let thread: String = fake
            .thread(RELEASES_CHANNEL, &card.ts)
            .iter()
            .map(|m| m.text.clone())
            .collect();
        let deploying = thread.matches("deploying ").count();
        let expected = usize::from(*state == "succeeded" || *state == "failed");
        assert_eq!(deploying, expected, "#{id} ({state}) thread: {thread}");
    }
    assert_eq!(fake.rate_limit_violations(), Vec::<String>::new());
    assert_eq!(fake.refusals(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discord_outage_of_five_minutes_ends_with_every_card_right() {
    let (bot, real, pool) = start("discord").await;
    let fake = bot.discord.clone().expect("fake Discord");
    fake.use_clock(fake_clock(&real));
    // Without serenity's rate limiter (a custom API base) the bot cannot read a 429's
    // retry_after and waits a fixed 2 s; the fake asks for exactly that.
    fake.set_retry_after(2.0);
    let platform = Discord(fake.clone());
    let driver = Driver {
        bot: &bot,
        real: real.clone(),
        pool,
        platform: &platform,
    };
    let before = driver.promote("1.0.0", "dev").await;
    assert!(
        driver
            .pass_until(RECOVERY, || platform.card_shows(before, "succeeded"))
            .await
    );

    fake.start_outage(vec![
        OutageAnswer::ServerError,
        OutageAnswer::RateLimited,
        OutageAnswer::ServerError,
    ]);
    let outage_start = real.now();
    let mut ends = promotions_during_the_outage(&driver).await;
    let elapsed = (real.now() - outage_start).to_std().unwrap_or_default();
    driver.pass(OUTAGE.saturating_sub(elapsed)).await;
    let failed_calls = fake.calls(Route::CreateMessage) + fake.calls(Route::EditMessage);
    fake.end_outage();
    ends.push((before, "succeeded"));

    let all_right = || {
        ends.iter()
            .all(|(id, state)| platform.card_shows(*id, state))
    };
    let outage_end = real.now();
    assert!(
        driver.pass_until(RECOVERY, all_right).await,
        "cards after the outage: {:#?}",
        fake.messages(CHANNEL_ID)
    );
    eprintln!(
        "discord outage: {failed_calls} card calls made up to the end of 300 s of fake outage; every card right {} s after it ended",
        (real.now() - outage_end).num_seconds()
    );
    assert!(
        failed_calls > 20,
        "the outage was met: {failed_calls} calls"
    );
    for (id, state) in &ends {
        let card = fake
            .messages(CHANNEL_ID)
            .into_iter()
            .find(|m| {
                m.embeds[0]["title"]
                    .as_str()
                    .is_some_and(|t| t.contains(&format!("#{id} ")))
            })
            .expect("card");
        assert!(paced(&fake.edit_times(card.id)), "#{id} edited too fast");
        let thread: String = fake
            .thread(card.id)
            .iter()
            .map(|m| m.content.clone())
            .collect();
        let deploying = thread.matches("deploying ").count();
        let expected = usize::from(*state == "succeeded" || *state == "failed");
        assert_eq!(deploying, expected, "#{id} ({state}) thread: {thread}");
    }
    assert_eq!(fake.rate_limit_violations(), Vec::<String>::new());
    assert_eq!(fake.refusals(), vec![]);
}
