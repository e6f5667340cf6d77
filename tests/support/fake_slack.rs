//! A stateful fake of the Slack Web API on loopback, plus helpers that sign and shape inbound
//! requests the way Slack sends them to the bot.
//!
//! The fake serves `GET|POST {api_url}/{method}` for the Web API methods the bot uses
//! (`chat.postMessage`, `chat.update`, `chat.postEphemeral`, `usergroups.users.list`) with the
//! documented response shapes, and `POST {api_url}/response/…` for the `response_url`s minted
//! by [`slash_command_body`] and [`block_action_body`]. Bodies may be JSON (what slack-morphism
//! sends for POST methods), `application/x-www-form-urlencoded`, or a query string (what
//! slack-morphism sends for GET methods such as `usergroups.users.list`).
//!
//! The body builders are free functions: they find the fake started most recently *on the
//! calling thread* (the test body's thread, also under `#[tokio::test(flavor = "multi_thread")]`)
//! to point `response_url` at it and to copy the clicked message into block_actions payloads.
//! Without a fake they fall back to Slack's documented `hooks.slack.com` URLs.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};

/// User id of the bot user that owns the bot token; author of every message in the fake.
pub const BOT_USER_ID: &str = "UBOT";
/// Bot id that Slack puts next to `user` on bot messages.
pub const BOT_ID: &str = "BBOT";
pub const TEAM_ID: &str = "T0001";
pub const TEAM_DOMAIN: &str = "example";
pub const API_APP_ID: &str = "A0RELEASE1";

/// First minted `ts` is `1700000000.000100`; each further message or edit adds 100 µs.
const TS_ORIGIN_MICROS: u64 = 1_700_000_000_000_000;
const TS_STEP_MICROS: u64 = 100;
/// Slack documents that a `response_url` may be used up to 5 times.
const RESPONSE_URL_MAX_USES: usize = 5;
/// Slack truncates/rejects message text above 40 000 characters (`msg_too_long`).
const MAX_TEXT_CHARS: usize = 40_000;
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A message the bot posted (top-level or thread reply), with its latest content.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub ts: String,
    pub channel: String,
    pub text: String,
    /// The Block Kit array as last sent (`[]` when the message has no blocks).
    pub blocks: Value,
    /// `Some(parent ts)` for thread replies.
    pub thread_ts: Option<String>,
    /// Successful edits (chat.update, or `replace_original` through a response_url).
    pub edits: usize,
}

/// A message only `user` can see (chat.postEphemeral, or a response_url reply without
/// `response_type: in_channel`).
#[derive(Debug, Clone, PartialEq)]
pub struct Ephemeral {
    pub channel: String,
    pub user: String,
    pub text: String,
    pub blocks: Value,
}

/// How an injected failure answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// HTTP 429, `Retry-After: N`, body `{"ok":false,"error":"ratelimited"}`.
    RateLimited { retry_after_secs: u64 },
    /// HTTP 200, body `{"ok":false,"error":E}`.
    ApiError(&'static str),
    /// HTTP 500.
    ServerError,
}

/// The clock the fake judges rate limits and edit pacing by (a test's manual clock).
pub type FakeClock = Arc<dyn Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync>;

#[derive(Default)]
struct FakeState {
    /// Methods whose calls are held: for a while, or (`None`) never answered.
    hangs: HashMap<String, Option<Duration>>,
    /// While set, every Web API call is answered with these failures in turn.
    outage: Option<(Vec<Failure>, usize)>,
    clock: Option<FakeClock>,
    /// Per method: until when the last 429 asked the bot to wait (on `clock`).
    limited_until: HashMap<String, chrono::DateTime<chrono::Utc>>,
    /// When the last 429 was answered, per method.
    limited_at: HashMap<String, chrono::DateTime<chrono::Utc>>,
    /// Calls made before the `Retry-After` of a 429 had passed.
    violations: Vec<String>,
    /// `ok: false` answers the fake gave by itself (not injected): what the bot sent was wrong.
    refusals: Vec<(String, String)>,
    /// Successful chat.update times per (channel, ts), on `clock`.
    edit_times: HashMap<(String, String), Vec<chrono::DateTime<chrono::Utc>>>,
    token: String,
    next_ts: u64,
    /// Every message, top-level and replies, in post order.
    messages: Vec<Message>,
    /// Ephemerals not yet taken by the test.
    ephemerals: Vec<Ephemeral>,
    calls: HashMap<String, usize>,
    requests: Vec<(String, Value)>,
    updates: HashMap<(String, String), Vec<Instant>>,
    faults: HashMap<String, VecDeque<Failure>>,
    usergroups: HashMap<String, Vec<String>>,
    response_url_uses: HashMap<String, usize>,
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
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.server.abort();
        if std::thread::panicking() {
            return;
        }
        let unread = std::mem::take(&mut lock(&self.state).ephemerals);
        if !unread.is_empty() {
            panic!(
                "FakeSlack dropped with {} unread ephemeral message(s); tests must \
                 take_ephemerals() to check what the bot told people: {unread:#?}",
                unread.len()
            );
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Weak<Inner>> = const { RefCell::new(Weak::new()) };
}

fn current_fake() -> Option<Arc<Inner>> {
    CURRENT.with(|current| current.borrow().upgrade())
}

/// Handle to a running fake; clones share the same fake. The server stops, and the
/// unread-ephemeral check runs, when the last clone is dropped.
#[derive(Clone)]
pub struct FakeSlack {
    inner: Arc<Inner>,
}

impl FakeSlack {
    /// Starts the fake on `127.0.0.1:0`. Requests must carry `authorization: Bearer {bot_token}`
    /// (or a `token` form/query parameter); others get `not_authed` / `invalid_auth`.
    pub async fn start(bot_token: &str) -> FakeSlack {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Slack to loopback");
        let addr = listener
            .local_addr()
            .expect("local address of the fake Slack");
        let api_url = format!("http://{addr}/api");
        let state: Shared = Arc::new(Mutex::new(FakeState {
            token: bot_token.to_string(),
            next_ts: TS_ORIGIN_MICROS,
            ..FakeState::default()
        }));
        let app = Router::new().fallback(handle).with_state(state.clone());
        let server = tokio::spawn(async move {
            // Ends only when the listener fails or the task is aborted on drop.
            let _ = axum::serve(listener, app).await;
        });
        let inner = Arc::new(Inner {
            state,
            api_url,
            server,
        });
        CURRENT.with(|current| *current.borrow_mut() = Arc::downgrade(&inner));
        FakeSlack { inner }
    }

