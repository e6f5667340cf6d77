//! Live updates of a promotion's page over server-sent events: `/ui/promotions/{id}/events`
//! sends the page's state part (already rendered and escaped) whenever it changes, looking once a
//! second, and `end` once the promotion has ended. A small inline script swaps it in; without
//! scripts the page is complete as served.

use std::convert::Infallible;
use std::sync::LazyLock;
use std::time::Duration;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::stream::{self, Stream};
use sha2::{Digest, Sha256};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::access::{require_for_promotion, LinkQuery};
use super::pages::{live_state, promotion_id};
use super::WebState;
use crate::engine::Engine;

/// Live views open at once on one replica; more are refused (the page still works, reloaded).
pub const MAX_LIVE_VIEWS: usize = 64;
/// How often a live view looks for a change.
const POLL: Duration = Duration::from_secs(1);
/// A live view ends after this long (the browser opens a new one by itself).
const MAX_VIEW: Duration = Duration::from_secs(30 * 60);

/// Swaps the `state` events into `#live` and stops at `end`.
pub const SCRIPT: &str = "(function(){var box=document.getElementById('live');if(!box||!window.EventSource)return;var es=new EventSource(box.dataset.events);es.addEventListener('state',function(e){box.innerHTML=e.data;});es.addEventListener('end',function(){es.close();});})();";

/// Only our own script runs (by its hash), styles are inline, nothing loads from elsewhere.
pub fn content_security_policy() -> &'static str {
    static POLICY: LazyLock<String> = LazyLock::new(|| {
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(SCRIPT));
        format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'"
        )
    });
    &POLICY
}

pub async fn promotion_events(
    State(state): State<WebState>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    link: Result<Query<LinkQuery>, QueryRejection>,
) -> Response {
    let link = link.map(|Query(q)| q).unwrap_or_default();
    let Some(id) = promotion_id(&id) else {
        return (StatusCode::BAD_REQUEST, "not a promotion id").into_response();
    };
    if let Err(denied) = require_for_promotion(&state, &headers, &uri, id, &link) {
        return denied.into_response();
    }
    let Ok(permit) = state.live.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live views are open; the page works without one: reload it for news",
        )
            .into_response();
    };
    let watch = Watch {
        engine: state.engine.clone(),
        id,
        last: None,
        ended: false,
        stop: state.shutdown.clone(),
        until: tokio::time::Instant::now() + MAX_VIEW,
        _permit: permit,
    };
    Sse::new(changes(watch))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// One live view: what it last sent, and when it stops.
struct Watch {
    engine: Engine,
    id: i64,
    last: Option<String>,
    ended: bool,
    stop: CancellationToken,
    until: tokio::time::Instant,
    /// Held while the view is open: one of [`MAX_LIVE_VIEWS`].
    _permit: OwnedSemaphorePermit,
}

fn changes(watch: Watch) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(watch, |mut watch| async move {
        if watch.ended {
            return None;
        }
        loop {
            if watch.stop.is_cancelled() || tokio::time::Instant::now() >= watch.until {
                return None;
            }
            let fragment = match watch.engine.promotion_page(watch.id).await {
                Ok(page) => live_state(page),
                Err(error) => {
                    tracing::warn!(%error, promotion = watch.id, "a live view could not read its promotion");
                    return None;
                }
            };
            let terminal = fragment.terminal;
            let html = match fragment.render() {
                Ok(html) => html,
                Err(error) => {
                    tracing::error!(%error, "a live view failed to render");
                    return None;
                }
            };
            if watch.last.as_deref() != Some(html.as_str()) {
                let event = Event::default().event("state").data(&html);
                watch.last = Some(html);
                return Some((Ok(event), watch));
            }
            if terminal {
                watch.ended = true;
                return Some((Ok(Event::default().event("end").data("ended")), watch));
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = watch.stop.cancelled() => return None,
            }
        }
    })
}
