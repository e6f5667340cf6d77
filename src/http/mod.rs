//! The bot's HTTP server: the API for CI (`/api/v1`), health, readiness and metrics, and the
//! web pages (`/ui`, see `web`).

mod api;
mod audit;
mod auth;
mod error;
mod governance;
pub mod openapi;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::engine::Engine;

pub use error::ApiError;

/// Largest request body accepted (SPEC §6: 413 above it).
pub const BODY_LIMIT: usize = 1 << 20;

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
}

/// The bot's routes plus `chat` (the adapters' inbound endpoints) and the web pages, under one
/// set of layers. `shutdown` ends the pages' live views when the server stops.
pub fn router(engine: Engine, chat: Router, shutdown: CancellationToken) -> Router {
    let pages = crate::web::routes(engine.clone(), shutdown);
    let state = AppState { engine };
    // Built from the same list as the OpenAPI description, so every route is described.
    let (api, _) = openapi::api_routes().split_for_parts();
    let api = api.fallback(api_not_found);
    Router::new()
        .nest(openapi::API_PREFIX, api)
        .merge(Router::from(openapi::operations_routes()))
        .with_state(state.clone())
        .merge(chat)
        .merge(pages)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(TraceLayer::new_for_http())
}

async fn api_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such API route; see the HTTP API section of the README",
    )
}

/// Counts requests by route template (never the raw path, which would explode label cardinality).
async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    state
        .engine
        .metrics()
        .http_request(&route, response.status().as_u16());
    response
}

/// `{"status": "ok"}` or `{"status": "ready"}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    status: &'static str,
}

#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "The process is up", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses(
        (status = 200, description = "The database answers and its migrations are applied", body = Health),
        (status = 503, description = "Not ready", body = openapi::ErrorEnvelope),
    ))]
async fn readyz(State(state): State<AppState>) -> Response {
    let ready = tokio::time::timeout(Duration::from_secs(2), state.engine.is_ready())
        .await
        .unwrap_or(false);
    if ready {
        Json(Health { status: "ready" }).into_response()
    } else {
        let body = json!({"error": {"code": "not_ready", "message": "the database is unreachable or its migrations are not applied"}});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 500, description = "The database could not be read", body = openapi::ErrorEnvelope),
    ))]
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.engine.metrics_text().await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