    /// `http://127.0.0.1:PORT/api`, for `SlackClientHyperConnector::with_slack_api_url`.
    pub fn api_url(&self) -> String {
        self.inner.api_url.clone()
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        lock(&self.inner.state)
    }

    /// Top-level messages of `channel` in post order, with their latest content.
    pub fn messages(&self, channel: &str) -> Vec<Message> {
        self.state()
            .messages
            .iter()
            .filter(|m| m.channel == channel && m.thread_ts.is_none())
            .cloned()
            .collect()
    }

    /// A top-level message or thread reply.
    pub fn message(&self, channel: &str, ts: &str) -> Option<Message> {
        self.state()
            .messages
            .iter()
            .find(|m| m.channel == channel && m.ts == ts)
            .cloned()
    }

    /// Replies in the thread under `thread_ts`, in post order.
    pub fn thread(&self, channel: &str, thread_ts: &str) -> Vec<Message> {
        self.state()
            .messages
            .iter()
            .filter(|m| m.channel == channel && m.thread_ts.as_deref() == Some(thread_ts))
            .cloned()
            .collect()
    }

    /// Ephemerals shown to `user` since the last take, oldest first; marks them read.
    pub fn take_ephemerals(&self, user: &str) -> Vec<Ephemeral> {
        let mut state = self.state();
        let (taken, kept) = std::mem::take(&mut state.ephemerals)
            .into_iter()
            .partition(|e| e.user == user);
        state.ephemerals = kept;
        taken
    }

    /// Calls of `method` so far, failed ones included (`"response_url"` counts response_url POSTs).
    pub fn calls(&self, method: &str) -> usize {
        self.state().calls.get(method).copied().unwrap_or(0)
    }

