//! A loopback Argo CD API server (SPEC §5 `argocd`, notes/backends.md §5): one application whose
//! last operation Succeeded and which is Healthy. A sync starts an operation (`startedAt` in whole
//! seconds, as Argo CD writes it); the next `stale` GETs still show the previous operation (the
//! stale-status trap), then `Running`/`Progressing` for `running` GETs (for ever when `None`,
//! until [`FakeArgo::finish`]), then the [`End`]. Bearer token checked (401), an unknown app is
//! 403 "permission denied", a sync while an operation runs is 400 "another operation is already
//! in progress".

use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Json;
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

pub const TOKEN: &str = "argocd-token-3d9f";
pub const APP: &str = "api-prod";
pub const PREVIOUS_STARTED_AT: &str = "2026-01-01T00:00:00Z";

/// How an operation ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Succeeded, Synced, Healthy.
    Healthy,
    /// Succeeded, Synced, but the app is Degraded.
    Degraded,
    /// The operation Failed with this message.
    Failed(String),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub body: Value,
}

#[derive(Debug, Clone)]
struct Operation {
    started_at: String,
    gets: usize,
    /// Ended by the test or by a terminate.
    ended: Option<End>,
}

struct Inner {
    stale: usize,
    running: Option<usize>,
    end: End,
    /// The next syncs are refused with this (status, message).
    refuse_sync: Option<(u16, String)>,
    images: Vec<String>,
    /// The operation shown before any sync, or the last one once it ended.
    shown: Value,
    current: Option<Operation>,
    received: Vec<Received>,
}

#[derive(Clone)]
pub struct FakeArgo {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

fn app_json(images: &[String], status: Value) -> Value {
    json!({
        "metadata": {"name": APP, "namespace": "argocd"},
        "spec": {"source": {"repoURL": "https://git.example/deploy.git", "path": "api",
                 "kustomize": {"images": images}}},
        "status": status,
    })
}

fn status(phase: &str, started_at: &str, message: &str, sync: &str, health: &str) -> Value {
    json!({
        "operationState": {"phase": phase, "startedAt": started_at, "message": message,
                           "syncResult": {"revision": "4f1c2e9"}},
        "sync": {"status": sync, "revision": "4f1c2e9"},
        "health": {"status": health},
    })
}

fn error(code: u16, grpc: u16, message: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(json!({"error": message, "code": grpc, "message": message, "details": []})),
    )
        .into_response()
}

