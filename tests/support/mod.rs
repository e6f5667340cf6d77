//! The test harness: boots the real bot in-process on a random loopback port, with a temp
//! directory holding `bot.toml` and real deploy scripts, a temp database (SQLite, or PostgreSQL
//! when SHIPMATE_TEST_POSTGRES_URL is set and the test asks for it) and a manual clock.
#![allow(dead_code)]

pub mod cluster;
pub mod discord;
pub mod fake_argocd;
pub mod fake_discord;
pub mod fake_github;
pub mod fake_kubernetes;
pub mod fake_slack;
pub mod fake_webhook;
pub mod prometheus;
pub mod rollout;
pub mod serve;
pub mod slack;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use shipmate::engine::{Engine, ManualClock};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const CI_TOKEN: &str = "ci-token";
pub const LEAD_TOKEN: &str = "lead-token";
pub const LEAD2_TOKEN: &str = "lead2-token";
pub const ADMIN_TOKEN: &str = "admin-token";
pub const OUTSIDER_TOKEN: &str = "outsider-token";

pub const SLACK_BOT_TOKEN: &str = "xoxb-test-token";
pub const SLACK_SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
/// The channel of service `api` on Slack; `web` names none, so its cards go where it was asked.
pub const RELEASES_CHANNEL: &str = "C0RELEASES";
/// Slack users: two leads, a deployer, and someone in no role.
pub const SLACK_LEAD: &str = "U0LEAD1";
pub const SLACK_LEAD2: &str = "U0LEAD2";
pub const SLACK_DEV: &str = "U0DEV";
pub const SLACK_STRANGER: &str = "U0STRANGER";
/// A Slack user group listed in `leads`.
pub const SLACK_LEADS_GROUP: &str = "S0LEADS";

pub const DISCORD_BOT_TOKEN: &str = "discord-test-token";
pub const DISCORD_APP_ID: u64 = 1_100_000_000_000_000_000;
/// Discord users: a lead by user id, a lead through the leads role, a deployer, and someone in no
/// role. The channel of service `api` on Discord is the fake's `CHANNEL_ID`.
pub const DISCORD_LEAD: u64 = 1_400_000_000_000_000_001;
pub const DISCORD_LEAD2: u64 = 1_400_000_000_000_000_002;
pub const DISCORD_DEV: u64 = 1_400_000_000_000_000_003;
pub const DISCORD_STRANGER: u64 = 1_400_000_000_000_000_004;
/// A guild role listed in `leads`; DISCORD_LEAD2 holds it.
pub const DISCORD_LEADS_ROLE: &str = "1500000000000000001";

/// A deploy script that records its environment and succeeds after printing progress.
pub const RECORDING_SCRIPT: &str = r#"#!/bin/sh
env | grep '^SHIPMATE_' | sort > "deployed-$SHIPMATE_PROMOTION_ID.env"
echo "deploying $SHIPMATE_SERVICE $SHIPMATE_VERSION to $SHIPMATE_ENVIRONMENT"
echo "step 2"
echo "done"
"#;

/// Fails when the version ends in `.13`, otherwise succeeds.
pub const UNLUCKY_SCRIPT: &str = r#"#!/bin/sh
echo "deploying $SHIPMATE_VERSION"
case "$SHIPMATE_VERSION" in *.13) echo "migration 42 failed: table locked" >&2; exit 3;; esac
echo "ok"
"#;

/// Blocks until the file `release-<id>` appears in its directory, so a test decides when a deploy ends.
pub const GATED_SCRIPT: &str = r#"#!/bin/sh
echo "waiting for the gate"
while [ ! -f "release-$SHIPMATE_PROMOTION_ID" ]; do sleep 0.05; done
echo "gate opened"
"#;

pub const FORM: &str = "application/x-www-form-urlencoded";

pub fn start_time() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 17, 9, 0, 0).unwrap()
}