    /// Parameters of every call of `method` (JSON body, form and query merged), in order.
    pub fn requests(&self, method: &str) -> Vec<Value> {
        self.state()
            .requests
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, params)| params.clone())
            .collect()
    }

    /// When each successful chat.update of the message happened.
    pub fn updates_of(&self, channel: &str, ts: &str) -> Vec<Instant> {
        self.state()
            .updates
            .get(&(channel.to_string(), ts.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// The next `times` calls of `method` fail with `failure` (queued after earlier knobs).
    pub fn fail_next(&self, method: &str, times: usize, failure: Failure) {
        let mut state = self.state();
        let queue = state.faults.entry(method.to_string()).or_default();
        queue.extend(std::iter::repeat_n(failure, times));
    }

    /// Calls of `method` are answered only after `delay`, or never (`None`), from now on.
    pub fn hang(&self, method: &str, delay: Option<Duration>) {
        self.state().hangs.insert(method.to_string(), delay);
    }

    /// Calls of `method` that arrived while it was held (answered or not).
    pub fn held_calls(&self, method: &str) -> usize {
        self.calls(&format!("held:{method}"))
    }

    /// Until [`Self::end_outage`], every Web API call is answered with `failures` in turn.
    pub fn start_outage(&self, failures: Vec<Failure>) {
        self.state().outage = Some((failures, 0));
    }

    /// The latest time any 429 of the fake asked the bot to wait until (on its clock).
    pub fn rate_limited_until(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.state().limited_until.values().max().copied()
    }

    pub fn end_outage(&self) {
        self.state().outage = None;
    }

    /// Judges `Retry-After` and edit pacing by `clock` (the bot's real-time clock in a test).
    pub fn use_clock(&self, clock: FakeClock) {
        self.state().clock = Some(clock);
    }

    /// Calls the bot made to a method after a 429 and before its `Retry-After` had passed
    /// (judged on the clock given to [`Self::use_clock`]; a call at the 429's own instant was in
    /// flight when it came and does not count).
    pub fn rate_limit_violations(&self) -> Vec<String> {
        self.state().violations.clone()
    }

    /// `(method, error)` of every `ok: false` the fake answered by itself (a too-long text,
    /// invalid blocks, an unknown channel): never an injected failure.
    pub fn refusals(&self) -> Vec<(String, String)> {
        self.state().refusals.clone()
    }

    /// When each successful chat.update of the message happened, on the clock of
    /// [`Self::use_clock`].
    pub fn edit_times(&self, channel: &str, ts: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
        self.state()
            .edit_times
            .get(&(channel.to_string(), ts.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// Defines (or replaces) a user group for `usergroups.users.list`.
    pub fn usergroup(&self, group_id: &str, users: &[&str]) {
        self.state().usergroups.insert(
            group_id.to_string(),
            users.iter().map(|u| u.to_string()).collect(),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP side
// ---------------------------------------------------------------------------------------------

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn ok(mut body: Value) -> Response {
    if let Value::Object(map) = &mut body {
        map.insert("ok".into(), Value::Bool(true));
    }
    json_response(StatusCode::OK, body)
}

fn api_error(error: &str) -> Response {
    json_response(StatusCode::OK, json!({"ok": false, "error": error}))
}

fn failure_response(failure: &Failure) -> Response {
    match failure {
        Failure::RateLimited { retry_after_secs } => {
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"ok": false, "error": "ratelimited"}),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            response
        }
        Failure::ApiError(error) => api_error(error),
        Failure::ServerError => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"ok": false, "error": "internal_error"}),
        ),
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    (status, body).into_response()
}

async fn handle(State(state): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large");
    };
    let body = String::from_utf8_lossy(&bytes).into_owned();

    if let Some(rest) = path.strip_prefix("/api/response/") {
        return response_url(&state, &parts.method, rest, &body);
    }
    match path.strip_prefix("/api/") {
        Some(method) if !method.is_empty() && !method.contains('/') => {
            hold(&state, method).await;
            web_api(&state, &parts.method, &parts.headers, method, &query, &body)
        }
        _ => plain(StatusCode::NOT_FOUND, "not_found"),
    }
}

/// Waits as [`FakeSlack::hang`] says for `method`.
async fn hold(state: &Shared, method: &str) {
    let held = {
        let mut st = lock(state);
        let held = st.hangs.get(method).copied();
        if held.is_some() {
            *st.calls.entry(format!("held:{method}")).or_insert(0) += 1;
        }
        held
    };
    match held {
        None => {}
        Some(Some(delay)) => tokio::time::sleep(delay).await,
        Some(None) => std::future::pending::<()>().await,
    }
}

/// During an outage: the next failure, noting a 429's `Retry-After` on the fake's clock.
fn outage_answer(st: &mut FakeState, method: &str) -> Option<Failure> {
    let (failures, next) = st.outage.as_mut()?;
    let failure = failures.get(*next % failures.len().max(1))?.clone();
    *next += 1;
    if let (Failure::RateLimited { retry_after_secs }, Some(clock)) = (&failure, &st.clock) {
        let now = clock();
        st.limited_at.insert(method.to_string(), now);
        let until = now + chrono::Duration::seconds(*retry_after_secs as i64);
        let entry = st.limited_until.entry(method.to_string()).or_insert(until);
        *entry = (*entry).max(until);
    }
    Some(failure)
}

/// Notes a call made while the method's last `Retry-After` had not passed.
fn check_rate_limit(st: &mut FakeState, method: &str) {
    let Some(clock) = &st.clock else { return };
    let now = clock();
    // A call at the very fake instant of the 429 was in flight when it came: the clock does
    // not move while the bot works through one step.
    let limited = st.limited_until.get(method).zip(st.limited_at.get(method));
    if let Some((until, _)) = limited.filter(|(until, at)| **at < now && now < **until) {
        let violation = format!("{method} at {now}, rate-limited until {until}");
        st.violations.push(violation);
    }
}

/// Merges query-string parameters and the body (JSON object or form) into one JSON object.
fn request_params(
    headers: &HeaderMap,
    query: &str,
    body: &str,
) -> Result<Map<String, Value>, &'static str> {
    let mut params: Map<String, Value> = parse_form(query)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if body.trim().is_empty() {
        return Ok(params);
    }
    if content_type.starts_with("application/json") {
        match serde_json::from_str::<Value>(body) {
            Ok(Value::Object(map)) => params.extend(map),
            _ => return Err("invalid_json"),
        }
    } else {
        params.extend(
            parse_form(body)
                .into_iter()
                .map(|(k, v)| (k, Value::String(v))),
        );
    }
    Ok(params)
}

fn web_api(
    state: &Shared,
    http_method: &Method,
    headers: &HeaderMap,
    method: &str,
    query: &str,
    body: &str,
) -> Response {
    let mut st = lock(state);
    *st.calls.entry(method.to_string()).or_insert(0) += 1;
    let parsed = request_params(headers, query, body);
    let recorded = match &parsed {
        Ok(params) => Value::Object(params.clone()),
        Err(_) => Value::String(body.to_string()),
    };
    st.requests.push((method.to_string(), recorded));

    if *http_method != Method::GET && *http_method != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    let params = match parsed {
        Ok(params) => params,
        Err(error) => return api_error(error),
    };

    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_string);
    let token = bearer.or_else(|| {
        params
            .get("token")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    match token {
        None => return api_error("not_authed"),
        Some(token) if token != st.token => return api_error("invalid_auth"),
        Some(_) => {}
    }

    check_rate_limit(&mut st, method);
    if let Some(failure) = outage_answer(&mut st, method) {
        return failure_response(&failure);
    }
    if let Some(failure) = st.faults.get_mut(method).and_then(VecDeque::pop_front) {
        return failure_response(&failure);
    }

    let result = match method {
        "chat.postMessage" => post_message(&mut st, &params),
        "chat.update" => update_message(&mut st, &params),
        "chat.postEphemeral" => post_ephemeral(&mut st, &params),
        "usergroups.users.list" => usergroup_users(&st, &params),
        _ => Err(ApiFailure::new("unknown_method")),
    };
    match result {
        Ok(body) => ok(body),
        Err(failure) => {
            st.refusals
                .push((method.to_string(), failure.error.to_string()));
            failure.into_response()
        }
    }
}

struct ApiFailure {
    error: &'static str,
    details: Vec<String>,
}

impl ApiFailure {
    fn new(error: &'static str) -> Self {
        ApiFailure {
            error,
            details: Vec::new(),
        }
    }

    fn with_detail(error: &'static str, detail: String) -> Self {
        ApiFailure {
            error,
            details: vec![detail],
        }
    }

    fn into_response(self) -> Response {
        if self.details.is_empty() {
            api_error(self.error)
        } else {
            json_response(
                StatusCode::OK,
                json!({
                    "ok": false,
                    "error": self.error,
                    "errors": self.details,
                    "response_metadata": {"messages": self.details},
                }),
            )
        }
    }
}

type ApiResult = Result<Value, ApiFailure>;

/// A string parameter; absent and JSON null both mean "not given".
fn str_param<'a>(params: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ApiFailure> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(ApiFailure::with_detail(
            "invalid_arguments",
            format!("[ERROR] expected a string for `{key}`"),
        )),
    }
}

