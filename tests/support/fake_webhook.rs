//! A loopback webhook receiver (SPEC §5 `webhook`): checks every request's
//! `X-Shipmate-Signature`, requires an `Idempotency-Key` on deploys and dedupes by it (a repeat
//! is answered with the deployment's current state and starts nothing), and answers as the test
//! sets its [`Mode`]: at once, asynchronously through a status URL, after one 503, or with a 400.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

pub const SECRET: &str = "hook-secret-5c1e0b";

/// How the receiver answers a new deployment.
#[derive(Debug, Clone)]
pub enum Mode {
    /// 200 `{"status":"succeeded","log":[…]}`.
    Succeed,
    /// 200 with an empty body.
    SucceedEmpty,
    /// 200 `{"status":"failed","message":…}`.
    Fail(String),
    /// 202 `{"status":"running","status_url":…}`; the status answers `running` for `polls` polls
    /// (for ever when `None`, until [`FakeWebhook::finish`]), then `failed` with `fail`'s message
    /// when set, else `succeeded`.
    Async {
        polls: Option<usize>,
        fail: Option<String>,
    },
    /// The first deploy request gets 503 with `Retry-After: 1`; then as `Succeed`.
    UnavailableOnce,
    /// 400 `{"error":"unknown environment …"}`.
    BadRequest,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub body: Value,
    /// The signature matched `SECRET` over `"<timestamp>.<body>"`.
    pub signed: bool,
}

/// One deployment the receiver started.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub key: String,
    /// The deploy request's body.
    pub request: Value,
    pub polls: usize,
    pub cancelled: bool,
    finish: Option<Option<String>>,
}

struct Inner {
    mode: Mode,
    received: Vec<Received>,
    deployments: Vec<Deployment>,
    by_key: HashMap<String, usize>,
    refused_once: bool,
}

#[derive(Clone)]
pub struct FakeWebhook {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeWebhook {
    pub async fn start(mode: Mode) -> FakeWebhook {
        let inner = Arc::new(Mutex::new(Inner {
            mode,
            received: Vec::new(),
            deployments: Vec::new(),
            by_key: HashMap::new(),
            refused_once: false,
        }));
        let app = axum::Router::new()
            .route("/hooks/deploy", post(hook))
            .route("/status/{n}", get(status))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/hooks/deploy",
            listener.local_addr().expect("address")
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeWebhook { url, inner }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_mode(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    /// Ends every running deployment: `None` succeeded, `Some(message)` failed.
    pub fn finish(&self, failure: Option<&str>) {
        for deployment in &mut self.lock().deployments {
            deployment.finish = Some(failure.map(str::to_string));
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// Requests whose body's `event` is `event`.
    pub fn events(&self, event: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.body["event"] == event)
            .collect()
    }

    pub fn deployments(&self) -> Vec<Deployment> {
        self.lock().deployments.clone()
    }

    /// Status polls received, across deployments.
    pub fn polls(&self) -> usize {
        self.received().iter().filter(|r| r.method == "GET").count()
    }
}

fn verify(headers: &HeaderMap, body: &str) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(timestamp), Some(signature)) =
        (text("x-shipmate-timestamp"), text("x-shipmate-signature"))
    else {
        return false;
    };
    let fresh = timestamp
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() <= 300);
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    fresh && expected == signature
}

fn record(inner: &mut Inner, method: &str, path: &str, headers: &HeaderMap, body: &str) -> bool {
    let signed = verify(headers, body);
    inner.received.push(Received {
        method: method.into(),
        path: path.into(),
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
        signed,
    });
    signed
}

fn bad_signature() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "bad or missing X-Shipmate-Signature"})),
    )
        .into_response()
}