impl FakeArgo {
    pub async fn start(stale: usize, running: Option<usize>, end: End) -> FakeArgo {
        let inner = Arc::new(Mutex::new(Inner {
            stale,
            running,
            end,
            refuse_sync: None,
            images: vec!["ghcr.io/acme/api:0.9.0".into()],
            shown: status(
                "Succeeded",
                PREVIOUS_STARTED_AT,
                "successfully synced (all tasks run)",
                "Synced",
                "Healthy",
            ),
            current: None,
            received: Vec::new(),
        }));
        let app = axum::Router::new()
            .route("/api/v1/applications/{name}", get(get_app).patch(patch_app))
            .route("/api/v1/applications/{name}/sync", post(sync))
            .route("/api/v1/applications/{name}/operation", delete(terminate))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeArgo { url, inner }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn refuse_sync(&self, status: u16, message: &str) {
        self.lock().refuse_sync = Some((status, message.into()));
    }

    /// Ends the running operation as `end`.
    pub fn finish(&self, end: End) {
        if let Some(op) = self.lock().current.as_mut() {
            op.ended = Some(end);
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    pub fn count(&self, method: &str, path_end: &str) -> usize {
        self.received()
            .iter()
            .filter(|r| r.method == method && r.path.ends_with(path_end))
            .count()
    }

    pub fn syncs(&self) -> usize {
        self.count("POST", "/sync")
    }

    /// GETs of the application since the last sync.
    pub fn gets_since_sync(&self) -> usize {
        self.lock().current.as_ref().map_or(0, |op| op.gets)
    }

    pub fn images(&self) -> Vec<String> {
        self.lock().images.clone()
    }
}

type Shared = State<Arc<Mutex<Inner>>>;

/// Records the request, then checks the token and the app: the refusal, if any.
fn admit(
    inner: &mut Inner,
    method: &str,
    path: String,
    headers: &HeaderMap,
    name: &str,
    body: Value,
) -> Option<Response> {
    inner.received.push(Received {
        method: method.into(),
        path,
        body,
    });
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(TOKEN) {
        return Some(error(
            401,
            16,
            "invalid session: token signature is invalid",
        ));
    }
    if name != APP {
        return Some(error(403, 7, "permission denied"));
    }
    None
}

/// What the application shows now, counting this GET.
fn current_status(inner: &mut Inner) -> Value {
    let (stale, running, end) = (inner.stale, inner.running, inner.end.clone());
    let Some(op) = inner.current.as_mut() else {
        return inner.shown.clone();
    };
    op.gets += 1;
    if op.gets <= stale && op.ended.is_none() {
        return inner.shown.clone();
    }
    let over = match (&op.ended, running) {
        (Some(end), _) => Some(end.clone()),
        (None, Some(n)) if op.gets > stale + n => Some(end),
        _ => None,
    };
    let started = op.started_at.clone();
    match over {
        None => status(
            "Running",
            &started,
            "waiting for healthy state",
            "OutOfSync",
            "Progressing",
        ),
        Some(end) => {
            let shown = match &end {
                End::Healthy => status(
                    "Succeeded",
                    &started,
                    "successfully synced",
                    "Synced",
                    "Healthy",
                ),
                End::Degraded => status(
                    "Succeeded",
                    &started,
                    "successfully synced",
                    "Synced",
                    "Degraded",
                ),
                End::Failed(message) => status("Failed", &started, message, "OutOfSync", "Healthy"),
            };
            op.ended = Some(end);
            inner.shown = shown.clone();
            shown
        }
    }
}

async fn get_app(State(inner): Shared, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
    let path = format!("/api/v1/applications/{name}");
    if let Some(refused) = admit(&mut inner, "GET", path, &headers, &name, Value::Null) {
        return refused;
    }
    let status = current_status(&mut inner);
    Json(app_json(&inner.images, status)).into_response()
}

async fn patch_app(
    State(inner): Shared,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let path = format!("/api/v1/applications/{name}");
    if let Some(refused) = admit(&mut inner, "PATCH", path, &headers, &name, body.clone()) {
        return refused;
    }
    if body["patchType"] != "merge" {
        return error(400, 3, "unsupported patch type");
    }
    let patch: Value = body["patch"]
        .as_str()
        .and_then(|p| serde_json::from_str(p).ok())
        .unwrap_or(Value::Null);
    let Some(images) = patch["spec"]["source"]["kustomize"]["images"].as_array() else {
        return error(400, 3, "error unmarshaling patch");
    };
    inner.images = images
        .iter()
        .filter_map(|i| i.as_str().map(str::to_string))
        .collect();
    let shown = inner.shown.clone();
    Json(app_json(&inner.images, shown)).into_response()
}

async fn sync(
    State(inner): Shared,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let path = format!("/api/v1/applications/{name}/sync");
    if let Some(refused) = admit(&mut inner, "POST", path, &headers, &name, body) {
        return refused;
    }
    if let Some((status, message)) = inner.refuse_sync.clone() {
        return error(status, 9, &message);
    }
    if inner.current.as_ref().is_some_and(|op| op.ended.is_none()) {
        return error(400, 9, "another operation is already in progress");
    }
    inner.current = Some(Operation {
        started_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        gets: 0,
        ended: None,
    });
    let shown = inner.shown.clone();
    let mut app = app_json(&inner.images, shown);
    app["operation"] = json!({"sync": {}});
    Json(app).into_response()
}

async fn terminate(State(inner): Shared, Path(name): Path<String>, headers: HeaderMap) -> Response {
    let mut inner = inner.lock().unwrap_or_else(|p| p.into_inner());
    let path = format!("/api/v1/applications/{name}/operation");
    if let Some(refused) = admit(&mut inner, "DELETE", path, &headers, &name, Value::Null) {
        return refused;
    }
    if let Some(op) = inner.current.as_mut() {
        if op.ended.is_none() {
            op.ended = Some(End::Failed("Operation terminated".into()));
        }
    }
    Json(json!({})).into_response()
}