fn bool_param(params: &Map<String, Value>, key: &str) -> bool {
    match params.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true" || s == "1",
        _ => false,
    }
}

fn channel_param(params: &Map<String, Value>) -> Result<String, ApiFailure> {
    match str_param(params, "channel")? {
        Some(c) if c.starts_with(['C', 'G', 'D']) && c.len() > 1 => Ok(c.to_string()),
        _ => Err(ApiFailure::new("channel_not_found")),
    }
}

fn valid_user_id(user: &str) -> bool {
    user.len() > 1
        && user.starts_with(['U', 'W'])
        && user.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Message content from `text` / `blocks` (a JSON array, or a JSON-encoded string as Slack
/// accepts in form bodies). `Ok(None)` parts mean "not given".
struct Content {
    text: Option<String>,
    blocks: Option<Value>,
    has_attachments: bool,
}

impl Content {
    fn is_empty(&self) -> bool {
        self.text.as_deref().is_none_or(str::is_empty)
            && self
                .blocks
                .as_ref()
                .is_none_or(|b| b.as_array().is_none_or(Vec::is_empty))
            && !self.has_attachments
    }
}

fn content_param(params: &Map<String, Value>) -> Result<Content, ApiFailure> {
    let text = str_param(params, "text")?.map(str::to_string);
    if text
        .as_ref()
        .is_some_and(|t| t.chars().count() > MAX_TEXT_CHARS)
    {
        return Err(ApiFailure::new("msg_too_long"));
    }
    let blocks = match params.get("blocks") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(Value::Array(items.clone())),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Array(items)) => Some(Value::Array(items)),
            _ => return Err(ApiFailure::new("invalid_blocks_format")),
        },
        Some(_) => return Err(ApiFailure::new("invalid_blocks_format")),
    };
    if let Some(blocks) = &blocks {
        validate_blocks(blocks)
            .map_err(|detail| ApiFailure::with_detail("invalid_blocks", detail))?;
    }
    let has_attachments = match params.get("attachments") {
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::String(s)) => !s.trim().is_empty() && s.trim() != "[]",
        _ => false,
    };
    Ok(Content {
        text,
        blocks,
        has_attachments,
    })
}

fn text_len(value: &Value, pointer: &str) -> usize {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map_or(0, |s| s.chars().count())
}

