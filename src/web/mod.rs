//! The web pages (SPEC §9): server-rendered HTML (askama templates, escaped by default) that
//! reads through the engine only. `/ui` (what runs where, the queue, windows, freezes),
//! `/ui/promotions/{id}` (with live updates over server-sent events), `/ui/audit`, `/ui/dora`,
//! and the sign-in of `[web] access = "token"`. Every page is read-only and works without
//! JavaScript; one small inline script swaps in live state where scripts run.

mod access;
mod charts;
mod dora;
mod live;
mod pages;
mod view;

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::engine::{EngineError, ErrorKind};

pub use live::MAX_LIVE_VIEWS;

#[derive(Clone)]
pub struct WebState {
    pub engine: Engine,
    /// Open live views (server-sent event streams); a page works without one.
    live: Arc<Semaphore>,
    /// Ends the live views when the server stops (they would hold its graceful shutdown).
    shutdown: CancellationToken,
}

/// The pages' routes, with the headers every page carries.
pub fn routes(engine: Engine, shutdown: CancellationToken) -> Router {
    let state = WebState {
        engine,
        live: Arc::new(Semaphore::new(MAX_LIVE_VIEWS)),
        shutdown,
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(pages::overview))
        .route("/ui/", get(|| async { Redirect::permanent("/ui") }))
        .route("/ui/login", get(access::login_form).post(access::login))
        .route("/ui/logout", post(access::logout))
        .route("/ui/promotions/{id}", get(pages::promotion))
        .route("/ui/promotions/{id}/events", get(live::promotion_events))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/dora", get(pages::dora))
        .fallback(pages::not_found)
        .with_state(state)
        .layer(axum::middleware::map_response(page_headers))
}

/// No caching of pages that may be signed in; no framing; no referrer (a signed link must not
/// leak to the backend links a page shows); scripts only the live-update one.
async fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let mut set = |name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(header::CACHE_CONTROL, "no-store");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    if let Ok(policy) = HeaderValue::from_str(live::content_security_policy()) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
}

/// A rendered template as a response, or a plain 500 when a template fails (it cannot, short of
/// a bug: templates are checked at compile time).
fn html(status: StatusCode, rendered: Result<String, askama::Error>) -> Response {
    match rendered {
        Ok(body) => (status, Html(body)).into_response(),
        Err(error) => {
            tracing::error!(%error, "a web page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "this page failed to render; the bot's log says why",
            )
                .into_response()
        }
    }
}

/// A page that says what went wrong and where to go instead.
fn message(
    status: StatusCode,
    heading: &str,
    message: &str,
    action: Option<(&str, &str)>,
    layout: view::Layout,
) -> Response {
    use askama::Template;
    let page = view::MessagePage {
        layout,
        heading,
        message,
        action_href: action.map(|(href, _)| href),
        action_label: action.map_or("", |(_, label)| label),
    };
    html(status, page.render())
}

/// An engine refusal or failure as a page.
fn engine_error(error: EngineError, layout: view::Layout) -> Response {
    let (status, heading) = match error.kind {
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, "Not found"),
        ErrorKind::BadInput => (StatusCode::BAD_REQUEST, "Not understood"),
        ErrorKind::Internal => {
            tracing::error!(%error, "a web page could not be read");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side",
            )
        }
        _ => (StatusCode::CONFLICT, "Not available"),
    };
    let text = match error.kind {
        ErrorKind::Internal => "The bot could not read its database; try again, and check the bot's log if it persists.".to_string(),
        _ => error.message,
    };
    message(
        status,
        heading,
        &text,
        Some(("/ui", "Back to the overview")),
        layout,
    )
}
