//! Slack over Socket Mode end to end: with `[slack].app_token` set, the real bot opens a
//! WebSocket through `apps.connections.open` and handles slash commands, button clicks and
//! reactions delivered over it exactly as it handles the signed HTTP requests in `slack.rs`.

#[path = "support/fake_slack_socket.rs"]
mod fake_slack_socket;
mod support;

use std::sync::Arc;
use std::time::Duration;

use fake_slack_socket::{Connection, FakeSocketMode, APP_TOKEN, WAIT};
use serde_json::{json, Value};
use shipmate::engine::ManualClock;
use support::fake_slack::{reaction_event_body, FakeSlack, Message};
use support::*;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DEV_CHAT: &str = "C0DEVCHAT";

/// The bot with `app_token` set, against a fake Web API and a fake Socket Mode server.
struct SocketBot {
    slack: FakeSlack,
    socket: FakeSocketMode,
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

impl SocketBot {
    async fn start() -> SocketBot {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = dir.path().join("deploy.sh");
        std::fs::write(&script, RECORDING_SCRIPT).expect("write script");
        make_executable(&script);
        let slack = FakeSlack::start(SLACK_BOT_TOKEN).await;
        let socket = FakeSocketMode::start(&slack).await;
        let database_url = format!("sqlite://{}", dir.path().join("bot.db").display());
        let text = test_config_with_slack(&database_url, "./deploy.sh", Some(&socket.api_url()))
            .replacen(
                "[slack]\n",
                &format!("[slack]\napp_token = \"{APP_TOKEN}\"\n"),
                1,
            );
        let config_path = dir.path().join("bot.toml");
        std::fs::write(&config_path, &text).expect("write config");
        let config = shipmate::config::load(&config_path, &|_| None).expect("test config is valid");
        let clock = Arc::new(ManualClock::new(start_time()));
        let bot = shipmate::app::build(config, shipmate::engine::Time::new(clock), None)
            .await
            .expect("bot builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(shipmate::app::run(bot, listener, shutdown.clone()));
        SocketBot {
            slack,
            socket,
            base,
            http: reqwest::Client::new(),
            shutdown,
            server: Some(server),
            _dir: dir,
        }
    }

    /// The bot's first connection, greeted with `hello`.
    async fn connected(&mut self) -> Connection {
        let mut connection = self.socket.next_connection().await;
        connection.hello().await;
        connection
    }

    async fn promote(&self, service: &str, version: &str, environment: &str) -> i64 {
        let response = self
            .http
            .post(format!("{}/api/v1/promotions", self.base))
            .bearer_auth(CI_TOKEN)
            .json(&json!({"service": service, "version": version, "environment": environment}))
            .send()
            .await
            .expect("request reaches the bot");
        assert_eq!(response.status().as_u16(), 202);
        let body: Value = response.json().await.expect("JSON");
        body["id"].as_i64().expect("id")
    }

    async fn promotion(&self, id: i64) -> Value {
        let response = self
            .http
            .get(format!("{}/api/v1/promotions/{id}", self.base))
            .bearer_auth(CI_TOKEN)
            .send()
            .await
            .expect("request reaches the bot");
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.expect("JSON")
    }

    async fn wait_for_state(&self, id: i64, state: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let last = self.promotion(id).await;
            if last["state"] == state {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "promotion #{id} never reached {state}; last: {last:#}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The card of promotion `id` in `channel`, once it shows `state`.
    async fn card_in_state(&self, channel: &str, id: i64, state: &str) -> Message {
        let title = format!("#{id} ");
        let suffix = format!(": {}", state.replace('_', " "));
        let is_card = |m: &Message| m.thread_ts.is_none() && m.text.starts_with(&title);
        let mut seen = Vec::new();
        let found = wait_until(Duration::from_secs(20), || {
            seen = self.slack.messages(channel);
            let hit = seen.iter().any(|m| is_card(m) && m.text.ends_with(&suffix));
            async move { hit }
        })
        .await;
        assert!(found, "card #{id} never showed {state}: {seen:#?}");
        seen.into_iter().find(is_card).expect("card")
    }

    async fn approvals(&self, id: i64) -> Vec<String> {
        let promotion = self.promotion(id).await;
        promotion["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["kind"] == "approval")
            .map(|e| e["actor"].as_str().expect("actor").to_string())
            .collect()
    }

    /// Stops the bot as SIGTERM would, and waits for it.
    async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(20), server)
                .await
                .expect("the bot stopped in time")
                .expect("server task")
                .expect("server ran");
        }
    }
}

impl Drop for SocketBot {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The ephemeral reply carried in a slash command's ack.
fn reply(ack: &Value) -> String {
    assert_eq!(ack["payload"]["response_type"], "ephemeral", "{ack}");
    ack["payload"]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no reply text in {ack}"))
        .to_string()
}

#[tokio::test]
async fn slash_commands_are_answered_in_the_ack_with_an_ephemeral_reply() {
    let mut bot = SocketBot::start().await;
    let mut socket = bot.connected().await;
    assert_eq!(
        bot.socket.opens(),
        1,
        "connection opened with the app token"
    );
    assert!(socket.path.starts_with("/link/?ticket="), "{}", socket.path);

    let ack = socket.slash(SLACK_DEV, DEV_CHAT, "help promote").await;
    let keys: Vec<&String> = ack.as_object().expect("ack object").keys().collect();
    assert_eq!(keys, ["envelope_id", "payload"], "{ack}");
    let text = reply(&ack);
    assert!(text.contains("/release promote &lt;service&gt;"), "{text}");

    let text = reply(
        &socket
            .slash(SLACK_STRANGER, DEV_CHAT, "promote web 1.0.0")
            .await,
    );
    assert!(text.contains("you need the `deployers` role"), "{text}");

    let text = reply(&socket.slash(SLACK_DEV, DEV_CHAT, "promote web 1.0.0").await);
    assert!(text.starts_with("requested: #"), "{text}");
    let id = promotion_id(&text);
    bot.wait_for_state(id, "succeeded").await;
    let text = reply(&socket.slash(SLACK_DEV, DEV_CHAT, "status web").await);
    assert!(text.contains("staging: 1.0.0"), "{text}");

    bot.stop().await;
    socket.expect_closed().await;
}

#[tokio::test]
async fn a_click_and_a_reaction_over_the_socket_approve_and_the_deploy_runs() {
    let mut bot = SocketBot::start().await;
    let mut socket = bot.connected().await;
    for env in ["dev", "staging"] {
        let id = bot.promote("api", "1.4.2", env).await;
        bot.wait_for_state(id, "succeeded").await;
    }
    let text = reply(&socket.slash(SLACK_DEV, DEV_CHAT, "promote api 1.4.2").await);
    assert!(text.starts_with("requested: #"), "{text}");
    let id = promotion_id(&text);
    let card = bot
        .card_in_state(RELEASES_CHANNEL, id, "awaiting_approval")
        .await;

    let ack = socket
        .click(SLACK_LEAD, RELEASES_CHANNEL, &card.ts, "approve", id)
        .await;
    assert_eq!(ack.as_object().expect("ack").len(), 1, "bare ack: {ack}");
    // The ack follows the handler, so the approval is already recorded.
    assert_eq!(bot.approvals(id).await, ["slack:U0LEAD1"]);

    let reaction = reaction_event_body(
        "reaction_added",
        "EvSOCKET1",
        SLACK_LEAD2,
        "white_check_mark",
        RELEASES_CHANNEL,
        &card.ts,
    );
    let ack = socket.event(&reaction).await;
    assert_eq!(ack.as_object().expect("ack").len(), 1, "bare ack: {ack}");
    // Slack redelivers an event it thinks was lost: acked again, counted once.
    socket.event(&reaction).await;

    let done = bot.card_in_state(RELEASES_CHANNEL, id, "succeeded").await;
    assert_eq!(done.ts, card.ts, "one message per promotion");
    assert_eq!(bot.approvals(id).await, ["slack:U0LEAD1", "slack:U0LEAD2"]);
    assert!(bot.slack.take_ephemerals(SLACK_LEAD).is_empty());
    assert!(bot.slack.take_ephemerals(SLACK_LEAD2).is_empty());
    bot.stop().await;
}

#[tokio::test]
async fn a_disconnect_frame_makes_the_bot_reconnect_and_carry_on() {
    let mut bot = SocketBot::start().await;
    let mut first = bot.connected().await;
    // A round trip first, as on a real connection: slack-morphism 2.31.1 closes the socket from
    // its writer task, which skips the close when `disconnect` wins the race with its start.
    let text = reply(&first.slash(SLACK_DEV, DEV_CHAT, "help").await);
    assert!(text.contains("/release"), "{text}");
    first.disconnect().await;
    first.expect_closed().await;

    let mut second = bot.connected().await;
    assert!(bot.socket.opens() >= 2, "a fresh apps.connections.open");
    assert_ne!(second.path, first.path, "a fresh ticket");
    let text = reply(&second.slash(SLACK_DEV, DEV_CHAT, "help").await);
    assert!(text.contains("/release"), "{text}");

    // Within WAIT of the shutdown, every connection the bot holds is closed.
    let stop = tokio::time::timeout(WAIT, bot.stop());
    stop.await.expect("the bot stopped in time");
    second.expect_closed().await;
}