/// The documented Block Kit limits the bot could plausibly hit.
fn validate_blocks(blocks: &Value) -> Result<(), String> {
    let items = blocks.as_array().map(Vec::as_slice).unwrap_or_default();
    if items.len() > 50 {
        return Err(format!(
            "[ERROR] no more than 50 items allowed, got {}",
            items.len()
        ));
    }
    let mut block_ids = HashSet::new();
    for (i, block) in items.iter().enumerate() {
        let Some(kind) = block.get("type").and_then(Value::as_str) else {
            return Err(format!(
                "[ERROR] missing required field: type [json-pointer:/blocks/{i}]"
            ));
        };
        if let Some(id) = block.get("block_id") {
            let Some(id) = id.as_str().filter(|id| !id.is_empty() && id.len() <= 255) else {
                return Err(format!(
                    "[ERROR] invalid block_id [json-pointer:/blocks/{i}/block_id]"
                ));
            };
            if !block_ids.insert(id.to_string()) {
                return Err(format!(
                    "[ERROR] duplicate block_id `{id}` [json-pointer:/blocks/{i}]"
                ));
            }
        }
        match kind {
            "section" if text_len(block, "/text/text") > 3000 => {
                return Err(format!("[ERROR] must be less than 3001 characters [json-pointer:/blocks/{i}/text/text]"));
            }
            "header" if text_len(block, "/text/text") > 150 => {
                return Err(format!(
                    "[ERROR] must be less than 151 characters [json-pointer:/blocks/{i}/text/text]"
                ));
            }
            _ => {}
        }
        text_list_limits(block, kind, i)?;
        let mut elements: Vec<&Value> = block
            .get("elements")
            .and_then(Value::as_array)
            .map(|e| e.iter().collect())
            .unwrap_or_default();
        if kind == "actions" && elements.len() > 25 {
            return Err(format!(
                "[ERROR] no more than 25 items allowed [json-pointer:/blocks/{i}/elements]"
            ));
        }
        if let Some(accessory) = block.get("accessory") {
            elements.push(accessory);
        }
        let mut action_ids = HashSet::new();
        for element in elements {
            if element.get("type").and_then(Value::as_str) != Some("button") {
                continue;
            }
            if text_len(element, "/text/text") > 75 {
                return Err(format!("[ERROR] button text must be less than 76 characters [json-pointer:/blocks/{i}]"));
            }
            if text_len(element, "/value") > 2000 {
                return Err(format!("[ERROR] button value must be less than 2001 characters [json-pointer:/blocks/{i}]"));
            }
            if let Some(action_id) = element.get("action_id").and_then(Value::as_str) {
                if action_id.len() > 255 || !action_ids.insert(action_id.to_string()) {
                    return Err(format!("[ERROR] invalid or duplicate action_id `{action_id}` [json-pointer:/blocks/{i}]"));
                }
            }
        }
    }
    Ok(())
}

/// A section's `fields` (at most 10, each at most 2,000 characters) and a context block's
/// `elements` (at most 10, text at most 3,000 characters).
fn text_list_limits(block: &Value, kind: &str, i: usize) -> Result<(), String> {
    let (key, max_items, max_chars) = match kind {
        "section" => ("fields", 10, 2000),
        "context" => ("elements", 10, 3000),
        _ => return Ok(()),
    };
    let items = block
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if items.len() > max_items {
        return Err(format!(
            "[ERROR] no more than {max_items} items allowed [json-pointer:/blocks/{i}/{key}]"
        ));
    }
    for (j, item) in items.iter().enumerate() {
        if text_len(item, "/text") > max_chars {
            return Err(format!(
                "[ERROR] must be less than {} characters [json-pointer:/blocks/{i}/{key}/{j}/text]",
                max_chars + 1
            ));
        }
    }
    Ok(())
}

fn mint_ts(st: &mut FakeState) -> String {
    st.next_ts += TS_STEP_MICROS;
    format!("{}.{:06}", st.next_ts / 1_000_000, st.next_ts % 1_000_000)
}

/// The `message` object Slack returns for a bot message.
fn message_json(m: &Message) -> Value {
    let mut out = json!({
        "type": "message",
        "text": m.text,
        "ts": m.ts,
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "app_id": API_APP_ID,
        "team": TEAM_ID,
    });
    if m.blocks.as_array().is_some_and(|b| !b.is_empty()) {
        out["blocks"] = m.blocks.clone();
    }
    if let Some(thread_ts) = &m.thread_ts {
        out["thread_ts"] = Value::String(thread_ts.clone());
        out["parent_user_id"] = Value::String(BOT_USER_ID.into());
    }
    out
}

fn store_message(
    st: &mut FakeState,
    channel: String,
    content: Content,
    thread_ts: Option<String>,
) -> Message {
    let message = Message {
        ts: mint_ts(st),
        channel,
        text: content.text.unwrap_or_default(),
        blocks: content.blocks.unwrap_or_else(|| json!([])),
        thread_ts,
        edits: 0,
    };
    st.messages.push(message.clone());
    message
}

/// The thread a reply with `thread_ts` lands in: the named message's own thread if it is a reply.
fn resolve_thread(st: &FakeState, channel: &str, thread_ts: &str) -> Result<String, ApiFailure> {
    st.messages
        .iter()
        .find(|m| m.channel == channel && m.ts == thread_ts)
        .map(|m| m.thread_ts.clone().unwrap_or_else(|| m.ts.clone()))
        .ok_or_else(|| ApiFailure::new("thread_not_found"))
}

fn post_message(st: &mut FakeState, params: &Map<String, Value>) -> ApiResult {
    let channel = channel_param(params)?;
    let content = content_param(params)?;
    if content.is_empty() {
        return Err(ApiFailure::new("no_text"));
    }
    let thread_ts = match str_param(params, "thread_ts")? {
        Some(ts) if !ts.is_empty() => Some(resolve_thread(st, &channel, ts)?),
        _ => None,
    };
    let message = store_message(st, channel, content, thread_ts);
    Ok(json!({
        "channel": message.channel,
        "ts": message.ts,
        "message": message_json(&message),
    }))
}