/// The runtime the benchmarks that drive a [`TestBot`] measure on: two workers, like the machine.
pub fn bench_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn sha(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// `bot.toml` for tests: services `api` (dev → staging → production, production needs 2 lead
/// approvals) and `web` (staging → production, no approvals), all deploying with `script`.
pub fn test_config(database_url: &str, script: &str) -> String {
    test_config_with_slack(database_url, script, None)
}

/// [`test_config`] with a `[slack]` table pointing at a fake Web API.
pub fn test_config_with_slack(
    database_url: &str,
    script: &str,
    slack_api_url: Option<&str>,
) -> String {
    test_config_with_chat(database_url, script, slack_api_url, None)
}

/// [`test_config`] with `[slack]` and `[discord]` tables pointing at fakes, for those given.
pub fn test_config_with_chat(
    database_url: &str,
    script: &str,
    slack_api_url: Option<&str>,
    discord_api_url: Option<&str>,
) -> String {
    let slack = slack_api_url.map_or_else(String::new, |url| {
        format!(
            "[slack]\nbot_token = \"{SLACK_BOT_TOKEN}\"\nsigning_secret = \"{SLACK_SIGNING_SECRET}\"\napi_url = \"{url}\"\n"
        )
    });
    let discord = discord_api_url.map_or_else(String::new, |url| {
        format!(
            "[discord]\nbot_token = \"{DISCORD_BOT_TOKEN}\"\napplication_id = \"{DISCORD_APP_ID}\"\nguild_id = \"{guild}\"\npublic_key = \"{key}\"\napi_url = \"{url}\"\n",
            guild = fake_discord::GUILD_ID,
            key = fake_discord::TEST_PUBLIC_KEY_HEX,
        )
    });
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"

[database]
url = "{database_url}"

{slack}
{discord}
[roles]
leads = ["api:lead", "api:lead2", "api:admin", "slack:{SLACK_LEAD}", "slack:{SLACK_LEAD2}", "slack-group:{SLACK_LEADS_GROUP}", "discord:{DISCORD_LEAD}", "discord-role:{DISCORD_LEADS_ROLE}"]
deployers = ["api:ci", "api:lead", "api:lead2", "api:admin", "slack:{SLACK_LEAD}", "slack:{SLACK_LEAD2}", "slack:{SLACK_DEV}", "discord:{DISCORD_LEAD}", "discord:{DISCORD_LEAD2}", "discord:{DISCORD_DEV}"]
admins = ["api:admin"]

[[api_tokens]]
name = "ci"
sha256 = "{ci}"

[[api_tokens]]
name = "lead"
sha256 = "{lead}"

[[api_tokens]]
name = "lead2"
sha256 = "{lead2}"

[[api_tokens]]
name = "admin"
sha256 = "{admin}"

[[api_tokens]]
name = "outsider"
sha256 = "{outsider}"

[[service]]
name = "api"
channels = {{ slack = "{RELEASES_CHANNEL}", discord = "{discord_channel}" }}
  [[service.environment]]
  name = "dev"
  backend = {{ kind = "command", run = ["{script}"], timeout = "30s" }}
  [[service.environment]]
  name = "staging"
  backend = {{ kind = "command", run = ["{script}"], timeout = "30s" }}
  [[service.environment]]
  name = "production"
  backend = {{ kind = "command", run = ["{script}"], timeout = "30s" }}
  approvals = {{ required = 2, from = "leads", expires = "24h" }}

[[service]]
name = "web"
  [[service.environment]]
  name = "staging"
  backend = {{ kind = "command", run = ["{script}"], timeout = "30s" }}
  [[service.environment]]
  name = "production"
  backend = {{ kind = "command", run = ["{script}"], timeout = "30s" }}
"#,
        ci = sha(CI_TOKEN),
        lead = sha(LEAD_TOKEN),
        lead2 = sha(LEAD2_TOKEN),
        admin = sha(ADMIN_TOKEN),
        outsider = sha(OUTSIDER_TOKEN),
        discord_channel = fake_discord::CHANNEL_ID,
    )
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A fresh PostgreSQL database for one test, or `None` (with a printed notice) when
/// SHIPMATE_TEST_POSTGRES_URL is not set.
pub async fn postgres_database() -> Option<String> {
    let Ok(admin_url) = std::env::var("SHIPMATE_TEST_POSTGRES_URL") else {
        eprintln!(
            "SHIPMATE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL half of this test"
        );
        return None;
    };
    use sqlx::Connection;
    let name = format!("shipmate_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect to SHIPMATE_TEST_POSTGRES_URL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("database URL with a /database part");
    Some(format!("{base}/{name}"))
}

/// Database URLs to run a conformance test on: SQLite always, PostgreSQL when configured.
pub async fn database_urls(dir: &Path) -> Vec<(Db, String)> {
    let mut urls = vec![(
        Db::Sqlite,
        format!("sqlite://{}", dir.join("test.db").display()),
    )];
    if let Some(url) = postgres_database().await {
        urls.push((Db::Postgres, url));
    }
    urls
}

pub struct TestBot {
    pub slack: Option<fake_slack::FakeSlack>,
    pub discord: Option<fake_discord::FakeDiscord>,
    pub dir: TempDir,
    pub base: String,
    pub clock: Arc<ManualClock>,
    /// The engine's real-time source when the test drives it (`Builder::manual_real_time`).
    pub real_clock: Option<Arc<ManualClock>>,
    pub database_url: String,
    pub engine: Engine,
    /// The bot's database, for assertions on what it stored.
    pub store: shipmate::store::Store,
    http: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
    /// The clocks the bot runs on, kept for a restart.
    time: shipmate::engine::Time,
}

/// A bot process, as far as a test can tell: its engine, store, address and stop switch.
struct Running {
    engine: Engine,
    store: shipmate::store::Store,
    base: String,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
}

/// Boots the bot of `config_path` on `time`, listening on a fresh loopback port.
async fn boot(config_path: &Path, time: shipmate::engine::Time) -> Running {
    let config = shipmate::config::load(config_path, &|_| None).expect("test config is valid");
    let bot = shipmate::app::build(config, time, None)
        .await
        .expect("bot builds");
    let engine = bot.engine.clone();
    let store = bot.store.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(shipmate::app::run(bot, listener, shutdown.clone()));
    Running {
        engine,
        store,
        base,
        shutdown,
        server,
    }
}

pub struct Builder {
    script: &'static str,
    db: Db,
    slack: bool,
    discord: bool,
    production_windows: Vec<&'static str>,
    extra_config: String,
    real_clock: bool,
    manual_real_time: bool,
    public_url: Option<&'static str>,
}

impl TestBot {
    pub fn builder() -> Builder {
        Builder {
            script: RECORDING_SCRIPT,
            db: Db::Sqlite,
            slack: false,
            discord: false,
            production_windows: Vec::new(),
            extra_config: String::new(),
            real_clock: false,
            manual_real_time: false,
            public_url: None,
        }
    }

    /// A bot on SQLite whose config is the harness's plus `extra` (services, tables).
    pub async fn with_config(extra: &str) -> TestBot {
        TestBot::builder()
            .config(extra)
            .start()
            .await
            .expect("sqlite")
    }

    pub async fn start() -> TestBot {
        Self::builder()
            .start()
            .await
            .expect("sqlite always available")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        send_json(
            &self.http,
            method,
            &format!("{}{path}", self.base),
            token,
            body,
        )
        .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    /// `POST /api/v1/commands`: the chat grammar.
    pub async fn say(&self, token: &str, text: &str) -> (u16, Value) {
        self.post("/api/v1/commands", token, json!({ "text": text }))
            .await
    }

    pub async fn promote(
        &self,
        token: &str,
        service: &str,
        version: &str,
        environment: Option<&str>,
    ) -> (u16, Value) {
        let mut body = json!({"service": service, "version": version});
        if let Some(env) = environment {
            body["environment"] = json!(env);
        }
        self.post("/api/v1/promotions", token, body).await
    }

    /// Promotes as CI and returns the new promotion's id (the API must answer 202).
    pub async fn promote_id(&self, service: &str, version: &str, environment: Option<&str>) -> i64 {
        let (status, body) = self.promote(CI_TOKEN, service, version, environment).await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_i64().expect("id")
    }

    /// Waits until promotion `id` failed and returns its reason.
    pub async fn failure_reason(&self, id: i64) -> String {
        let failed = self.wait_for_state(id, "failed").await;
        failed["reason"].as_str().expect("reason").to_string()
    }

    /// The promotion's stored deploy output.
    pub async fn deploy_log(&self, id: i64) -> Vec<String> {
        self.store.deploy_log(id).await.expect("deploy log")
    }

    /// `POST /api/v1/promotions/{id}/{action}` (approve, cancel, retry, …) with an empty body.
    pub async fn act(&self, id: i64, action: &str, token: &str) -> (u16, Value) {
        let path = format!("/api/v1/promotions/{id}/{action}");
        self.post(&path, token, json!({})).await
    }

    pub async fn promotion(&self, id: i64) -> Value {
        let (status, body) = self
            .get(&format!("/api/v1/promotions/{id}"), CI_TOKEN)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until promotion `id` reaches `state`, failing with its last view after 20 s.
    pub async fn wait_for_state(&self, id: i64, state: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let last = self.promotion(id).await;
            if last["state"] == state {
                return last;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "promotion #{id} never reached {state}; last: {last:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Promotes `version` of `service` through every environment before `environment`, waiting
    /// for each deploy to succeed.
    pub async fn reach(&self, service: &str, version: &str, environments: &[&str]) {
        for env in environments {
            let (status, body) = self.promote(CI_TOKEN, service, version, Some(env)).await;
            assert_eq!(status, 202, "{body}");
            let id = body["id"].as_i64().expect("id");
            self.wait_for_state(id, "succeeded").await;
        }
    }

    pub fn fake_slack(&self) -> &fake_slack::FakeSlack {
        self.slack.as_ref().expect("bot started with .slack()")
    }

    pub fn fake_discord(&self) -> &fake_discord::FakeDiscord {
        self.discord.as_ref().expect("bot started with .discord()")
    }

    /// POSTs `body` to a Slack endpoint, signed as Slack signs it `age_secs` ago.
    pub async fn slack_post(
        &self,
        path: &str,
        content_type: &str,
        body: String,
        age_secs: i64,
    ) -> (u16, String) {
        let timestamp = fake_slack::now_unix() - age_secs;
        let signature = fake_slack::sign(SLACK_SIGNING_SECRET, timestamp, &body);
        self.slack_post_raw(path, content_type, body, Some((timestamp, signature)))
            .await
    }

    /// POSTs with the given signature headers (or none).
    pub async fn slack_post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: String,
        signed: Option<(i64, String)>,
    ) -> (u16, String) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some((timestamp, signature)) = signed {
            request = request
                .header("x-slack-request-timestamp", timestamp.to_string())
                .header("x-slack-signature", signature);
        }
        let response = request.send().await.expect("request reaches the bot");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// `user` types `/release <text>` in `channel`; returns the ephemeral reply text.
    pub async fn slash(&self, user: &str, channel: &str, text: &str) -> String {
        let body = fake_slack::slash_command_body(user, channel, text);
        let (status, reply) = self.slack_post("/slack/commands", FORM, body, 0).await;
        assert_eq!(status, 200, "{reply}");
        let reply: Value = serde_json::from_str(&reply).expect("JSON reply");
        assert_eq!(reply["response_type"], "ephemeral", "{reply}");
        reply["text"].as_str().expect("text").to_string()
    }

    /// `user` clicks the button `action` (approve, reject, …) on the card `ts` in `channel`.
    pub async fn click(&self, user: &str, channel: &str, ts: &str, action: &str, promotion: i64) {
        let action_id = format!("shipmate:{action}");
        let body =
            fake_slack::block_action_body(user, channel, ts, &action_id, &promotion.to_string());
        let (status, reply) = self.slack_post("/slack/interactions", FORM, body, 0).await;
        assert_eq!(status, 200, "{reply}");
    }

    /// Sends an Events API delivery (JSON), signed.
    pub async fn slack_event(&self, body: String) -> (u16, String) {
        self.slack_post("/slack/events", "application/json", body, 0)
            .await
    }

    /// The card message of promotion `id` in `channel`, once it shows `state`.
    pub async fn card_in_state(&self, channel: &str, id: i64, state: &str) -> fake_slack::Message {
        let slack = self.fake_slack();
        let title = format!("#{id} ");
        let mut seen = Vec::new();
        let found = wait_until(Duration::from_secs(20), || {
            seen = slack.messages(channel);
            let hit = seen.iter().any(|m| {
                m.thread_ts.is_none()
                    && m.text.starts_with(&title)
                    && m.text.ends_with(&format!(": {}", state.replace('_', " ")))
            });
            async move { hit }
        })
        .await;
        assert!(
            found,
            "card #{id} never showed {state} in {channel}: {seen:#?}"
        );
        seen.into_iter()
            .find(|m| m.thread_ts.is_none() && m.text.starts_with(&title))
            .expect("card")
    }

    /// Stops the bot as SIGTERM would and starts it again on the same directory, database and
    /// clocks (a new address).
    pub async fn restart(&mut self) {
        self.stop().await;
        let running = boot(&self.path("bot.toml"), self.time.clone()).await;
        self.engine = running.engine;
        self.store = running.store;
        self.base = running.base;
        self.shutdown = running.shutdown;
        self.server = Some(running.server);
    }

    /// Stops the bot as SIGTERM would, and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server ran");
        }
    }
}

impl Drop for TestBot {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Builder {
    pub fn script(mut self, script: &'static str) -> Self {
        self.script = script;
        self
    }

    /// Runs the bot against a fresh fake Slack.
    pub fn slack(mut self) -> Self {
        self.slack = true;
        self
    }

    /// Runs the bot against a fresh fake Discord (REST and gateway).
    pub fn discord(mut self) -> Self {
        self.discord = true;
        self
    }

    /// Both `production` environments (api and web) start only in these windows.
    pub fn production_windows(mut self, windows: &[&'static str]) -> Self {
        self.production_windows = windows.to_vec();
        self
    }

    /// TOML appended to the test config (`[[window]]`, `[[schedule]]`, `[[freeze]]` tables).
    pub fn config(mut self, toml: &str) -> Self {
        self.extra_config.push_str(toml);
        self
    }

    /// Runs on the system clock instead of the manual one.
    pub fn real_clock(mut self) -> Self {
        self.real_clock = true;
        self
    }

    /// Real time (leases, job due times, card pacing) from a manual clock too, moved with
    /// `bot.real_clock`.
    pub fn manual_real_time(mut self) -> Self {
        self.manual_real_time = true;
        self
    }

    /// `[server] public_url`: cards link to the web pages there.
    pub fn public_url(mut self, url: &'static str) -> Self {
        self.public_url = Some(url);
        self
    }

    pub fn db(mut self, db: Db) -> Self {
        self.db = db;
        self
    }

    /// Boots the bot; `None` when the database asked for is not available here.
    pub async fn start(self) -> Option<TestBot> {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = dir.path().join("deploy.sh");
        std::fs::write(&script, self.script).expect("write script");
        make_executable(&script);
        let database_url = match self.db {
            Db::Sqlite => format!("sqlite://{}", dir.path().join("bot.db").display()),
            Db::Postgres => postgres_database().await?,
        };
        let slack = match self.slack {
            true => Some(fake_slack::FakeSlack::start(SLACK_BOT_TOKEN).await),
            false => None,
        };
        let slack_url = slack.as_ref().map(|fake| fake.api_url());
        let discord = match self.discord {
            true => Some(fake_discord::FakeDiscord::start(DISCORD_BOT_TOKEN, DISCORD_APP_ID).await),
            false => None,
        };
        let discord_url = discord.as_ref().map(|fake| fake.api_url());
        let text = test_config_with_chat(
            &database_url,
            "./deploy.sh",
            slack_url.as_deref(),
            discord_url.as_deref(),
        );
        let mut text = text;
        if !self.production_windows.is_empty() {
            let windows = format!("{:?}", self.production_windows);
            text = text.replace(
                "  name = \"production\"\n",
                &format!("  name = \"production\"\n  windows = {windows}\n"),
            );
        }
        if let Some(url) = self.public_url {
            text = text.replace(
                "shutdown_grace = \"5s\"\n",
                &format!("shutdown_grace = \"5s\"\npublic_url = \"{url}\"\n"),
            );
        }
        text.push_str(&self.extra_config);
        let config_path = dir.path().join("bot.toml");
        std::fs::write(&config_path, &text).expect("write config");
        let clock = Arc::new(ManualClock::new(start_time()));
        let engine_clock: Arc<dyn shipmate::engine::Clock> = if self.real_clock {
            Arc::new(shipmate::engine::SystemClock)
        } else {
            clock.clone()
        };
        let real_clock = self
            .manual_real_time
            .then(|| Arc::new(ManualClock::new(start_time())));
        let time = match &real_clock {
            Some(real) => shipmate::engine::Time::with_real(engine_clock, real.clone()),
            None => shipmate::engine::Time::new(engine_clock),
        };
        let running = boot(&config_path, time.clone()).await;
        Some(TestBot {
            slack,
            discord,
            dir,
            base: running.base,
            clock,
            real_clock,
            database_url,
            engine: running.engine,
            store: running.store,
            http: reqwest::Client::new(),
            shutdown: running.shutdown,
            server: Some(running.server),
            time,
        })
    }
}

pub fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut permissions = std::fs::metadata(path).expect("metadata").permissions();
    permissions.set_mode(0o755);
    std::fs::set_permissions(path, permissions).expect("chmod");
}

/// Sends a JSON request (bearer `token` if any) and returns the status and the body as JSON (or
/// as a JSON string when it is not JSON).
pub async fn send_json(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request reaches the bot");
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// The promotion id a reply names (`requested: #42 api …`).
pub fn promotion_id(reply: &str) -> i64 {
    let digits: String = reply
        .split('#')
        .nth(1)
        .unwrap_or_else(|| panic!("no #id in {reply}"))
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no #id in {reply}"))
}

impl TestBot {
    /// Runs one SQL statement on the bot's database, to break it (a failing trigger) or mend it.
    pub async fn sql(&self, statement: &str) {
        let mut db = self.raw_connection().await;
        sqlx::query(statement)
            .execute(&mut db)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }

    /// The number a `SELECT COUNT(*) …` on the bot's database answers.
    pub async fn sql_count(&self, query: &str) -> i64 {
        let mut db = self.raw_connection().await;
        sqlx::query_scalar(query)
            .fetch_one(&mut db)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    pub async fn raw_connection(&self) -> sqlx::AnyConnection {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        sqlx::AnyConnection::connect(&self.database_url)
            .await
            .expect("open the bot's database")
    }
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
