//! A stateful fake of Discord on loopback: the REST API (one axum app under `/api/v10`) and the
//! gateway (one websocket listener speaking plain Text JSON frames), plus builders that shape
//! gateway payloads the way Discord sends them and sign HTTP interactions with a test-only key.
//!
//! serenity 0.12.5 is pointed at it with
//! `HttpBuilder::new(token).proxy(fake.api_url()).ratelimiter_disabled(true)` (with the
//! ratelimiter on, serenity ignores the proxy) and `ClientBuilder::new_with_http(http, intents)`,
//! which asks `GET /api/v10/gateway` for the websocket URL.
//!
//! What the fake models, per the Discord docs (shapes in `/work/shared/fixtures/platforms/discord_*`):
//! - Channels: the text channel [`CHANNEL_ID`] in guild [`GUILD_ID`] exists from the start; more
//!   with [`FakeDiscord::add_channel`]. A thread started from a message gets the message's id and is
//!   a channel of type 11. Posting to an unknown channel answers 404 code 10003.
//! - Messages: ids are real-looking snowflakes (time since the Discord epoch, strictly increasing);
//!   the full message object is returned, with `content`, `embeds` and `components` as sent.
//! - Interactions: an interaction exists once it was dispatched as INTERACTION_CREATE (or declared
//!   with [`FakeDiscord::expect_interaction`]). Its callback must come within 3 s (configurable),
//!   once (a second one is 400 code 40060). Callback type 7 (UPDATE_MESSAGE) edits the message the
//!   button is on; type 4 and 5 post a message to the channel unless ephemeral (flag 64); `@original`
//!   edits whichever message the callback produced (for types 6 and 7: the button's message).
//! - Gateway: HELLO, IDENTIFY → READY (`guilds: []`), heartbeats → ACK, and RESUME: a known
//!   session resumes (missed dispatches are replayed, then RESUMED), an unknown one (or any, after
//!   [`FakeDiscord::reject_resumes`]) gets op 9 `d: false`. Only one session receives dispatches:
//!   the one that identified or resumed last. Sessions open at once are counted, with their
//!   high-water mark, so a test of several bot processes can tell that only one held the gateway.
//!
//! Not modelled: permissions, attachments/multipart, gateway events the fake would emit by itself
//! (MESSAGE_CREATE, THREAD_CREATE, ...), zlib compression, real rate-limit buckets (429s only come
//! from [`FakeDiscord::fail_next`]).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The guild of the channels the fake starts with (the id of Discord's documented examples).
pub const GUILD_ID: u64 = 290_926_798_626_357_999;
/// A text channel named `releases` in [`GUILD_ID`], present from the start.
pub const CHANNEL_ID: u64 = 645_027_906_669_510_667;
/// The test-only ed25519 seed of `discord_ed25519_signature_example.json` (sha256 of
/// "release-bot test-only ed25519 seed"). Never use it outside tests.
pub const TEST_PRIVATE_SEED_HEX: &str =
    "332472fdba20f1d55badcb0f2b3a24d204c4b1cf8e2208316362cfad25dac0c9";
/// The public key matching [`TEST_PRIVATE_SEED_HEX`]: what the bot is configured with.
pub const TEST_PUBLIC_KEY_HEX: &str =
    "a6c48170b487727b095db0d998035e4690357fae1b087cc7777c506f95d0a700";
/// Discord's default heartbeat interval is about 41.25 s.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 41_250;
/// Discord invalidates an interaction token that was not answered within 3 s.
pub const INTERACTION_DEADLINE: Duration = Duration::from_secs(3);

const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
const MAX_CONTENT_CHARS: usize = 2000;
/// Message flag EPHEMERAL (1 << 6).
const EPHEMERAL: u64 = 64;
/// Message flag HAS_THREAD (1 << 5).
const HAS_THREAD: u64 = 32;
/// Message flag LOADING (1 << 7): the "thinking…" message of a deferred response.
const LOADING: u64 = 128;
const JOINED_AT: &str = "2017-03-13T19:19:14.040000+00:00";

/// The REST endpoints the fake serves, for [`FakeDiscord::calls`], [`FakeDiscord::requests`]
/// and [`FakeDiscord::fail_next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /gateway`
    GetGateway,
    /// `GET /gateway/bot`
    GetGatewayBot,
    /// `GET /users/@me`
    GetCurrentUser,
    /// `GET /oauth2/applications/@me`
    GetCurrentApplication,
    /// `POST /channels/{c}/messages`
    CreateMessage,
    /// `GET /channels/{c}/messages/{m}`
    GetMessage,
    /// `PATCH /channels/{c}/messages/{m}`
    EditMessage,
    /// `POST /channels/{c}/messages/{m}/threads`
    CreateThread,
    /// `PUT /channels/{c}/messages/{m}/reactions/{emoji}/@me`
    CreateReaction,
    /// `DELETE /channels/{c}/messages/{m}/reactions/{emoji}/@me`
    DeleteReaction,
    /// `GET /channels/{c}/messages/{m}/reactions/{emoji}?after=&limit=`: who reacted
    GetReactionUsers,
    /// `PUT /applications/{app}/commands` and `/applications/{app}/guilds/{g}/commands`
    BulkOverwriteCommands,
    /// `POST /applications/{app}/commands` and `/applications/{app}/guilds/{g}/commands`
    CreateCommand,
    /// `POST /interactions/{id}/{token}/callback`
    Callback,
    /// `PATCH /webhooks/{app}/{token}/messages/@original`
    EditOriginal,
    /// `POST /webhooks/{app}/{token}`
    CreateFollowup,
}

/// Where slash commands are registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Global,
    Guild(u64),
}

/// A message in a channel or thread, with its latest content.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: u64,
    pub channel_id: u64,
    /// The author's user id: the bot's for everything posted through REST.
    pub author_id: u64,
    pub content: String,
    /// The embeds array as last sent (`[]` when none).
    pub embeds: Value,
    /// The components array (action rows) as last sent (`[]` when none).
    pub components: Value,
    pub flags: u64,
    /// ISO 8601 creation time, consistent with the snowflake.
    pub timestamp: String,
    pub edited_timestamp: Option<String>,
    /// Successful edits (PATCH, callback type 7, `@original`).
    pub edits: usize,
    /// When each edit arrived.
    pub edited_at: Vec<Instant>,
    /// Emojis the bot reacted with (`✅`, or `name:id` for custom emojis), in order.
    pub reactions: Vec<String>,
    /// The thread started from this message (same id as the message).
    pub thread: Option<Channel>,
}

/// A channel the fake knows: a text channel (type 0) or a public thread (type 11).
#[derive(Debug, Clone, PartialEq)]
pub struct Channel {
    pub id: u64,
    pub kind: u64,
    pub name: String,
    pub guild_id: Option<u64>,
    /// For threads: the channel of the message the thread was started from.
    pub parent_id: Option<u64>,
    pub created: String,
}

/// An interaction callback (`POST /interactions/{id}/{token}/callback`) that Discord accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Callback {
    pub interaction_id: u64,
    pub token: String,
    /// The response type: 1 PONG, 4 message, 5 deferred message, 6 deferred update, 7 update, 9 modal.
    pub kind: u64,
    /// `data` as sent (`null` when absent).
    pub data: Value,
    pub at: Instant,
    /// Time since the interaction was dispatched (None for interactions declared with
    /// [`FakeDiscord::expect_interaction`]).
    pub latency: Option<Duration>,
}

/// An IDENTIFY (op 2) the gateway received.
#[derive(Debug, Clone, PartialEq)]
pub struct Identify {
    /// The token as sent: serenity 0.12.5 sends `Bot <token>` (the fake accepts it with or without
    /// the prefix).
    pub token: String,
    pub intents: u64,
    /// The whole `d` object.
    pub data: Value,
}

/// A RESUME (op 6) the gateway received, and whether the fake let it resume.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    pub token: String,
    pub session_id: String,
    pub seq: u64,
    pub accepted: bool,
}

struct Interaction {
    token: String,
    channel_id: Option<u64>,
    /// The message a component is on.
    message: Option<(u64, u64)>,
    dispatched_at: Option<Instant>,
    acknowledged: bool,
    /// The message `@original` refers to: (channel, id), or an ephemeral stand-in.
    original: Option<Original>,
}

#[derive(Clone)]
enum Original {
    InChannel(u64, u64),
    Ephemeral(Value),
}

enum Out {
    Frame(String),
    /// Drop the TCP connection without a websocket close frame.
    Drop,
}

struct Session {
    seq: u64,
    /// Every dispatch sent in this session, for replay on RESUME.
    log: Vec<(u64, String)>,
}

struct Live {
    conn: u64,
    session_id: String,
}