fn update_message(st: &mut FakeState, params: &Map<String, Value>) -> ApiResult {
    let channel = channel_param(params)?;
    let ts = str_param(params, "ts")?.unwrap_or("").to_string();
    let content = content_param(params)?;
    let Some(index) = st
        .messages
        .iter()
        .position(|m| m.channel == channel && m.ts == ts)
    else {
        return Err(ApiFailure::new("message_not_found"));
    };
    if content.is_empty() {
        return Err(ApiFailure::new("no_text"));
    }
    let edited_ts = mint_ts(st);
    let message = &mut st.messages[index];
    // Documented: omitted `blocks` keep the previous blocks; `[]` removes them.
    if let Some(text) = content.text {
        message.text = text;
    }
    if let Some(blocks) = content.blocks {
        message.blocks = blocks;
    }
    message.edits += 1;
    let message = message.clone();
    st.updates
        .entry((channel.clone(), ts.clone()))
        .or_default()
        .push(Instant::now());
    if let Some(at) = st.clock.as_ref().map(|clock| clock()) {
        st.edit_times
            .entry((channel.clone(), ts.clone()))
            .or_default()
            .push(at);
    }
    let mut updated = message_json(&message);
    if let Value::Object(map) = &mut updated {
        map.remove("ts");
        map.insert(
            "edited".into(),
            json!({"user": BOT_USER_ID, "ts": edited_ts}),
        );
    }
    Ok(json!({
        "channel": channel,
        "ts": ts,
        "text": message.text,
        "message": updated,
    }))
}

fn post_ephemeral(st: &mut FakeState, params: &Map<String, Value>) -> ApiResult {
    let channel = channel_param(params)?;
    let user = match str_param(params, "user")? {
        Some(user) if valid_user_id(user) => user.to_string(),
        _ => return Err(ApiFailure::new("user_not_in_channel")),
    };
    let content = content_param(params)?;
    if content.is_empty() {
        return Err(ApiFailure::new("no_text"));
    }
    let message_ts = mint_ts(st);
    st.ephemerals.push(Ephemeral {
        channel,
        user,
        text: content.text.unwrap_or_default(),
        blocks: content.blocks.unwrap_or_else(|| json!([])),
    });
    Ok(json!({"message_ts": message_ts}))
}

fn usergroup_users(st: &FakeState, params: &Map<String, Value>) -> ApiResult {
    let group = str_param(params, "usergroup")?.unwrap_or("");
    match st.usergroups.get(group) {
        Some(users) => Ok(json!({"users": users})),
        None => Err(ApiFailure::new("no_such_subteam")),
    }
}

/// `POST {api_url}/response/{commands|actions}/{channel}/{user}/{message_ts|-}/{nonce}`.
///
/// Like Slack: the JSON body is shown ephemerally to the user unless `response_type` is
/// `in_channel`; for button clicks `replace_original` / `delete_original` act on the clicked
/// message. A URL serves 5 uses.
fn response_url(state: &Shared, http_method: &Method, rest: &str, body: &str) -> Response {
    const METHOD: &str = "response_url";
    let mut st = lock(state);
    *st.calls.entry(METHOD.to_string()).or_insert(0) += 1;
    let parsed: Option<Map<String, Value>> = match serde_json::from_str(body) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    };
    let mut recorded = parsed
        .clone()
        .map(Value::Object)
        .unwrap_or_else(|| Value::String(body.to_string()));
    if let Value::Object(map) = &mut recorded {
        map.insert("response_url_path".into(), Value::String(rest.to_string()));
    }
    st.requests.push((METHOD.to_string(), recorded));

    if *http_method != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    let segments: Vec<String> = rest.split('/').map(form_decode).collect();
    let [kind, channel, user, message_ts, _nonce] = segments.as_slice() else {
        return plain(StatusCode::NOT_FOUND, "no_service");
    };
    if kind != "commands" && kind != "actions" {
        return plain(StatusCode::NOT_FOUND, "no_service");
    }
    if let Some(failure) = st.faults.get_mut(METHOD).and_then(VecDeque::pop_front) {
        return failure_response(&failure);
    }
    let uses = st.response_url_uses.entry(rest.to_string()).or_insert(0);
    *uses += 1;
    if *uses > RESPONSE_URL_MAX_USES {
        return plain(StatusCode::NOT_FOUND, "used_url");
    }
    let Some(params) = parsed else {
        return plain(StatusCode::BAD_REQUEST, "invalid_payload");
    };
    let original = (kind == "actions")
        .then(|| {
            st.messages
                .iter()
                .position(|m| &m.channel == channel && &m.ts == message_ts)
        })
        .flatten();

    if bool_param(&params, "delete_original") {
        return match original {
            Some(index) => {
                st.messages.remove(index);
                ok(json!({}))
            }
            None => plain(StatusCode::NOT_FOUND, "message_not_found"),
        };
    }
    let content = match content_param(&params) {
        Ok(content) if !content.is_empty() => content,
        Ok(_) => return plain(StatusCode::BAD_REQUEST, "no_text"),
        Err(failure) => return failure.into_response(),
    };
    if kind == "actions" && bool_param(&params, "replace_original") {
        let Some(index) = original else {
            return plain(StatusCode::NOT_FOUND, "message_not_found");
        };
        let message = &mut st.messages[index];
        message.text = content.text.unwrap_or_default();
        message.blocks = content.blocks.unwrap_or_else(|| json!([]));
        message.edits += 1;
        return ok(json!({}));
    }
    if params.get("response_type").and_then(Value::as_str) == Some("in_channel") {
        let thread_ts = match params.get("thread_ts").and_then(Value::as_str) {
            Some(ts) => match resolve_thread(&st, channel, ts) {
                Ok(thread) => Some(thread),
                Err(_) => return plain(StatusCode::NOT_FOUND, "thread_not_found"),
            },
            None => None,
        };
        store_message(&mut st, channel.clone(), content, thread_ts);
    } else {
        st.ephemerals.push(Ephemeral {
            channel: channel.clone(),
            user: user.clone(),
            text: content.text.unwrap_or_default(),
            blocks: content.blocks.unwrap_or_else(|| json!([])),
        });
    }
    ok(json!({}))
}