/// What a deployment's status says now (`polls` already counted).
fn state_of(deployment: &Deployment, n: usize, mode: &Mode) -> Value {
    let version = deployment.request["version"].as_str().unwrap_or_default();
    let mut log = vec![format!("accepted {version}")];
    log.extend((1..=deployment.polls).map(|i| format!("poll {i} of {version}")));
    let ended = match (&deployment.finish, mode) {
        (Some(end), _) => Some(end.clone()),
        (
            None,
            Mode::Async {
                polls: Some(p),
                fail,
            },
        ) if deployment.polls >= *p => Some(fail.clone()),
        _ => None,
    };
    match ended {
        _ if deployment.cancelled => {
            json!({"status": "failed", "message": "cancelled by shipmate", "log": log})
        }
        None => {
            json!({"status": "running", "status_url": format!("/status/{n}"), "log": log})
        }
        Some(None) => json!({"status": "succeeded", "log": log}),
        Some(Some(message)) => json!({"status": "failed", "message": message, "log": log}),
    }
}

async fn hook(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
    if !record(&mut inner, "POST", "/hooks/deploy", &headers, &body) {
        return bad_signature();
    }
    let request: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    match request["event"].as_str() {
        Some("check") => return Json(json!({"status": "ok"})).into_response(),
        Some("cancel") => {
            let of = |d: &Deployment| {
                ["promotion_id", "attempt", "step", "phase"]
                    .iter()
                    .all(|k| d.request[*k] == request[*k])
            };
            for deployment in inner.deployments.iter_mut().filter(|d| of(d)) {
                deployment.cancelled = true;
            }
            return Json(json!({"status": "cancelled"})).into_response();
        }
        Some("deploy") => {}
        _ => {
            return (StatusCode::BAD_REQUEST, "unknown event").into_response();
        }
    }
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return (StatusCode::BAD_REQUEST, "missing Idempotency-Key").into_response();
    };
    let mode = inner.mode.clone();
    if let Some(&n) = inner.by_key.get(&key) {
        // A repeat: the same deployment, as it stands.
        let state = state_of(&inner.deployments[n], n, &mode);
        let code = if state["status"] == "running" {
            StatusCode::ACCEPTED
        } else {
            StatusCode::OK
        };
        return (code, Json(state)).into_response();
    }
    match &mode {
        Mode::UnavailableOnce if !inner.refused_once => {
            inner.refused_once = true;
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "1")],
                "deployer restarting",
            )
                .into_response();
        }
        Mode::BadRequest => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "unknown environment for this deployer"})),
            )
                .into_response();
        }
        _ => {}
    }
    let n = inner.deployments.len();
    inner.deployments.push(Deployment {
        key: key.clone(),
        request: request.clone(),
        polls: 0,
        cancelled: false,
        finish: None,
    });
    inner.by_key.insert(key, n);
    let version = request["version"].as_str().unwrap_or_default();
    match mode {
        Mode::Succeed | Mode::UnavailableOnce => Json(json!({
            "status": "succeeded",
            "log": [format!("deployed {version}"), "all pods ready"],
        }))
        .into_response(),
        Mode::SucceedEmpty => StatusCode::OK.into_response(),
        Mode::Fail(message) => Json(json!({
            "status": "failed",
            "message": message,
            "log": [format!("deploying {version}")],
        }))
        .into_response(),
        Mode::Async { .. } => (
            StatusCode::ACCEPTED,
            Json(state_of(&inner.deployments[n], n, &mode)),
        )
            .into_response(),
        Mode::BadRequest => StatusCode::BAD_REQUEST.into_response(),
    }
}

async fn status(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(n): Path<usize>,
    headers: HeaderMap,
) -> Response {
    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
    if !record(&mut inner, "GET", &format!("/status/{n}"), &headers, "") {
        return bad_signature();
    }
    let mode = inner.mode.clone();
    let Some(deployment) = inner.deployments.get_mut(n) else {
        return (StatusCode::NOT_FOUND, "no such deployment").into_response();
    };
    if deployment.finish.is_none() && !deployment.cancelled {
        deployment.polls += 1;
    }
    Json(state_of(deployment, n, &mode)).into_response()
}