#[derive(Default)]
struct Gateway {
    url: String,
    heartbeat_interval: u64,
    next_conn: u64,
    next_session: u64,
    conns: HashMap<u64, mpsc::UnboundedSender<Out>>,
    live: Option<Live>,
    sessions: HashMap<String, Session>,
    identifies: Vec<Identify>,
    resumes: Vec<Resume>,
    heartbeats: usize,
    connections: usize,
    reject_resumes: bool,
    /// Connections with a session (identified or resumed) that are still open.
    sessioned: std::collections::HashSet<u64>,
    /// The most connections with a session open at one time.
    max_sessioned: usize,
}

/// How the fake answers during an outage ([`FakeDiscord::start_outage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutageAnswer {
    /// 500 with Discord's error JSON.
    ServerError,
    /// The documented 429 with the current [`FakeDiscord::set_retry_after`].
    RateLimited,
}

/// The clock the fake judges rate limits and edit pacing by (a test's manual clock).
pub type FakeClock = Arc<dyn Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync>;

/// The routes the bot keeps cards current with; an outage answers them.
const CARD_ROUTES: [Route; 3] = [
    Route::CreateMessage,
    Route::EditMessage,
    Route::CreateThread,
];

#[derive(Default)]
struct FakeState {
    /// Routes whose requests are held: for a while, or (`None`) never answered.
    hangs: HashMap<Route, Option<Duration>>,
    held: HashMap<Route, usize>,
    outage: Option<(Vec<OutageAnswer>, usize)>,
    clock: Option<FakeClock>,
    /// Until when the last 429 asked the bot to wait (on `clock`), per route.
    limited_until: HashMap<Route, chrono::DateTime<chrono::Utc>>,
    /// When the last 429 was answered, per route.
    limited_at: HashMap<Route, chrono::DateTime<chrono::Utc>>,
    violations: Vec<String>,
    /// 4xx answers the fake gave by itself for a card route (not injected).
    refusals: Vec<(Route, String)>,
    /// Successful edits per message id, on `clock`.
    edit_times: HashMap<u64, Vec<chrono::DateTime<chrono::Utc>>>,
    token: String,
    application_id: u64,
    api_url: String,
    last_id: u64,
    channels: HashMap<u64, Channel>,
    /// Every message, in post order.
    messages: Vec<Message>,
    /// People's reactions: (message id, emoji) → user ids, as Discord holds them.
    user_reactions: HashMap<(u64, String), std::collections::BTreeSet<u64>>,
    calls: HashMap<Route, usize>,
    requests: HashMap<Route, Vec<Value>>,
    unknown: Vec<String>,
    faults: HashMap<Route, usize>,
    /// Requests to answer 403 Missing Access (50001), per route.
    refusals_left: HashMap<Route, usize>,
    retry_after: f64,
    commands: HashMap<Scope, Vec<Value>>,
    interactions: HashMap<u64, Interaction>,
    interaction_deadline: Option<Duration>,
    callbacks: Vec<Callback>,
    followups: HashMap<String, Vec<Value>>,
    original_edits: HashMap<String, Vec<Value>>,
    gateway: Gateway,
}

type Shared = Arc<Mutex<FakeState>>;

fn lock(state: &Mutex<FakeState>) -> MutexGuard<'_, FakeState> {
    // A panicking test thread must not hide the fake's state from the rest of the test.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Inner {
    state: Shared,
    api_url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for (_, conn) in lock(&self.state).gateway.conns.drain() {
            let _ = conn.send(Out::Drop);
        }
    }
}

/// Handle to a running fake; clones share it. Both listeners stop when the last clone is dropped.
#[derive(Clone)]
pub struct FakeDiscord {
    inner: Arc<Inner>,
}