// ---------------------------------------------------------------------------------------------
// Form encoding (no url / serde_urlencoded crate is nameable from the tests)
// ---------------------------------------------------------------------------------------------

/// `application/x-www-form-urlencoded` encoding of one value, as Slack encodes its bodies:
/// `A-Za-z0-9*-._` kept, space as `+`, every other byte as `%XX`.
pub fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Decodes one form-encoded component (`+` is a space; bad `%` escapes are kept literally).
pub fn form_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(decoded) => {
                        out.push(decoded);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a form body or query string into decoded `(name, value)` pairs, in order.
pub fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (form_decode(k), form_decode(v)),
            None => (form_decode(pair), String::new()),
        })
        .collect()
}

fn encode_form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

// ---------------------------------------------------------------------------------------------
// Signing and inbound bodies
// ---------------------------------------------------------------------------------------------

/// Slack's request signature: `v0=` + hex(HMAC-SHA256(secret, `v0:{timestamp}:{body}`)).
/// Send it as `X-Slack-Signature`, with `X-Slack-Request-Timestamp: {timestamp}`.
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC-SHA256 accepts keys of any length");
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Wall-clock unix seconds (slack-morphism rejects signatures more than 300 s off).
pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

fn now_slack_ts() -> String {
    let now = chrono::Utc::now();
    format!("{}.{:06}", now.timestamp(), now.timestamp_subsec_micros())
}

static SEQUENCE: AtomicU64 = AtomicU64::new(1);

fn next_sequence() -> u64 {
    SEQUENCE.fetch_add(1, Ordering::Relaxed)
}

/// A trigger_id shaped like Slack's (`13345224609.738474920.8088930838d88f008e0`), unique per process.
fn trigger_id() -> String {
    let n = next_sequence();
    format!(
        "{}.738474920.{:032x}",
        13_345_224_609 + n,
        (u64::from(std::process::id()) << 40) ^ n
    )
}

fn user_name(user: &str) -> String {
    format!("user_{}", user.to_ascii_lowercase())
}

fn channel_name(channel: &str) -> &'static str {
    if channel.starts_with('D') {
        "directmessage"
    } else {
        "releases"
    }
}

fn response_url_for(kind: &str, channel: &str, user: &str, message_ts: Option<&str>) -> String {
    let n = next_sequence();
    match current_fake() {
        Some(fake) => format!(
            "{}/response/{kind}/{}/{}/{}/{n:016x}",
            fake.api_url,
            form_encode(channel),
            form_encode(user),
            message_ts.map(form_encode).unwrap_or_else(|| "-".into()),
        ),
        None => format!(
            "https://hooks.slack.com/{kind}/{TEAM_ID}/{}/{n:024x}",
            1_234 + n
        ),
    }
}

/// Form body of `/release {text}` typed by `user` in `channel`, like
/// `slack_slash_command_release_promote_body.txt`, with a fresh trigger_id and a response_url
/// on the current fake (replies there become ephemerals for `user`, or channel messages with
/// `response_type: in_channel`).
pub fn slash_command_body(user: &str, channel: &str, text: &str) -> String {
    let response_url = response_url_for("commands", channel, user, None);
    let trigger_id = trigger_id();
    let user_name = user_name(user);
    encode_form(&[
        ("token", "gIkuvaNzQIHg97ATvDxqgjtO"),
        ("team_id", TEAM_ID),
        ("team_domain", TEAM_DOMAIN),
        ("channel_id", channel),
        ("channel_name", channel_name(channel)),
        ("user_id", user),
        ("user_name", &user_name),
        ("command", "/release"),
        ("text", text),
        ("api_app_id", API_APP_ID),
        ("is_enterprise_install", "false"),
        ("response_url", &response_url),
        ("trigger_id", &trigger_id),
    ])
}

