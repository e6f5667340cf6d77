//! A fake of Slack Socket Mode on loopback, in front of a [`FakeSlack`] Web API.
//!
//! [`FakeSocketMode::start`] serves a Web API base URL (`http://127.0.0.1:PORT/api`) that answers
//! `apps.connections.open` itself, for the app-level token [`APP_TOKEN`] only, with
//! `ws://127.0.0.1:WSPORT/link/?ticket=N`, and forwards every other method to the wrapped
//! [`FakeSlack`] (which checks the bot token and keeps the messages). The WebSocket server accepts
//! every connection the bot opens and queues it for the test, which plays Slack on it: `hello`,
//! envelopes shaped like `slack_socket_mode_*` fixtures, `disconnect`, and reading the acks.
//!
//! Envelope payloads are built from the same builders as the HTTP tests
//! ([`fake_slack::slash_command_body`], [`fake_slack::block_action_body`],
//! [`fake_slack::reaction_event_body`]): Socket Mode carries the same payloads as JSON.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::WebSocketStream;

use super::fake_slack::{self, FakeSlack, API_APP_ID};

/// The app-level token (`xapp-…`) the bot must open connections with.
pub const APP_TOKEN: &str = "xapp-1-A0RELEASE1-1234-socketmodetest";
/// How long the fake waits for the bot to connect, ack, or close.
pub const WAIT: Duration = Duration::from_secs(10);

struct Front {
    web_api: String,
    ws_base: String,
    opens: AtomicUsize,
    http: reqwest::Client,
}

/// Socket Mode in front of a [`FakeSlack`]; stops its servers when dropped.
pub struct FakeSocketMode {
    front: Arc<Front>,
    api_url: String,
    connections: mpsc::UnboundedReceiver<Connection>,
    servers: Vec<JoinHandle<()>>,
}

impl Drop for FakeSocketMode {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

impl FakeSocketMode {
    pub async fn start(web_api: &FakeSlack) -> FakeSocketMode {
        let ws_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind WS");
        let ws_addr = ws_listener.local_addr().expect("WS address");
        let api_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind API");
        let api_addr = api_listener.local_addr().expect("API address");
        let front = Arc::new(Front {
            web_api: web_api
                .api_url()
                .strip_suffix("/api")
                .expect("FakeSlack api_url ends in /api")
                .to_string(),
            ws_base: format!("ws://{ws_addr}"),
            opens: AtomicUsize::new(0),
            http: reqwest::Client::new(),
        });
        let app = Router::new()
            .fallback(web_api_front)
            .with_state(front.clone());
        let api_server = tokio::spawn(async move {
            let _ = axum::serve(api_listener, app).await;
        });
        let (queue, connections) = mpsc::unbounded_channel();
        let ws_server = tokio::spawn(async move {
            while let Ok((stream, _)) = ws_listener.accept().await {
                let queue = queue.clone();
                tokio::spawn(async move {
                    if let Some(connection) = Connection::accept(stream).await {
                        let _ = queue.send(connection);
                    }
                });
            }
        });
        FakeSocketMode {
            front,
            api_url: format!("http://{api_addr}/api"),
            connections,
            servers: vec![api_server, ws_server],
        }
    }

    /// The Web API base URL for `[slack].api_url`.
    pub fn api_url(&self) -> String {
        self.api_url.clone()
    }

    /// Successful `apps.connections.open` calls so far.
    pub fn opens(&self) -> usize {
        self.front.opens.load(Ordering::SeqCst)
    }

    /// The next WebSocket the bot opens, in arrival order; fails after [`WAIT`].
    pub async fn next_connection(&mut self) -> Connection {
        tokio::time::timeout(WAIT, self.connections.recv())
            .await
            .expect("the bot opened a Socket Mode connection in time")
            .expect("the fake WS server is running")
    }
}

async fn web_api_front(State(front): State<Arc<Front>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 4 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let bearer = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if parts.uri.path() == "/api/apps.connections.open" {
        return match bearer {
            None => Json(json!({"ok": false, "error": "not_authed"})).into_response(),
            Some(APP_TOKEN) => {
                let ticket = front.opens.fetch_add(1, Ordering::SeqCst) + 1;
                let url = format!("{}/link/?ticket={ticket}", front.ws_base);
                Json(json!({"ok": true, "url": url})).into_response()
            }
            // Slack refuses bot tokens here.
            Some(token) if token.starts_with("xoxb-") => {
                Json(json!({"ok": false, "error": "not_allowed_token_type"})).into_response()
            }
            Some(_) => Json(json!({"ok": false, "error": "invalid_auth"})).into_response(),
        };
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut forward = front.http.request(
        parts.method.clone(),
        format!("{}{path_and_query}", front.web_api),
    );
    for name in [header::CONTENT_TYPE, header::AUTHORIZATION] {
        if let Some(value) = parts.headers.get(&name) {
            forward = forward.header(name, value.clone());
        }
    }
    let answer = match forward.body(bytes).send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    let mut headers = Vec::new();
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
        if let Some(value) = answer.headers().get(&name) {
            headers.push((name, value.clone()));
        }
    }
    let body = answer.bytes().await.unwrap_or_default();
    let mut response = (status, body).into_response();
    for (name, value) in headers {
        response.headers_mut().insert(name, value);
    }
    response
}

/// One Socket Mode WebSocket, seen from Slack's side.
pub struct Connection {
    /// The path and query the bot connected to (`/link/?ticket=N`).
    pub path: String,
    ws: WebSocketStream<TcpStream>,
}

impl Connection {
    // The callback's error type is tungstenite's `ErrorResponse`, an HTTP response.
    #[allow(clippy::result_large_err)]
    async fn accept(stream: TcpStream) -> Option<Connection> {
        let mut path = String::new();
        let record = |request: &server::Request, response: server::Response| {
            path = request.uri().to_string();
            Ok(response)
        };
        let ws = tokio_tungstenite::accept_hdr_async(stream, record)
            .await
            .ok()?;
        Some(Connection { path, ws })
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Frame::text(frame.to_string()))
            .await
            .expect("send a frame to the bot");
    }