impl FakeDiscord {
    /// Starts the REST API and the gateway on `127.0.0.1:0`. REST requests must carry
    /// `Authorization: Bot {bot_token}` (others get 401 with Discord's error JSON; the interaction
    /// callback and webhook routes are authenticated by their token instead, as on Discord).
    /// `application_id` is also the bot's user id, as for every application created since 2020.
    pub async fn start(bot_token: &str, application_id: u64) -> FakeDiscord {
        let rest = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Discord REST API to loopback");
        let ws = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Discord gateway to loopback");
        let api_url = format!(
            "http://{}",
            rest.local_addr()
                .expect("local address of the fake REST API")
        );
        let ws_url = format!(
            "ws://{}",
            ws.local_addr().expect("local address of the fake gateway")
        );
        let mut channels = HashMap::new();
        channels.insert(
            CHANNEL_ID,
            Channel {
                id: CHANNEL_ID,
                kind: 0,
                name: "releases".into(),
                guild_id: Some(GUILD_ID),
                parent_id: None,
                created: now_iso(),
            },
        );
        let state: Shared = Arc::new(Mutex::new(FakeState {
            token: bot_token.to_string(),
            application_id,
            api_url: api_url.clone(),
            channels,
            retry_after: 0.5,
            interaction_deadline: Some(INTERACTION_DEADLINE),
            gateway: Gateway {
                url: ws_url,
                heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL_MS,
                ..Gateway::default()
            },
            ..FakeState::default()
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let rest_task = tokio::spawn(async move {
            // Ends only when the listener fails or the task is aborted on drop.
            let _ = axum::serve(rest, app).await;
        });
        let gateway_task = tokio::spawn(serve_gateway(ws, state.clone()));
        FakeDiscord {
            inner: Arc::new(Inner {
                state,
                api_url,
                tasks: vec![rest_task, gateway_task],
            }),
        }
    }

    /// `http://127.0.0.1:PORT`: the `[discord] api_url`, i.e. serenity's `HttpBuilder::proxy`
    /// (serenity appends `/api/v10/...`).
    pub fn api_url(&self) -> String {
        self.inner.api_url.clone()
    }

    /// `ws://127.0.0.1:PORT`, what `GET /gateway` answers.
    pub fn gateway_url(&self) -> String {
        self.state().gateway.url.clone()
    }

    pub fn application_id(&self) -> u64 {
        self.state().application_id
    }

    /// The bot's user id (equal to the application id).
    pub fn bot_user_id(&self) -> u64 {
        self.application_id()
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        lock(&self.inner.state)
    }

    // ----- knobs -------------------------------------------------------------------------

    /// Adds a text channel (type 0) in `guild_id` (None: a DM channel, type 1).
    pub fn add_channel(&self, channel_id: u64, guild_id: Option<u64>) {
        self.state().channels.insert(
            channel_id,
            Channel {
                id: channel_id,
                kind: if guild_id.is_some() { 0 } else { 1 },
                name: format!("channel-{channel_id}"),
                guild_id,
                parent_id: None,
                created: now_iso(),
            },
        );
    }

    /// The next `times` requests to `route` get Discord's documented 429 (user scope) with the
    /// current [`Self::set_retry_after`] value (default 0.5 s).
    pub fn fail_next(&self, route: Route, times: usize) {
        *self.state().faults.entry(route).or_default() += times;
    }

    /// The next `times` requests to `route` get 403 `{"code": 50001, "message": "Missing Access"}`,
    /// as when the bot may not post in a channel or thread.
    pub fn refuse_next(&self, route: Route, times: usize) {
        *self.state().refusals_left.entry(route).or_default() += times;
    }

    /// Requests to `route` are answered only after `delay`, or never (`None`), from now on.
    pub fn hang(&self, route: Route, delay: Option<Duration>) {
        self.state().hangs.insert(route, delay);
    }

    /// Requests to `route` that arrived while it was held (answered or not).
    pub fn held_calls(&self, route: Route) -> usize {
        self.state().held.get(&route).copied().unwrap_or(0)
    }

    /// Until [`Self::end_outage`], card posts, edits and thread creations are answered with
    /// `answers` in turn.
    pub fn start_outage(&self, answers: Vec<OutageAnswer>) {
        self.state().outage = Some((answers, 0));
    }

    /// The latest time any 429 of the fake asked the bot to wait until (on its clock).
    pub fn rate_limited_until(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.state().limited_until.values().max().copied()
    }

    pub fn end_outage(&self) {
        self.state().outage = None;
    }

    /// Judges `retry_after` and edit pacing by `clock` (the bot's real-time clock in a test).
    pub fn use_clock(&self, clock: FakeClock) {
        self.state().clock = Some(clock);
    }

    /// Requests made to a route after a 429 and before its `retry_after` had passed (on the
    /// clock of [`Self::use_clock`]; one at the 429's own instant was in flight and does not
    /// count).
    pub fn rate_limit_violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }

    /// `(route, body)` of every 4xx the fake answered by itself on a card route.
    pub fn refusals(&self) -> Vec<(Route, String)> {
        self.state().refusals.clone()
    }

    /// When each successful edit of message `id` happened, on the clock of [`Self::use_clock`].
    pub fn edit_times(&self, id: u64) -> Vec<chrono::DateTime<chrono::Utc>> {
        self.state()
            .edit_times
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    /// `retry_after` (seconds, float) of injected 429s; `Retry-After` is its ceiling, as on Discord.
    pub fn set_retry_after(&self, seconds: f64) {
        self.state().retry_after = seconds;
    }

    /// How long after its dispatch an interaction may still be answered (`None`: forever).
    pub fn set_interaction_deadline(&self, deadline: Option<Duration>) {
        self.state().interaction_deadline = deadline;
    }

    /// The `heartbeat_interval` sent in HELLO to connections opened from now on.
    pub fn set_heartbeat_interval(&self, millis: u64) {
        self.state().gateway.heartbeat_interval = millis;
    }

    /// From now on every RESUME is answered with op 9 `d: false` (so the bot must re-identify).
    pub fn reject_resumes(&self, reject: bool) {
        self.state().gateway.reject_resumes = reject;
    }

    /// Lets callbacks and webhooks for this INTERACTION_CREATE `data` through without dispatching
    /// it (for interactions delivered to the bot's HTTP endpoint instead of the gateway).
    pub fn expect_interaction(&self, data: &Value) {
        register_interaction(&mut self.state(), data, None);
    }

    // ----- recorded state ----------------------------------------------------------------

    /// Messages of `channel` (a channel or thread id) in post order, with their latest content.
    pub fn messages(&self, channel: u64) -> Vec<Message> {
        self.state()
            .messages
            .iter()
            .filter(|m| m.channel_id == channel)
            .cloned()
            .collect()
    }

    pub fn message(&self, channel: u64, id: u64) -> Option<Message> {
        self.state()
            .messages
            .iter()
            .find(|m| m.channel_id == channel && m.id == id)
            .cloned()
    }

    /// Messages in the thread started from message `message_id` (empty when there is none).
    pub fn thread(&self, message_id: u64) -> Vec<Message> {
        self.messages(message_id)
    }

    pub fn channel(&self, channel_id: u64) -> Option<Channel> {
        self.state().channels.get(&channel_id).cloned()
    }

    /// Requests that reached `route` (authorized ones, including those answered with a 429).
    pub fn calls(&self, route: Route) -> usize {
        self.state().calls.get(&route).copied().unwrap_or(0)
    }

    /// JSON bodies of the requests counted by [`Self::calls`] (`null` for bodyless ones).
    pub fn requests(&self, route: Route) -> Vec<Value> {
        self.state()
            .requests
            .get(&route)
            .cloned()
            .unwrap_or_default()
    }

    /// `METHOD /path` of requests to endpoints the fake does not serve (answered 404).
    pub fn unknown_requests(&self) -> Vec<String> {
        self.state().unknown.clone()
    }

    /// Registered commands of `scope`, as Discord returns them (ids minted).
    pub fn registered_commands(&self, scope: Scope) -> Vec<Value> {
        self.state()
            .commands
            .get(&scope)
            .cloned()
            .unwrap_or_default()
    }

    /// Accepted interaction callbacks, in arrival order.
    pub fn callbacks(&self) -> Vec<Callback> {
        self.state().callbacks.clone()
    }

    /// Waits for the callback of `interaction_id`; panics after `timeout`.
    pub async fn wait_callback(&self, interaction_id: u64, timeout: Duration) -> Callback {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(callback) = self
                .state()
                .callbacks
                .iter()
                .find(|c| c.interaction_id == interaction_id)
            {
                return callback.clone();
            }
            if Instant::now() >= deadline {
                panic!(
                    "no callback for interaction {interaction_id} within {timeout:?}; callbacks: {:#?}",
                    self.callbacks()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Follow-up message bodies (`POST /webhooks/{app}/{token}`) for interaction `token`.
    pub fn followups(&self, token: &str) -> Vec<Value> {
        self.state()
            .followups
            .get(token)
            .cloned()
            .unwrap_or_default()
    }

    /// `PATCH /webhooks/{app}/{token}/messages/@original` bodies for interaction `token`.
    pub fn original_edits(&self, token: &str) -> Vec<Value> {
        self.state()
            .original_edits
            .get(token)
            .cloned()
            .unwrap_or_default()
    }

    // ----- gateway -----------------------------------------------------------------------

    /// Every IDENTIFY received, in order.
    pub fn identifies(&self) -> Vec<Identify> {
        self.state().gateway.identifies.clone()
    }

    /// Every RESUME received, in order.
    pub fn resumes(&self) -> Vec<Resume> {
        self.state().gateway.resumes.clone()
    }

    /// Websocket connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state().gateway.connections
    }

    /// Heartbeats (op 1) received so far.
    pub fn heartbeats(&self) -> usize {
        self.state().gateway.heartbeats
    }

    /// Open connections that have a session (identified or resumed): the bot's live gateway
    /// sessions, however many processes it runs in.
    pub fn open_sessions(&self) -> usize {
        self.state().gateway.sessioned.len()
    }

    /// The most sessions that were open at one time since the fake started.
    pub fn max_open_sessions(&self) -> usize {
        self.state().gateway.max_sessioned
    }

    /// Whether a session is ready to receive dispatches.
    pub fn session_ready(&self) -> bool {
        self.state().gateway.live.is_some()
    }

    /// Waits until the bot has sent `n` IDENTIFYs in total; panics after `timeout`.
    pub async fn wait_identifies(&self, n: usize, timeout: Duration) -> Vec<Identify> {
        let deadline = Instant::now() + timeout;
        loop {
            let identifies = self.identifies();
            if identifies.len() >= n {
                return identifies;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the bot identified {} time(s), not {n}, within {timeout:?} ({} connection(s), resumes: {:?})",
                    identifies.len(),
                    self.connections(),
                    self.resumes()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until a session is ready (identified or resumed); panics after `timeout`.
    pub async fn wait_session(&self, timeout: Duration) {
        if let Err(why) = self.wait_live(timeout).await {
            panic!("{why}");
        }
    }

    async fn wait_live(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.session_ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let state = self.state();
                return Err(format!(
                    "no gateway session became ready within {timeout:?} ({} connection(s), {} identify(s), resumes: {:?})",
                    state.gateway.connections,
                    state.gateway.identifies.len(),
                    state.gateway.resumes
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends an op 0 dispatch `event_name` with `data` to the ready session, waiting up to 20 s
    /// for one; returns its sequence number. Panics if no session gets ready.
    pub async fn dispatch(&self, event_name: &str, data: Value) -> u64 {
        // A reaction event reports a change Discord has already made to the message.
        let added = match event_name {
            "MESSAGE_REACTION_ADD" => Some(true),
            "MESSAGE_REACTION_REMOVE" => Some(false),
            _ => None,
        };
        if let Some(added) = added {
            let snowflake = |key: &str| data[key].as_str().and_then(|v| v.parse::<u64>().ok());
            let emoji = data["emoji"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if let (Some(message), Some(user)) = (snowflake("message_id"), snowflake("user_id")) {
                self.set_user_reaction(message, &emoji, user, added);
            }
        }
        match self
            .try_dispatch(event_name, data, Duration::from_secs(20))
            .await
        {
            Ok(seq) => seq,
            Err(why) => panic!("cannot dispatch {event_name}: {why}"),
        }
    }

    /// Whether `user` has reacted with `emoji` on `message`, as `GET …/reactions/{emoji}` answers.
    /// [`Self::dispatch`] keeps it in step with the reaction events it sends; tests that deliver
    /// events out of order set it themselves and send with [`Self::try_dispatch`].
    pub fn set_user_reaction(&self, message: u64, emoji: &str, user: u64, present: bool) {
        let mut state = self.state();
        let users = state
            .user_reactions
            .entry((message, emoji.to_string()))
            .or_default();
        if present {
            users.insert(user);
        } else {
            users.remove(&user);
        }
    }

    /// [`Self::dispatch`] returning an error instead of panicking.
    pub async fn try_dispatch(
        &self,
        event_name: &str,
        data: Value,
        timeout: Duration,
    ) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.wait_live(deadline.saturating_duration_since(Instant::now()))
                .await?;
            let mut state = self.state();
            if event_name == "INTERACTION_CREATE" {
                register_interaction(&mut state, &data, Some(Instant::now()));
            }
            let gateway = &mut state.gateway;
            let Some(live) = &gateway.live else { continue };
            let (conn, session_id) = (live.conn, live.session_id.clone());
            let Some(tx) = gateway.conns.get(&conn).cloned() else {
                gateway.live = None;
                continue;
            };
            let session = gateway
                .sessions
                .get_mut(&session_id)
                .expect("the live session is known");
            session.seq += 1;
            let seq = session.seq;
            let frame = json!({"op": 0, "t": event_name, "s": seq, "d": data}).to_string();
            session.log.push((seq, frame.clone()));
            if tx.send(Out::Frame(frame)).is_ok() {
                return Ok(seq);
            }
            gateway.live = None;
        }
    }

    /// Closes the live connection abruptly (TCP close without a websocket close frame). The
    /// session stays resumable.
    pub fn drop_connection(&self) {
        let mut state = self.state();
        let gateway = &mut state.gateway;
        if let Some(live) = gateway.live.take() {
            if let Some(tx) = gateway.conns.get(&live.conn) {
                let _ = tx.send(Out::Drop);
            }
        }
    }

    /// Sends op 7 RECONNECT to the live connection; the session stays resumable.
    pub fn send_reconnect(&self) {
        self.send_to_live(json!({"op": 7, "d": null}), false);
    }

    /// Sends op 9 INVALID SESSION; with `resumable: false` the session is forgotten, so a RESUME
    /// of it is answered with op 9 `d: false` again.
    pub fn send_invalid_session(&self, resumable: bool) {
        self.send_to_live(json!({"op": 9, "d": resumable}), !resumable);
    }

    fn send_to_live(&self, frame: Value, forget_session: bool) {
        let mut state = self.state();
        let gateway = &mut state.gateway;
        let Some(live) = gateway.live.take() else {
            panic!("no live gateway session to send {frame} to");
        };
        if let Some(tx) = gateway.conns.get(&live.conn) {
            let _ = tx.send(Out::Frame(frame.to_string()));
        }
        if forget_session {
            gateway.sessions.remove(&live.session_id);
        }
    }

    // ----- payload builders --------------------------------------------------------------

    /// INTERACTION_CREATE `data` (type 2) for `/release <subcommand> name:value ...` typed by
    /// `user_id` with `roles` (role ids as decimal strings). String options; an empty
    /// `subcommand` puts the options at the top level.
    #[allow(clippy::too_many_arguments)]
    pub fn command_interaction(
        &self,
        interaction_id: u64,
        token: &str,
        user_id: u64,
        roles: &[&str],
        channel_id: u64,
        guild_id: u64,
        subcommand: &str,
        options: &[(&str, &str)],
    ) -> Value {
        let options: Vec<(&str, Value)> = options.iter().map(|(n, v)| (*n, json!(v))).collect();
        self.command_interaction_values(
            interaction_id,
            token,
            user_id,
            roles,
            channel_id,
            guild_id,
            subcommand,
            &options,
        )
    }

    /// [`Self::command_interaction`] with typed option values: a JSON string is type 3 STRING, an
    /// integer type 4 INTEGER, a bool type 5 BOOLEAN, another number type 10 NUMBER.
    #[allow(clippy::too_many_arguments)]
    pub fn command_interaction_values(
        &self,
        interaction_id: u64,
        token: &str,
        user_id: u64,
        roles: &[&str],
        channel_id: u64,
        guild_id: u64,
        subcommand: &str,
        options: &[(&str, Value)],
    ) -> Value {
        let options: Vec<Value> = options
            .iter()
            .map(|(name, value)| {
                let kind = match value {
                    Value::String(_) => 3,
                    Value::Bool(_) => 5,
                    Value::Number(n) if n.is_i64() || n.is_u64() => 4,
                    Value::Number(_) => 10,
                    other => panic!("unsupported option value for {name}: {other}"),
                };
                json!({"name": name, "type": kind, "value": value})
            })
            .collect();
        let options = if subcommand.is_empty() {
            options
        } else {
            vec![json!({"name": subcommand, "type": 1, "options": options})]
        };
        let command_id = self
            .registered_commands(Scope::Guild(guild_id))
            .into_iter()
            .chain(self.registered_commands(Scope::Global))
            .find(|c| c["name"] == "release")
            .and_then(|c| c["id"].as_str().map(str::to_string))
            .unwrap_or_else(|| "1100000000000000100".into());
        let mut interaction = self.interaction_base(
            interaction_id,
            2,
            token,
            user_id,
            roles,
            channel_id,
            Some(guild_id),
        );
        interaction["data"] = json!({
            "id": command_id,
            "name": "release",
            "type": 1,
            "options": options,
            "guild_id": guild_id.to_string(),
        });
        interaction
    }

    /// INTERACTION_CREATE `data` (type 3, `component_type: 2`) for `user_id` clicking the button
    /// `custom_id` on `message` (a stored message: the whole object is included, as Discord does).
    pub fn button_interaction(
        &self,
        interaction_id: u64,
        token: &str,
        user_id: u64,
        roles: &[&str],
        message: &Message,
        custom_id: &str,
    ) -> Value {
        let guild_id = self.guild_of(message.channel_id);
        let mut interaction = self.interaction_base(
            interaction_id,
            3,
            token,
            user_id,
            roles,
            message.channel_id,
            guild_id,
        );
        interaction["data"] = json!({"custom_id": custom_id, "component_type": 2});
        interaction["message"] = message_json(message, self.bot_user_id());
        interaction
    }

    /// MESSAGE_REACTION_ADD `data`: `user_id` (a member with `roles`) added `emoji` (`✅`, or
    /// `name:id` for a custom emoji) to `message_id`.
    #[allow(clippy::too_many_arguments)]
    pub fn reaction_add(
        &self,
        user_id: u64,
        roles: &[&str],
        channel_id: u64,
        guild_id: u64,
        message_id: u64,
        emoji: &str,
    ) -> Value {
        let mut data = self.reaction_remove(user_id, channel_id, guild_id, message_id, emoji);
        data["member"] = member_json(user_id, roles);
        data["burst_colors"] = json!([]);
        if let Some(message) = self.message(channel_id, message_id) {
            data["message_author_id"] = json!(message.author_id.to_string());
        }
        data
    }

    /// MESSAGE_REACTION_REMOVE `data` (no `member`, per the docs).
    pub fn reaction_remove(
        &self,
        user_id: u64,
        channel_id: u64,
        guild_id: u64,
        message_id: u64,
        emoji: &str,
    ) -> Value {
        json!({
            "user_id": user_id.to_string(),
            "channel_id": channel_id.to_string(),
            "message_id": message_id.to_string(),
            "guild_id": guild_id.to_string(),
            "emoji": emoji_json(emoji),
            "burst": false,
            "type": 0,
        })
    }

    fn guild_of(&self, channel_id: u64) -> Option<u64> {
        self.state()
            .channels
            .get(&channel_id)
            .and_then(|c| c.guild_id)
    }

    #[allow(clippy::too_many_arguments)]
    fn interaction_base(
        &self,
        interaction_id: u64,
        kind: u64,
        token: &str,
        user_id: u64,
        roles: &[&str],
        channel_id: u64,
        guild_id: Option<u64>,
    ) -> Value {
        let channel = self.channel(channel_id);
        let guild = guild_id.map(|g| g.to_string());
        let mut interaction = json!({
            "id": interaction_id.to_string(),
            "application_id": self.application_id().to_string(),
            "type": kind,
            "channel_id": channel_id.to_string(),
            "channel": {
                "id": channel_id.to_string(),
                "type": channel.as_ref().map_or(0, |c| c.kind),
                "name": channel.as_ref().map_or_else(|| "releases".to_string(), |c| c.name.clone()),
                "guild_id": guild,
            },
            "token": token,
            "version": 1,
            "app_permissions": "442368",
            "locale": "en-US",
            "entitlements": [],
            "context": if guild_id.is_some() { 0 } else { 1 },
            "attachment_size_limit": 10_485_760,
        });
        match guild_id {
            Some(guild_id) => {
                interaction["guild_id"] = json!(guild_id.to_string());
                interaction["guild_locale"] = json!("en-US");
                interaction["member"] = member_json(user_id, roles);
                interaction["authorizing_integration_owners"] = json!({"0": guild_id.to_string()});
            }
            None => {
                interaction["user"] = user_json(user_id);
                interaction["authorizing_integration_owners"] = json!({});
            }
        }
        interaction
    }
}

// ----- free payload helpers ------------------------------------------------------------------

/// The documented PING body of `discord_ed25519_signature_example.json` (type 1).
pub fn ping_interaction() -> String {
    r#"{"id":"1100000000000000001","application_id":"1100000000000000000","type":1,"token":"A_UNIQUE_TOKEN","version":1}"#
        .to_string()
}

/// Signs `timestamp + body` with the test-only key: returns the `X-Signature-Ed25519` value
/// (hex) and the `X-Signature-Timestamp` value.
pub fn sign_interaction(body: &str, timestamp: &str) -> (String, String) {
    use ed25519_dalek::{Signer, SigningKey};
    let seed: [u8; 32] = hex::decode(TEST_PRIVATE_SEED_HEX)
        .expect("hex seed")
        .try_into()
        .expect("32-byte seed");
    let key = SigningKey::from_bytes(&seed);
    let signature = key.sign(format!("{timestamp}{body}").as_bytes());
    (hex::encode(signature.to_bytes()), timestamp.to_string())
}

/// Unix seconds now, as Discord puts in `X-Signature-Timestamp`.
pub fn now_timestamp() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        .to_string()
}

pub fn user_json(user_id: u64) -> Value {
    json!({
        "id": user_id.to_string(),
        "username": format!("user{user_id}"),
        "global_name": null,
        "avatar": null,
        "discriminator": "0",
        "public_flags": 0,
    })
}

/// A guild member object as Discord sends it in interactions and MESSAGE_REACTION_ADD.
pub fn member_json(user_id: u64, roles: &[&str]) -> Value {
    json!({
        "user": user_json(user_id),
        "roles": roles,
        "premium_since": null,
        "permissions": "2147483647",
        "pending": false,
        "nick": null,
        "avatar": null,
        "mute": false,
        "deaf": false,
        "joined_at": JOINED_AT,
        "flags": 0,
    })
}

fn emoji_json(emoji: &str) -> Value {
    match emoji.split_once(':') {
        Some((name, id)) => json!({"id": id, "name": name, "animated": false}),
        None => json!({"id": null, "name": emoji}),
    }
}

fn bot_user_json(bot_id: u64) -> Value {
    json!({
        "id": bot_id.to_string(),
        "username": "releasebot",
        "global_name": null,
        "avatar": null,
        "discriminator": "0",
        "public_flags": 0,
        "bot": true,
    })
}

fn channel_json(channel: &Channel, state: &FakeState) -> Value {
    let mut value = json!({
        "id": channel.id.to_string(),
        "type": channel.kind,
        "name": channel.name,
        "flags": 0,
    });
    if let Some(guild_id) = channel.guild_id {
        value["guild_id"] = json!(guild_id.to_string());
    }
    if channel.kind == 11 {
        let in_thread: Vec<&Message> = state
            .messages
            .iter()
            .filter(|m| m.channel_id == channel.id)
            .collect();
        value["parent_id"] = json!(channel.parent_id.map(|p| p.to_string()));
        value["owner_id"] = json!(state.application_id.to_string());
        value["last_message_id"] = json!(in_thread.last().map(|m| m.id.to_string()));
        value["message_count"] = json!(in_thread.len());
        value["total_message_sent"] = json!(in_thread.len());
        value["member_count"] = json!(1);
        value["rate_limit_per_user"] = json!(0);
        value["thread_metadata"] = json!({
            "archived": false,
            "auto_archive_duration": 1440,
            "archive_timestamp": channel.created,
            "locked": false,
            "create_timestamp": channel.created,
        });
    } else {
        value["position"] = json!(0);
        value["permission_overwrites"] = json!([]);
        value["nsfw"] = json!(false);
        value["parent_id"] = json!(null);
        value["last_message_id"] = json!(state
            .messages
            .iter()
            .rfind(|m| m.channel_id == channel.id)
            .map(|m| m.id.to_string()));
    }
    value
}

/// The full message object of `message`, as Discord's REST API returns it.
pub fn message_json(message: &Message, bot_id: u64) -> Value {
    let mut counts: Vec<(String, u64)> = Vec::new();
    for emoji in &message.reactions {
        match counts.iter_mut().find(|(e, _)| e == emoji) {
            Some((_, n)) => *n += 1,
            None => counts.push((emoji.clone(), 1)),
        }
    }
    let reactions: Vec<Value> = counts
        .iter()
        .map(|(emoji, count)| {
            json!({
                "count": count,
                "count_details": {"burst": 0, "normal": count},
                "me": true,
                "me_burst": false,
                "emoji": emoji_json(emoji),
                "burst_colors": [],
            })
        })
        .collect();
    let author = if message.author_id == bot_id {
        bot_user_json(bot_id)
    } else {
        user_json(message.author_id)
    };
    let mut value = json!({
        "id": message.id.to_string(),
        "channel_id": message.channel_id.to_string(),
        "author": author,
        "content": message.content,
        "timestamp": message.timestamp,
        "edited_timestamp": message.edited_timestamp,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": message.embeds,
        "pinned": false,
        "type": 0,
        "flags": message.flags,
        "components": message.components,
    });
    if !reactions.is_empty() {
        value["reactions"] = json!(reactions);
    }
    if let Some(thread) = &message.thread {
        value["thread"] = json!({
            "id": thread.id.to_string(),
            "type": 11,
            "name": thread.name,
            "guild_id": thread.guild_id.map(|g| g.to_string()),
            "parent_id": thread.parent_id.map(|p| p.to_string()),
            "owner_id": bot_id.to_string(),
            "thread_metadata": {
                "archived": false,
                "auto_archive_duration": 1440,
                "archive_timestamp": thread.created,
                "locked": false,
            },
        });
    }
    value
}

fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

/// A strictly increasing snowflake whose timestamp part is now.
fn mint_id(state: &mut FakeState) -> u64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let id = ((now_ms - DISCORD_EPOCH_MS) << 22).max(state.last_id + 1);
    state.last_id = id;
    id
}

fn snowflake_of(value: &Value) -> Option<u64> {
    value.as_str().and_then(|s| s.parse().ok())
}

fn register_interaction(state: &mut FakeState, data: &Value, dispatched_at: Option<Instant>) {
    let id = snowflake_of(&data["id"])
        .unwrap_or_else(|| panic!("interaction without a snowflake id: {data}"));
    let token = data["token"]
        .as_str()
        .unwrap_or_else(|| panic!("interaction without a token: {data}"))
        .to_string();
    let message = match (
        snowflake_of(&data["message"]["channel_id"]),
        snowflake_of(&data["message"]["id"]),
    ) {
        (Some(channel), Some(id)) => Some((channel, id)),
        _ => None,
    };
    state.interactions.insert(
        id,
        Interaction {
            token,
            channel_id: snowflake_of(&data["channel_id"]),
            message,
            dispatched_at,
            acknowledged: false,
            original: None,
        },
    );
}

// ----- REST ----------------------------------------------------------------------------------

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, code: u64, message: &str) -> Response {
    json_response(status, json!({"message": message, "code": code}))
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn unknown_message() -> Response {
    error(StatusCode::NOT_FOUND, 10008, "Unknown Message")
}

fn unknown_channel() -> Response {
    error(StatusCode::NOT_FOUND, 10003, "Unknown Channel")
}

fn rate_limited(route: Route, retry_after: f64) -> Response {
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
        + retry_after;
    let mut response = json_response(
        StatusCode::TOO_MANY_REQUESTS,
        json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": false}),
    );
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        headers.insert(
            name,
            HeaderValue::from_str(&value).expect("ASCII header value"),
        );
    };
    set("retry-after", format!("{}", retry_after.ceil() as u64));
    set("x-ratelimit-limit", "5".into());
    set("x-ratelimit-remaining", "0".into());
    set("x-ratelimit-reset", format!("{reset:.3}"));
    set("x-ratelimit-reset-after", format!("{retry_after:.3}"));
    set(
        "x-ratelimit-bucket",
        format!("fake-{route:?}").to_lowercase(),
    );
    set("x-ratelimit-scope", "user".into());
    response
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(
                std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                16,
            ) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn route_of(method: &Method, segments: &[&str]) -> Option<Route> {
    use Route::*;
    let m = method.as_str();
    Some(match (m, segments) {
        ("GET", ["gateway"]) => GetGateway,
        ("GET", ["gateway", "bot"]) => GetGatewayBot,
        ("GET", ["users", "@me"]) => GetCurrentUser,
        ("GET", ["oauth2", "applications", "@me"]) => GetCurrentApplication,
        ("POST", ["channels", _, "messages"]) => CreateMessage,
        ("GET", ["channels", _, "messages", _]) => GetMessage,
        ("PATCH", ["channels", _, "messages", _]) => EditMessage,
        ("POST", ["channels", _, "messages", _, "threads"]) => CreateThread,
        ("PUT", ["channels", _, "messages", _, "reactions", _, "@me"]) => CreateReaction,
        ("DELETE", ["channels", _, "messages", _, "reactions", _, "@me"]) => DeleteReaction,
        ("GET", ["channels", _, "messages", _, "reactions", _]) => GetReactionUsers,
        ("PUT", ["applications", _, "commands"])
        | ("PUT", ["applications", _, "guilds", _, "commands"]) => BulkOverwriteCommands,
        ("POST", ["applications", _, "commands"])
        | ("POST", ["applications", _, "guilds", _, "commands"]) => CreateCommand,
        ("POST", ["interactions", _, _, "callback"]) => Callback,
        ("PATCH", ["webhooks", _, _, "messages", "@original"]) => EditOriginal,
        ("POST", ["webhooks", _, _]) => CreateFollowup,
        _ => return None,
    })
}

async fn handle(State(state): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            40005,
            "Request entity too large",
        );
    };
    let body: Value = if bytes.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(body) => body,
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    50109,
                    "The request body contains invalid JSON.",
                )
            }
        }
    };
    let segments: Vec<String> = path
        .strip_prefix("/api/v10/")
        .unwrap_or("")
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    if let Some(route) = route_of(&parts.method, &segments) {
        hold(&state, route).await;
    }
    let mut state = lock(&state);
    let Some(route) = route_of(&parts.method, &segments) else {
        state.unknown.push(format!("{} {path}", parts.method));
        return error(StatusCode::NOT_FOUND, 0, "404: Not Found");
    };
    let token_routes = matches!(
        route,
        Route::Callback | Route::EditOriginal | Route::CreateFollowup
    );
    if !token_routes && !authorized(&state, &parts.headers) {
        return error(StatusCode::UNAUTHORIZED, 0, "401: Unauthorized");
    }
    *state.calls.entry(route).or_default() += 1;
    state.requests.entry(route).or_default().push(body.clone());
    check_rate_limit(&mut state, route);
    if let Some(answer) = outage_answer(&mut state, route) {
        return answer;
    }
    if let Some(left) = state.faults.get_mut(&route).filter(|n| **n > 0) {
        *left -= 1;
        return rate_limited(route, state.retry_after);
    }
    if let Some(left) = state.refusals_left.get_mut(&route).filter(|n| **n > 0) {
        *left -= 1;
        return error(StatusCode::FORBIDDEN, 50001, "Missing Access");
    }
    let id = |i: usize| segments.get(i).and_then(|s| s.parse::<u64>().ok());
    match route {
        Route::GetGateway => json_response(StatusCode::OK, json!({"url": state.gateway.url})),
        Route::GetGatewayBot => json_response(
            StatusCode::OK,
            json!({
                "url": state.gateway.url,
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 1000 - state.gateway.identifies.len().min(1000),
                    "reset_after": 14_400_000,
                    "max_concurrency": 1,
                },
            }),
        ),
        Route::GetCurrentUser => {
            let mut user = bot_user_json(state.application_id);
            user["verified"] = json!(true);
            user["mfa_enabled"] = json!(false);
            user["flags"] = json!(0);
            json_response(StatusCode::OK, user)
        }
        Route::GetCurrentApplication => json_response(
            StatusCode::OK,
            json!({
                "id": state.application_id.to_string(),
                "name": "releasebot",
                "icon": null,
                "description": "",
                "bot_public": false,
                "bot_require_code_grant": false,
                "verify_key": TEST_PUBLIC_KEY_HEX,
                "flags": 0,
                "bot": bot_user_json(state.application_id),
                "owner": user_json(53_908_232_506_183_680),
                "team": null,
            }),
        ),
        Route::CreateMessage => match id(1) {
            Some(channel) => create_message(&mut state, channel, &body),
            None => unknown_channel(),
        },
        Route::GetMessage => match (id(1), id(3)) {
            (Some(c), Some(m)) => match state
                .messages
                .iter()
                .find(|x| x.channel_id == c && x.id == m)
            {
                Some(message) => {
                    json_response(StatusCode::OK, message_json(message, state.application_id))
                }
                None => unknown_message(),
            },
            _ => unknown_message(),
        },
        Route::EditMessage => match (id(1), id(3)) {
            (Some(c), Some(m)) => edit_message(&mut state, c, m, &body),
            _ => unknown_message(),
        },
        Route::CreateThread => match (id(1), id(3)) {
            (Some(c), Some(m)) => create_thread(&mut state, c, m, &body),
            _ => unknown_message(),
        },
        Route::CreateReaction | Route::DeleteReaction => {
            let emoji = segments[5].to_string();
            let (Some(c), Some(m)) = (id(1), id(3)) else {
                return unknown_message();
            };
            if !state.channels.contains_key(&c) {
                return unknown_channel();
            }
            let Some(message) = state
                .messages
                .iter_mut()
                .find(|x| x.channel_id == c && x.id == m)
            else {
                return unknown_message();
            };
            if route == Route::CreateReaction {
                if !message.reactions.contains(&emoji) {
                    message.reactions.push(emoji);
                }
            } else {
                message.reactions.retain(|e| *e != emoji);
            }
            no_content()
        }
        Route::GetReactionUsers => {
            let Some(m) = id(3) else {
                return unknown_message();
            };
            let query = parts.uri.query().unwrap_or("");
            let param = |name: &str| {
                query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            let (after, limit) = (param("after").unwrap_or(0), param("limit").unwrap_or(25));
            let users: Vec<Value> = state
                .user_reactions
                .get(&(m, segments[5].to_string()))
                .into_iter()
                .flatten()
                .filter(|user| **user > after)
                .take(usize::try_from(limit).unwrap_or(25))
                .map(|user| user_json(*user))
                .collect();
            json_response(StatusCode::OK, json!(users))
        }
        Route::BulkOverwriteCommands | Route::CreateCommand => {
            if id(1) != Some(state.application_id) {
                return error(StatusCode::FORBIDDEN, 50001, "Missing Access");
            }
            let scope = match id(3) {
                Some(guild) if segments.len() == 5 => Scope::Guild(guild),
                _ => Scope::Global,
            };
            register_commands(
                &mut state,
                scope,
                route == Route::BulkOverwriteCommands,
                body,
            )
        }
        Route::Callback => match id(1) {
            Some(interaction) => callback(&mut state, interaction, segments[2], body),
            None => error(StatusCode::NOT_FOUND, 10062, "Unknown interaction"),
        },
        Route::EditOriginal | Route::CreateFollowup => {
            if id(1) != Some(state.application_id) {
                return error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
            }
            let token = segments[2].to_string();
            if route == Route::EditOriginal {
                edit_original(&mut state, &token, body)
            } else {
                followup(&mut state, &token, body)
            }
        }
    }
}

/// Waits as [`FakeDiscord::hang`] says for `route`.
async fn hold(state: &Shared, route: Route) {
    let held = {
        let mut state = lock(state);
        let held = state.hangs.get(&route).copied();
        if held.is_some() {
            *state.held.entry(route).or_default() += 1;
        }
        held
    };
    match held {
        None => {}
        Some(Some(delay)) => tokio::time::sleep(delay).await,
        Some(None) => std::future::pending::<()>().await,
    }
}

/// During an outage, the answer for a card route, noting a 429's `retry_after` on the clock.
fn outage_answer(state: &mut FakeState, route: Route) -> Option<Response> {
    if !CARD_ROUTES.contains(&route) {
        return None;
    }
    let (answers, next) = state.outage.as_mut()?;
    let answer = *answers.get(*next % answers.len().max(1))?;
    *next += 1;
    Some(match answer {
        OutageAnswer::ServerError => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            0,
            "500: Internal Server Error",
        ),
        OutageAnswer::RateLimited => {
            if let Some(clock) = &state.clock {
                let wait = chrono::Duration::milliseconds((state.retry_after * 1000.0) as i64);
                let now = clock();
                state.limited_at.insert(route, now);
                let entry = state.limited_until.entry(route).or_insert(now + wait);
                *entry = (*entry).max(now + wait);
            }
            rate_limited(route, state.retry_after)
        }
    })
}

/// Notes a request made while the route's last `retry_after` had not passed.
fn check_rate_limit(state: &mut FakeState, route: Route) {
    let Some(clock) = &state.clock else { return };
    let now = clock();
    // A request at the very fake instant of the 429 was in flight when it came: the clock
    // does not move while the bot works through one step.
    let limited = state
        .limited_until
        .get(&route)
        .zip(state.limited_at.get(&route));
    if let Some((until, _)) = limited.filter(|(until, at)| **at < now && now < **until) {
        let violation = format!("{route:?} at {now}, rate-limited until {until}");
        state.violations.push(violation);
    }
}

/// Discord's embed limits (resources/message#embed-object-embed-limits): the first broken one.
fn embed_problem(embed: &Value) -> Option<String> {
    let len = |pointer: &str| {
        embed
            .pointer(pointer)
            .and_then(Value::as_str)
            .map_or(0, |s| s.chars().count())
    };
    let fields = embed["fields"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let limits = [
        ("title", len("/title"), 256),
        ("description", len("/description"), 4096),
        ("footer.text", len("/footer/text"), 2048),
        ("fields", fields.len(), 25),
    ];
    let mut total = len("/title") + len("/description") + len("/footer/text") + len("/author/name");
    for (name, actual, max) in limits {
        if actual > max {
            return Some(format!(
                "embeds.0.{name}: Must be {max} or fewer in length."
            ));
        }
    }
    for (i, field) in fields.iter().enumerate() {
        let (name, value) = (len_of(&field["name"]), len_of(&field["value"]));
        if name > 256 || value > 1024 {
            return Some(format!(
                "embeds.0.fields.{i}: Must be 1024 or fewer in length."
            ));
        }
        total += name + value;
    }
    (total > 6000).then(|| format!("embeds.0: Embed size exceeds maximum size of 6000 ({total})"))
}

fn len_of(value: &Value) -> usize {
    value.as_str().map_or(0, |s| s.chars().count())
}

fn authorized(state: &FakeState, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bot "))
        .is_some_and(|token| token == state.token)
}

/// Checks a create or edit body like Discord does; `None` when fine.
fn invalid_body(body: &Value, creating: bool) -> Option<Response> {
    if let Some(content) = body["content"].as_str() {
        if content.chars().count() > MAX_CONTENT_CHARS {
            return Some(json_response(
                StatusCode::BAD_REQUEST,
                json!({
                    "code": 50035,
                    "message": "Invalid Form Body",
                    "errors": {"content": {"_errors": [{
                        "code": "BASE_TYPE_MAX_LENGTH",
                        "message": "Must be 2000 or fewer in length."
                    }]}},
                }),
            ));
        }
    }
    for embed in body["embeds"].as_array().into_iter().flatten() {
        if let Some(problem) = embed_problem(embed) {
            return Some(json_response(
                StatusCode::BAD_REQUEST,
                json!({"code": 50035, "message": "Invalid Form Body", "errors": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": problem}]}}),
            ));
        }
    }
    let empty = |key: &str| match &body[key] {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    if creating && empty("content") && empty("embeds") && empty("components") {
        return Some(error(
            StatusCode::BAD_REQUEST,
            50006,
            "Cannot send an empty message",
        ));
    }
    None
}

fn new_message(state: &mut FakeState, channel: u64, body: &Value, flags: u64) -> Message {
    let id = mint_id(state);
    Message {
        id,
        channel_id: channel,
        author_id: state.application_id,
        content: body["content"].as_str().unwrap_or("").to_string(),
        embeds: with_rich_type(body.get("embeds").cloned().unwrap_or(json!([]))),
        components: body.get("components").cloned().unwrap_or(json!([])),
        flags,
        timestamp: now_iso(),
        edited_timestamp: None,
        edits: 0,
        edited_at: Vec::new(),
        reactions: Vec::new(),
        thread: None,
    }
}

/// Discord returns embeds sent without a type as `"type": "rich"`.
fn with_rich_type(mut embeds: Value) -> Value {
    if let Some(list) = embeds.as_array_mut() {
        for embed in list {
            if embed.get("type").is_none() {
                embed["type"] = json!("rich");
            }
        }
    }
    embeds
}

fn create_message(state: &mut FakeState, channel: u64, body: &Value) -> Response {
    if !state.channels.contains_key(&channel) {
        return unknown_channel();
    }
    if let Some(invalid) = invalid_body(body, true) {
        state
            .refusals
            .push((Route::CreateMessage, body.to_string()));
        return invalid;
    }
    let message = new_message(state, channel, body, body["flags"].as_u64().unwrap_or(0));
    let reply = message_json(&message, state.application_id);
    state.messages.push(message);
    json_response(StatusCode::OK, reply)
}

/// Applies an edit body (content/embeds/components present replace the old ones).
fn apply_edit(message: &mut Message, body: &Value) {
    if let Some(content) = body.get("content") {
        message.content = content.as_str().unwrap_or("").to_string();
    }
    if let Some(embeds) = body.get("embeds") {
        message.embeds = with_rich_type(if embeds.is_null() {
            json!([])
        } else {
            embeds.clone()
        });
    }
    if let Some(components) = body.get("components") {
        message.components = if components.is_null() {
            json!([])
        } else {
            components.clone()
        };
    }
    message.flags &= !LOADING;
    message.edits += 1;
    message.edited_at.push(Instant::now());
    message.edited_timestamp = Some(now_iso());
}

fn edit_message(state: &mut FakeState, channel: u64, id: u64, body: &Value) -> Response {
    if !state.channels.contains_key(&channel) {
        return unknown_channel();
    }
    if let Some(invalid) = invalid_body(body, false) {
        state.refusals.push((Route::EditMessage, body.to_string()));
        return invalid;
    }
    let bot = state.application_id;
    let at = state.clock.as_ref().map(|clock| clock());
    if let Some(at) = at {
        state.edit_times.entry(id).or_default().push(at);
    }
    match state
        .messages
        .iter_mut()
        .find(|m| m.channel_id == channel && m.id == id)
    {
        Some(message) => {
            apply_edit(message, body);
            json_response(StatusCode::OK, message_json(message, bot))
        }
        None => unknown_message(),
    }
}

fn create_thread(state: &mut FakeState, channel: u64, id: u64, body: &Value) -> Response {
    let Some(parent) = state.channels.get(&channel).cloned() else {
        return unknown_channel();
    };
    let Some(index) = state
        .messages
        .iter()
        .position(|m| m.channel_id == channel && m.id == id)
    else {
        return unknown_message();
    };
    if state.channels.contains_key(&id) {
        return error(
            StatusCode::BAD_REQUEST,
            160_004,
            "A thread has already been created for this message",
        );
    }
    if parent.kind == 11 {
        return error(
            StatusCode::BAD_REQUEST,
            50024,
            "Cannot execute action on this channel type",
        );
    }
    let name = body["name"].as_str().unwrap_or("").to_string();
    if name.is_empty() || name.chars().count() > 100 {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({
                "code": 50035,
                "message": "Invalid Form Body",
                "errors": {"name": {"_errors": [{
                    "code": "BASE_TYPE_BAD_LENGTH",
                    "message": "Must be between 1 and 100 in length."
                }]}},
            }),
        );
    }
    let thread = Channel {
        id,
        kind: 11,
        name,
        guild_id: parent.guild_id,
        parent_id: Some(channel),
        created: now_iso(),
    };
    state.channels.insert(id, thread.clone());
    let message = &mut state.messages[index];
    message.flags |= HAS_THREAD;
    message.thread = Some(thread.clone());
    json_response(StatusCode::CREATED, channel_json(&thread, state))
}

fn register_commands(
    state: &mut FakeState,
    scope: Scope,
    overwrite: bool,
    body: Value,
) -> Response {
    let incoming = if overwrite {
        match body {
            Value::Array(list) => list,
            _ => return error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body"),
        }
    } else {
        vec![body]
    };
    let mut minted = Vec::new();
    for mut command in incoming {
        if command["name"].as_str().is_none_or(str::is_empty) {
            return error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body");
        }
        let id = mint_id(state);
        command["id"] = json!(id.to_string());
        command["application_id"] = json!(state.application_id.to_string());
        command["version"] = json!(mint_id(state).to_string());
        command["guild_id"] = match scope {
            Scope::Guild(g) => json!(g.to_string()),
            Scope::Global => Value::Null,
        };
        for (key, default) in [
            ("type", json!(1)),
            ("description", json!("")),
            ("default_member_permissions", Value::Null),
            ("nsfw", json!(false)),
            ("options", json!([])),
        ] {
            if command.get(key).is_none_or(Value::is_null) {
                command[key] = default;
            }
        }
        minted.push(command);
    }
    let existing = state.commands.entry(scope).or_default();
    if overwrite {
        *existing = minted.clone();
        json_response(StatusCode::OK, json!(minted))
    } else {
        let command = minted.remove(0);
        existing.retain(|c| c["name"] != command["name"]);
        existing.push(command.clone());
        json_response(StatusCode::CREATED, command)
    }
}

fn callback(state: &mut FakeState, interaction_id: u64, token: &str, body: Value) -> Response {
    let deadline = state.interaction_deadline;
    let Some(interaction) = state.interactions.get_mut(&interaction_id) else {
        return error(StatusCode::NOT_FOUND, 10062, "Unknown interaction");
    };
    if interaction.token != token {
        return error(StatusCode::UNAUTHORIZED, 50027, "Invalid Webhook Token");
    }
    let latency = interaction.dispatched_at.map(|at| at.elapsed());
    if let (Some(latency), Some(deadline)) = (latency, deadline) {
        if latency > deadline {
            return error(StatusCode::NOT_FOUND, 10062, "Unknown interaction");
        }
    }
    if interaction.acknowledged {
        return error(
            StatusCode::BAD_REQUEST,
            40060,
            "Interaction has already been acknowledged.",
        );
    }
    let Some(kind) = body["type"].as_u64() else {
        return error(StatusCode::BAD_REQUEST, 50035, "Invalid Form Body");
    };
    let data = body.get("data").cloned().unwrap_or(Value::Null);
    let is_component = interaction.message.is_some();
    if matches!(kind, 6 | 7) && !is_component {
        return error(
            StatusCode::BAD_REQUEST,
            40004,
            "Interaction type not supported for this response type",
        );
    }
    interaction.acknowledged = true;
    let channel = interaction.channel_id;
    let component_message = interaction.message;
    let ephemeral = data["flags"].as_u64().unwrap_or(0) & EPHEMERAL != 0;
    let bot = state.application_id;
    let original = match kind {
        4 | 5 if ephemeral => {
            let mut stand_in = new_message(state, channel.unwrap_or(0), &data, EPHEMERAL);
            if kind == 5 {
                stand_in.flags |= LOADING;
            }
            Some(Original::Ephemeral(message_json(&stand_in, bot)))
        }
        4 | 5 => match channel.filter(|c| state.channels.contains_key(c)) {
            Some(channel) => {
                let flags = if kind == 5 { LOADING } else { 0 };
                let message = new_message(state, channel, &data, flags);
                let id = message.id;
                state.messages.push(message);
                Some(Original::InChannel(channel, id))
            }
            None => None,
        },
        6 | 7 => {
            let (channel, id) = component_message.expect("checked above");
            if kind == 7 {
                if let Some(message) = state
                    .messages
                    .iter_mut()
                    .find(|m| m.channel_id == channel && m.id == id)
                {
                    apply_edit(message, &data);
                }
            }
            Some(Original::InChannel(channel, id))
        }
        _ => None,
    };
    if let Some(interaction) = state.interactions.get_mut(&interaction_id) {
        interaction.original = original;
    }
    state.callbacks.push(Callback {
        interaction_id,
        token: token.to_string(),
        kind,
        data,
        at: Instant::now(),
        latency,
    });
    no_content()
}

fn interaction_by_token<'a>(state: &'a mut FakeState, token: &str) -> Option<&'a mut Interaction> {
    state.interactions.values_mut().find(|i| i.token == token)
}

fn edit_original(state: &mut FakeState, token: &str, body: Value) -> Response {
    let bot = state.application_id;
    let Some(interaction) = interaction_by_token(state, token) else {
        return error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
    };
    let original = interaction.original.clone();
    state
        .original_edits
        .entry(token.to_string())
        .or_default()
        .push(body.clone());
    match original {
        Some(Original::InChannel(channel, id)) => {
            match state
                .messages
                .iter_mut()
                .find(|m| m.channel_id == channel && m.id == id)
            {
                Some(message) => {
                    apply_edit(message, &body);
                    json_response(StatusCode::OK, message_json(message, bot))
                }
                None => unknown_message(),
            }
        }
        Some(Original::Ephemeral(mut message)) => {
            for key in ["content", "embeds", "components"] {
                if let Some(value) = body.get(key) {
                    message[key] = value.clone();
                }
            }
            message["flags"] = json!(EPHEMERAL);
            message["edited_timestamp"] = json!(now_iso());
            if let Some(interaction) = interaction_by_token(state, token) {
                interaction.original = Some(Original::Ephemeral(message.clone()));
            }
            json_response(StatusCode::OK, message)
        }
        None => unknown_message(),
    }
}

fn followup(state: &mut FakeState, token: &str, body: Value) -> Response {
    let Some(interaction) = interaction_by_token(state, token) else {
        return error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
    };
    if !interaction.acknowledged {
        return error(StatusCode::NOT_FOUND, 10015, "Unknown Webhook");
    }
    let channel = interaction.channel_id.unwrap_or(0);
    if let Some(invalid) = invalid_body(&body, true) {
        return invalid;
    }
    state
        .followups
        .entry(token.to_string())
        .or_default()
        .push(body.clone());
    let flags = body["flags"].as_u64().unwrap_or(0) & EPHEMERAL;
    let message = new_message(state, channel, &body, flags);
    let reply = message_json(&message, state.application_id);
    if flags & EPHEMERAL == 0 && state.channels.contains_key(&channel) {
        state.messages.push(message);
    }
    json_response(StatusCode::OK, reply)
}

// ----- gateway -------------------------------------------------------------------------------

async fn serve_gateway(listener: tokio::net::TcpListener, state: Shared) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(gateway_connection(tcp, state.clone()));
    }
}