/// Finds the block holding the button `action_id` in a stored message: (block_id, button text).
fn find_button(blocks: &Value, action_id: &str) -> Option<(String, Value)> {
    let blocks = blocks.as_array()?;
    blocks.iter().enumerate().find_map(|(i, block)| {
        let mut candidates: Vec<&Value> = block
            .get("elements")
            .and_then(Value::as_array)
            .map(|e| e.iter().collect())
            .unwrap_or_default();
        candidates.extend(block.get("accessory"));
        let button = candidates
            .into_iter()
            .find(|e| e.get("action_id").and_then(Value::as_str) == Some(action_id))?;
        let block_id = block
            .get("block_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            // Slack assigns ids to blocks sent without one.
            .unwrap_or_else(|| format!("auto{i}"));
        Some((block_id, button.get("text").cloned().unwrap_or(Value::Null)))
    })
}

/// Form body `payload=<url-encoded JSON>` of a click by `user` on button `action_id` (carrying
/// `value`) of the bot message `message_ts` in `channel`, shaped like
/// `slack_block_actions_payload.json` but with a `message` container. When the current fake
/// holds that message, the payload carries its real text/blocks and the button's block_id.
pub fn block_action_body(
    user: &str,
    channel: &str,
    message_ts: &str,
    action_id: &str,
    value: &str,
) -> String {
    let payload = block_action_payload(user, channel, message_ts, action_id, value);
    format!("payload={}", form_encode(&payload.to_string()))
}

fn block_action_payload(
    user: &str,
    channel: &str,
    message_ts: &str,
    action_id: &str,
    value: &str,
) -> Value {
    let stored = current_fake().and_then(|fake| {
        lock(&fake.state)
            .messages
            .iter()
            .find(|m| m.channel == channel && m.ts == message_ts)
            .cloned()
    });
    let (message, button) = match &stored {
        Some(m) => (message_json(m), find_button(&m.blocks, action_id)),
        None => (
            json!({"type": "message", "text": "", "ts": message_ts, "user": BOT_USER_ID, "bot_id": BOT_ID}),
            None,
        ),
    };
    let (block_id, button_text) = button.unwrap_or_else(|| ("actions".into(), Value::Null));
    let button_text = if button_text.is_null() {
        json!({"type": "plain_text", "text": action_id, "emoji": true})
    } else {
        button_text
    };
    let mut container = json!({
        "type": "message",
        "message_ts": message_ts,
        "channel_id": channel,
        "is_ephemeral": false,
    });
    if let Some(thread_ts) = stored.as_ref().and_then(|m| m.thread_ts.clone()) {
        container["thread_ts"] = Value::String(thread_ts);
    }
    let payload = json!({
        "type": "block_actions",
        "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
        "user": {"id": user, "username": user_name(user), "name": user_name(user), "team_id": TEAM_ID},
        "api_app_id": API_APP_ID,
        "token": "9s8d9as89d8as9d8as989",
        "container": container,
        "trigger_id": trigger_id(),
        "channel": {"id": channel, "name": channel_name(channel)},
        "message": message,
        "response_url": response_url_for("actions", channel, user, Some(message_ts)),
        "actions": [{
            "action_id": action_id,
            "block_id": block_id,
            "text": button_text,
            "value": value,
            "type": "button",
            "action_ts": now_slack_ts(),
        }],
    });
    payload
}

/// Form body of a `block_actions` payload for a `checkboxes` element (Slack's documented shape:
/// the action carries every option checked now in `selected_options`, and no `value`).
pub fn checkboxes_action_body(
    user: &str,
    channel: &str,
    message_ts: &str,
    action_id: &str,
    selected_values: &[&str],
) -> String {
    let mut payload = block_action_payload(user, channel, message_ts, action_id, "");
    let selected: Vec<Value> = selected_values
        .iter()
        .map(|value| json!({"text": {"type": "plain_text", "text": value, "emoji": true}, "value": value}))
        .collect();
    payload["actions"] = json!([{
        "type": "checkboxes",
        "action_id": action_id,
        "block_id": "checklist",
        "selected_options": selected,
        "action_ts": now_slack_ts(),
    }]);
    format!("payload={}", form_encode(&payload.to_string()))
}

/// JSON `event_callback` body for `reaction_added` / `reaction_removed` by `user` with emoji
/// `reaction` (no colons, e.g. `white_check_mark`) on message `message_ts`, like
/// `slack_event_callback_reaction_added.json`. `item_user` is the bot when the current fake
/// holds that message.
pub fn reaction_event_body(
    event_type: &str,
    event_id: &str,
    user: &str,
    reaction: &str,
    channel: &str,
    message_ts: &str,
) -> String {
    let known = current_fake().is_some_and(|fake| {
        lock(&fake.state)
            .messages
            .iter()
            .any(|m| m.channel == channel && m.ts == message_ts)
    });
    let mut event = json!({
        "type": event_type,
        "user": user,
        "reaction": reaction,
        "item": {"type": "message", "channel": channel, "ts": message_ts},
        "event_ts": now_slack_ts(),
    });
    if known {
        event["item_user"] = Value::String(BOT_USER_ID.into());
    }
    json!({
        "token": "XXYYZZ",
        "team_id": TEAM_ID,
        "api_app_id": API_APP_ID,
        "event": event,
        "type": "event_callback",
        "authed_users": [BOT_USER_ID],
        "event_id": event_id,
        "event_time": now_unix(),
    })
    .to_string()
}

/// JSON body of the Events API `url_verification` handshake (see `slack_url_verification.json`).
pub fn url_verification_body(challenge: &str) -> String {
    json!({
        "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
        "challenge": challenge,
        "type": "url_verification",
    })
    .to_string()
}