    /// Slack's first frame (`slack_socket_mode_hello.documented.txt`, with its typos fixed).
    pub async fn hello(&mut self) {
        self.send(json!({
            "type": "hello",
            "connection_info": {"app_id": API_APP_ID},
            "num_connections": 1,
            "debug_info": {
                "host": "applink-fake-1",
                "started": "2026-11-17 09:00:00.000",
                "build_number": 54,
                "approximate_connection_time": 3600
            }
        }))
        .await;
    }

    /// Asks the bot to reconnect, as `slack_socket_mode_disconnect_refresh_requested.json`.
    pub async fn disconnect(&mut self) {
        self.send(json!({
            "type": "disconnect",
            "reason": "refresh_requested",
            "debug_info": {"host": "applink-fake-1"}
        }))
        .await;
    }

    /// The next text frame from the bot, as JSON; `None` once the bot closed the connection.
    /// Fails after [`WAIT`].
    pub async fn receive(&mut self) -> Option<Value> {
        let next = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Frame::Text(text))) => {
                        return Some(serde_json::from_str(&text).unwrap_or_else(|e| {
                            panic!("the bot sent a frame that is not JSON ({e}): {text}")
                        }))
                    }
                    // Pings are answered by tungstenite while reading.
                    Some(Ok(Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_))) => continue,
                    Some(Ok(Frame::Binary(data))) => {
                        panic!("the bot sent a binary frame: {data:?}")
                    }
                    Some(Ok(Frame::Close(_))) | Some(Err(_)) | None => return None,
                }
            }
        };
        tokio::time::timeout(WAIT, next)
            .await
            .expect("the bot answered or closed in time")
    }

    /// Waits for the bot to close this connection; fails if it sends anything else.
    pub async fn expect_closed(&mut self) {
        if let Some(frame) = self.receive().await {
            panic!("expected the bot to close the connection, got {frame}");
        }
    }

    /// Sends an envelope of `kind` carrying `payload` and returns the bot's ack for it.
    pub async fn deliver(&mut self, kind: &str, payload: Value, accepts_payload: bool) -> Value {
        let envelope_id = uuid::Uuid::new_v4().to_string();
        self.send(json!({
            "payload": payload,
            "envelope_id": envelope_id,
            "type": kind,
            "accepts_response_payload": accepts_payload,
        }))
        .await;
        let ack = self
            .receive()
            .await
            .unwrap_or_else(|| panic!("the bot closed the connection instead of acking {kind}"));
        assert_eq!(
            ack["envelope_id"], envelope_id,
            "ack of the {kind} envelope"
        );
        ack
    }

    /// `user` types `/release <text>` in `channel`; returns the ack
    /// (`{"envelope_id", "payload": {"response_type", "text"}}`).
    pub async fn slash(&mut self, user: &str, channel: &str, text: &str) -> Value {
        let form = fake_slack::slash_command_body(user, channel, text);
        let payload: serde_json::Map<String, Value> = fake_slack::parse_form(&form)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        self.deliver("slash_commands", Value::Object(payload), true)
            .await
    }

    /// `user` clicks the button `action` on card `ts` of `promotion`; returns the ack.
    pub async fn click(
        &mut self,
        user: &str,
        channel: &str,
        ts: &str,
        action: &str,
        promotion: i64,
    ) -> Value {
        let form = fake_slack::block_action_body(
            user,
            channel,
            ts,
            &format!("shipmate:{action}"),
            &promotion.to_string(),
        );
        let (_, payload) = fake_slack::parse_form(&form)
            .into_iter()
            .find(|(k, _)| k == "payload")
            .expect("payload field");
        let payload = serde_json::from_str(&payload).expect("block_actions JSON");
        self.deliver("interactive", payload, true).await
    }

    /// An Events API delivery (the JSON of [`fake_slack::reaction_event_body`]); returns the ack.
    pub async fn event(&mut self, body: &str) -> Value {
        let payload = serde_json::from_str(body).expect("event JSON");
        self.deliver("events_api", payload, false).await
    }
}