async fn gateway_connection(tcp: tokio::net::TcpStream, state: Shared) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (conn, hello) = {
        let mut state = lock(&state);
        let gateway = &mut state.gateway;
        gateway.next_conn += 1;
        gateway.connections += 1;
        gateway.conns.insert(gateway.next_conn, tx);
        let hello = json!({"op": 10, "d": {"heartbeat_interval": gateway.heartbeat_interval}});
        (gateway.next_conn, hello)
    };
    if ws.send(WsMessage::text(hello.to_string())).await.is_ok() {
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(Out::Frame(frame)) => {
                        if ws.send(WsMessage::text(frame)).await.is_err() {
                            break;
                        }
                    }
                    // Abrupt: no close frame, the stream is dropped below.
                    Some(Out::Drop) | None => break,
                },
                incoming = ws.next() => match incoming {
                    Some(Ok(WsMessage::Text(text))) => {
                        match client_frame(&state, conn, text.as_str()) {
                            Reply::Frames(frames) => {
                                let mut failed = false;
                                for frame in frames {
                                    failed |= ws.send(WsMessage::text(frame)).await.is_err();
                                }
                                if failed {
                                    break;
                                }
                            }
                            Reply::Close(code, reason) => {
                                let _ = ws
                                    .close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() }))
                                    .await;
                                break;
                            }
                        }
                    }
                    Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    let mut state = lock(&state);
    let gateway = &mut state.gateway;
    gateway.conns.remove(&conn);
    gateway.sessioned.remove(&conn);
    if gateway.live.as_ref().is_some_and(|live| live.conn == conn) {
        gateway.live = None;
    }
}

impl Gateway {
    /// Counts `conn` as holding a session from now until it closes.
    fn open_session(&mut self, conn: u64) {
        self.sessioned.insert(conn);
        self.max_sessioned = self.max_sessioned.max(self.sessioned.len());
    }
}

enum Reply {
    Frames(Vec<String>),
    Close(u16, &'static str),
}

fn strip_bot(token: &str) -> &str {
    token.strip_prefix("Bot ").unwrap_or(token)
}

/// Handles one client frame on connection `conn`.
fn client_frame(state: &Shared, conn: u64, text: &str) -> Reply {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return Reply::Close(4002, "Error while decoding payload.");
    };
    let mut state = lock(state);
    let bot_id = state.application_id;
    let expected_token = state.token.clone();
    let gateway = &mut state.gateway;
    match frame["op"].as_u64() {
        Some(1) => {
            gateway.heartbeats += 1;
            Reply::Frames(vec![json!({"op": 11}).to_string()])
        }
        Some(2) => {
            let d = &frame["d"];
            let token = d["token"].as_str().unwrap_or("").to_string();
            gateway.identifies.push(Identify {
                token: token.clone(),
                intents: d["intents"].as_u64().unwrap_or(0),
                data: d.clone(),
            });
            if strip_bot(&token) != expected_token {
                return Reply::Close(4004, "Authentication failed.");
            }
            gateway.next_session += 1;
            let session_id = format!("{:032x}", 0xfa6e_0000_u64 + gateway.next_session);
            let ready = json!({
                "op": 0,
                "t": "READY",
                "s": 1,
                "d": {
                    "v": 10,
                    "user": {
                        "id": bot_id.to_string(),
                        "username": "releasebot",
                        "global_name": null,
                        "avatar": null,
                        "discriminator": "0",
                        "bot": true,
                        "verified": true,
                        "mfa_enabled": false,
                        "flags": 0,
                    },
                    "guilds": [],
                    "session_id": session_id,
                    "resume_gateway_url": gateway.url,
                    "shard": d.get("shard").cloned().unwrap_or(json!([0, 1])),
                    "application": {"id": bot_id.to_string(), "flags": 0},
                },
            })
            .to_string();
            gateway.sessions.insert(
                session_id.clone(),
                Session {
                    seq: 1,
                    log: vec![(1, ready.clone())],
                },
            );
            gateway.live = Some(Live { conn, session_id });
            gateway.open_session(conn);
            Reply::Frames(vec![ready])
        }
        Some(6) => {
            let d = &frame["d"];
            let token = d["token"].as_str().unwrap_or("").to_string();
            let session_id = d["session_id"].as_str().unwrap_or("").to_string();
            let seq = d["seq"].as_u64().unwrap_or(0);
            let accepted = !gateway.reject_resumes
                && strip_bot(&token) == expected_token
                && gateway.sessions.contains_key(&session_id);
            gateway.resumes.push(Resume {
                token,
                session_id: session_id.clone(),
                seq,
                accepted,
            });
            if !accepted {
                return Reply::Frames(vec![json!({"op": 9, "d": false}).to_string()]);
            }
            let session = gateway.sessions.get_mut(&session_id).expect("checked");
            let mut frames: Vec<String> = session
                .log
                .iter()
                .filter(|(s, _)| *s > seq)
                .map(|(_, frame)| frame.clone())
                .collect();
            session.seq += 1;
            let resumed = json!({"op": 0, "t": "RESUMED", "s": session.seq, "d": {}}).to_string();
            session.log.push((session.seq, resumed.clone()));
            frames.push(resumed);
            gateway.live = Some(Live { conn, session_id });
            gateway.open_session(conn);
            Reply::Frames(frames)
        }
        _ => Reply::Close(4001, "Unknown opcode."),
    }
}
