//! The page handlers: read through the engine, shape for a template, render.

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::domain::manifest::group_changes;
use crate::domain::window::{Freeze, FreezeSource, Gate};
use crate::engine::pages::{AuditQuery, Overview, PromotionPage, RolloutReport};
use crate::engine::{DoraEntry, EnvironmentStatus, ServiceStatus};

use super::access::{require, require_for_promotion, LinkQuery, Viewer};
use super::dora::{self, DoraCell};
use super::view::{ago, iso, when, when_exact, Layout};
use super::{engine_error, html, live, message, WebState};

// ---- the overview ----

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewTemplate {
    layout: Layout,
    now: String,
    now_iso: String,
    environments: Vec<String>,
    rows: Vec<ServiceRow>,
    active: Vec<ActiveRow>,
    calendar: Vec<CalendarRow>,
    freezes: Vec<FreezeRow>,
}

struct ServiceRow {
    service: String,
    cells: Vec<Cell>,
}

/// One service in one environment.
#[derive(Default)]
struct Cell {
    /// The environment is in the service's pipeline.
    present: bool,
    version: Option<String>,
    since: String,
    since_iso: String,
    since_exact: String,
    by: String,
    active: Option<ActiveCell>,
}

struct ActiveCell {
    id: i64,
    version: String,
    state: &'static str,
    state_label: String,
}

struct ActiveRow {
    id: i64,
    service: String,
    version: String,
    environment: String,
    state: &'static str,
    state_label: String,
    approvals: String,
    requested_by: String,
    since: String,
    since_iso: String,
    since_exact: String,
    reason: String,
}

struct CalendarRow {
    environment: String,
    state: &'static str,
    detail: String,
    windows: Vec<String>,
}

struct FreezeRow {
    environments: String,
    start: String,
    end: String,
    reason: String,
    source: &'static str,
}

pub async fn overview(State(state): State<WebState>, headers: HeaderMap, uri: Uri) -> Response {
    let viewer = match require(&state, &headers, &uri) {
        Ok(viewer) => viewer,
        Err(denied) => return denied.into_response(),
    };
    match state.engine.overview().await {
        Ok(overview) => html(
            StatusCode::OK,
            overview_page(overview, viewer.layout("Releases")).render(),
        ),
        Err(error) => engine_error(error, viewer.layout("Releases")),
    }
}

fn overview_page(overview: Overview, layout: Layout) -> OverviewTemplate {
    let now = overview.now;
    let environments: Vec<String> = overview
        .environments
        .iter()
        .map(|e| e.environment.clone())
        .collect();
    let rows = overview
        .services
        .iter()
        .map(|service| ServiceRow {
            service: service.service.clone(),
            cells: environments
                .iter()
                .map(|name| cell(service, name, now))
                .collect(),
        })
        .collect();
    let active = overview
        .services
        .iter()
        .flat_map(|s| &s.environments)
        .filter_map(active_row(now))
        .collect();
    OverviewTemplate {
        layout,
        now: when(now),
        now_iso: iso(now),
        rows,
        active,
        calendar: overview
            .environments
            .into_iter()
            .map(|e| calendar_row(e.environment, &e.gate, e.windows))
            .collect(),
        freezes: overview.freezes.iter().map(freeze_row).collect(),
        environments,
    }
}

fn cell(service: &ServiceStatus, environment: &str, now: chrono::DateTime<chrono::Utc>) -> Cell {
    let Some(env) = service.environments.iter().find(|e| e.name == environment) else {
        return Cell::default();
    };
    let deployed = env.deployed.as_ref();
    let since = deployed.map(|p| p.finished_at().unwrap_or(p.updated_at));
    Cell {
        present: true,
        version: env.version.as_ref().map(ToString::to_string),
        since: since.map(|at| ago(now, at)).unwrap_or_default(),
        since_iso: since.map(iso).unwrap_or_default(),
        since_exact: since.map(when).unwrap_or_default(),
        by: deployed
            .map(|p| p.requested_by.to_string())
            .unwrap_or_default(),
        active: env.active.as_ref().map(|p| ActiveCell {
            id: p.id,
            version: p.version.to_string(),
            state: p.state().as_str(),
            state_label: p.state().label(),
        }),
    }
}

fn active_row(
    now: chrono::DateTime<chrono::Utc>,
) -> impl Fn(&EnvironmentStatus) -> Option<ActiveRow> {
    move |env| {
        let p = env.active.as_ref()?;
        let approvals = if p.required_approvals > 0 {
            format!("{}/{}", env.active_approvals, p.required_approvals)
        } else {
            "not needed".to_string()
        };
        Some(ActiveRow {
            id: p.id,
            service: p.service.clone(),
            version: p.version.to_string(),
            environment: p.environment.clone(),
            state: p.state().as_str(),
            state_label: p.state().label(),
            approvals,
            requested_by: p.requested_by.to_string(),
            since: ago(now, p.updated_at),
            since_iso: iso(p.updated_at),
            since_exact: when(p.updated_at),
            reason: p.reason().unwrap_or_default().to_string(),
        })
    }
}

fn calendar_row(
    environment: String,
    gate: &Gate,
    windows: Vec<crate::engine::pages::WindowOpenings>,
) -> CalendarRow {
    let (state, detail) = match gate {
        Gate::Open { closes_at: None } => ("open", String::new()),
        Gate::Open {
            closes_at: Some(end),
        } => ("open", format!("until {}", when(*end))),
        Gate::OutsideWindow {
            next_opening: Some(span),
        } => ("closed", format!("opens {}", when(span.start))),
        Gate::OutsideWindow { next_opening: None } => {
            ("closed", "no window opens again".to_string())
        }
        Gate::Frozen { until, reason } => (
            "frozen",
            format!(
                "until {}{}",
                when(*until),
                reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        ),
    };
    CalendarRow {
        environment,
        state,
        detail,
        windows: windows
            .into_iter()
            .map(|w| {
                let next = if w.next.is_empty() {
                    "never again".to_string()
                } else {
                    w.next.join("; ")
                };
                format!(
                    "{} ({}): {next}",
                    w.name,
                    crate::domain::duration::format_duration(w.duration)
                )
            })
            .collect(),
    }
}

fn freeze_row(freeze: &Freeze) -> FreezeRow {
    FreezeRow {
        environments: freeze
            .environments
            .iter()
            .map(|e| {
                if e == Freeze::ALL {
                    "every environment".to_string()
                } else {
                    e.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
        start: when(freeze.start),
        end: when(freeze.end),
        reason: freeze.reason.clone().unwrap_or_default(),
        source: match freeze.source {
            FreezeSource::Configured => "planned in bot.toml",
            FreezeSource::AdHoc => "with /release freeze",
        },
    }
}

// ---- one promotion ----

#[derive(Template)]
#[template(path = "promotion.html")]
struct PromotionTemplate {
    layout: Layout,
    title: String,
    events_url: String,
    live: String,
    live_updates: bool,
    script: &'static str,
}

/// The part of a promotion's page that live updates replace.
#[derive(Template)]
#[template(path = "promotion_live.html")]
pub(super) struct LiveTemplate {
    state: &'static str,
    state_label: String,
    reason: Option<String>,
    service: String,
    version: String,
    commit: Option<String>,
    from_environment: Option<String>,
    environment: String,
    rollback: bool,
    previous_version: Option<String>,
    requested_by: String,
    created: String,
    created_iso: String,
    started: Option<String>,
    finished: Option<String>,
    took: Option<String>,
    force_reason: Option<String>,
    hotfix_reason: Option<String>,
    retry_of: Option<i64>,
    notes: Option<String>,
    release_type: Option<String>,
    digest: Option<String>,
    /// Every change of the release, grouped: (group title, changes).
    changes: Vec<(&'static str, Vec<String>)>,
    changes_note: Option<String>,
    required_approvals: u32,
    /// (number, text, ticked by).
    checklist: Vec<(usize, String, Option<String>)>,
    approvals: Vec<(String, String)>,
    rollout: Option<RolloutReport>,
    events: Vec<EventRow>,
    log: Vec<String>,
    now: String,
    now_iso: String,
    pub terminal: bool,
}

struct EventRow {
    at: String,
    at_iso: String,
    kind: String,
    actor: String,
    detail: String,
}

/// `#42 api 1.4.2 → production`
pub(super) fn promotion_title(page: &PromotionPage) -> String {
    let p = &page.detail.view.promotion;
    let rollback = if p.rollback { " (rollback)" } else { "" };
    format!("{}{rollback}", p.describe())
}

pub(super) fn live_state(page: PromotionPage) -> LiveTemplate {
    let now = page.now;
    let view = page.detail.view;
    let p = view.promotion;
    let took = p.started_at().zip(p.finished_at()).map(|(start, end)| {
        crate::domain::duration::format_duration((end - start).to_std().unwrap_or_default())
    });
    LiveTemplate {
        state: p.state().as_str(),
        state_label: p.state().label(),
        reason: p.reason().map(str::to_string),
        version: p.version.to_string(),
        commit: view.commit,
        from_environment: page.from_environment,
        rollback: p.rollback,
        previous_version: p.previous_version.as_ref().map(ToString::to_string),
        requested_by: p.requested_by.to_string(),
        created: when(p.created_at),
        created_iso: iso(p.created_at),
        started: p.started_at().map(when),
        finished: p.finished_at().map(when),
        took,
        force_reason: p.force_reason.clone(),
        hotfix_reason: p.hotfix_reason.clone(),
        retry_of: p.retry_of,
        checklist: page
            .checklist
            .into_iter()
            .map(|line| (line.number, line.text, line.ticked_by))
            .collect(),
        notes: view.notes,
        release_type: p.release_type().map(|kind| kind.to_string()),
        digest: view.manifest.digest.as_ref().map(ToString::to_string),
        changes: group_changes(&view.manifest.changes, view.manifest.changes.len())
            .groups
            .into_iter()
            .map(|(group, changes)| (group.title(), changes))
            .collect(),
        changes_note: view.manifest.changes_note,
        required_approvals: p.required_approvals,
        approvals: view
            .approvals
            .iter()
            .map(|a| (a.by.to_string(), when_exact(a.at)))
            .collect(),
        rollout: page.rollout,
        events: page
            .detail
            .events
            .into_iter()
            .map(|e| EventRow {
                at: when_exact(e.at),
                at_iso: iso(e.at),
                kind: e.kind.to_string(),
                actor: e.actor,
                detail: e.detail,
            })
            .collect(),
        log: page.log,
        now: when(now),
        now_iso: iso(now),
        terminal: p.state().is_terminal(),
        service: p.service,
        environment: p.environment,
    }
}

/// A promotion id from the path (`42` or `#42`).
pub(super) fn promotion_id(text: &str) -> Option<i64> {
    text.trim_start_matches('#')
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
}

pub async fn promotion(
    State(state): State<WebState>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    link: Result<Query<LinkQuery>, QueryRejection>,
) -> Response {
    let link = link.map(|Query(q)| q).unwrap_or_default();
    let Some(id) = promotion_id(&id) else {
        return message(
            StatusCode::BAD_REQUEST,
            "Not a promotion",
            &format!("`{id}` is not a promotion id; promotion pages are /ui/promotions/<number>, e.g. /ui/promotions/42"),
            Some(("/ui", "Back to the overview")),
            Layout::bare("Not a promotion"),
        );
    };
    let viewer = match require_for_promotion(&state, &headers, &uri, id, &link) {
        Ok(viewer) => viewer,
        Err(denied) => return denied.into_response(),
    };
    let page = match state.engine.promotion_page(id).await {
        Ok(page) => page,
        Err(error) => return engine_error(error, viewer.layout("Promotion")),
    };
    let title = promotion_title(&page);
    let live = live_state(page);
    let live_updates = !live.terminal;
    let events_url = match (&viewer, &link.exp, &link.sig) {
        (Viewer::Link(_), Some(exp), Some(sig)) => {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("exp", exp)
                .append_pair("sig", sig)
                .finish();
            format!("/ui/promotions/{id}/events?{query}")
        }
        _ => format!("/ui/promotions/{id}/events"),
    };
    let page = live.render().map(|live| PromotionTemplate {
        layout: viewer.layout(title.clone()),
        title,
        events_url,
        live,
        live_updates,
        script: live::SCRIPT,
    });
    html(StatusCode::OK, page.and_then(|page| page.render()))
}

// ---- the audit log ----

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditTemplate {
    layout: Layout,
    services: Vec<String>,
    environments: Vec<String>,
    filter: AuditQuery,
    filtered: bool,
    entries: Vec<AuditRow>,
    paged: bool,
    newest_href: String,
    older_href: Option<String>,
}

struct AuditRow {
    at: String,
    at_iso: String,
    promotion_id: Option<i64>,
    /// `api → production`
    place: String,
    kind: String,
    actor: String,
    detail: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditParams {
    #[serde(default)]
    service: String,
    #[serde(default)]
    environment: String,
    #[serde(default)]
    actor: String,
    before: Option<String>,
}

pub async fn audit(
    State(state): State<WebState>,
    headers: HeaderMap,
    uri: Uri,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Response {
    let viewer = match require(&state, &headers, &uri) {
        Ok(viewer) => viewer,
        Err(denied) => return denied.into_response(),
    };
    let layout = viewer.layout("Audit log");
    let params = match params {
        Ok(Query(params)) => params,
        Err(rejection) => {
            return message(
                StatusCode::BAD_REQUEST,
                "Not understood",
                &format!(
                "{}; the audit log takes service, environment, actor and before (an event number)",
                rejection.body_text()
            ),
                Some(("/ui/audit", "The whole audit log")),
                layout,
            )
        }
    };
    let before = match params.before.as_deref().filter(|b| !b.is_empty()) {
        None => None,
        Some(text) => match text.parse::<i64>() {
            Ok(before) => Some(before),
            Err(_) => {
                return message(
                    StatusCode::BAD_REQUEST,
                    "Not understood",
                    &format!("before=`{text}` is not an event number; follow the page's \"Older events\" link"),
                    Some(("/ui/audit", "The whole audit log")),
                    layout,
                )
            }
        },
    };
    let query = AuditQuery {
        service: params.service.trim().to_string(),
        environment: params.environment.trim().to_string(),
        actor: params.actor.trim().to_string(),
        before,
        since: None,
        limit: None,
    };
    match state.engine.audit_log(&query).await {
        Ok(page) => {
            let config = state.engine.config();
            let mut environments: Vec<String> = Vec::new();
            for env in config.services.iter().flat_map(|s| &s.environments) {
                if !environments.contains(&env.name) {
                    environments.push(env.name.clone());
                }
            }
            let entries = page
                .entries
                .into_iter()
                .map(|e| AuditRow {
                    at: when_exact(e.event.at),
                    at_iso: iso(e.event.at),
                    promotion_id: e.promotion_id,
                    place: match (e.service, e.environment) {
                        (Some(s), Some(env)) => format!("{s} → {env}"),
                        _ => String::new(),
                    },
                    kind: e.event.kind.to_string(),
                    actor: e.event.actor,
                    detail: e.event.detail,
                })
                .collect();
            let template = AuditTemplate {
                layout,
                services: config.services.iter().map(|s| s.name.clone()).collect(),
                environments,
                filtered: !(query.service.is_empty()
                    && query.environment.is_empty()
                    && query.actor.is_empty()),
                entries,
                paged: query.before.is_some(),
                newest_href: audit_href(&query, None),
                older_href: page.older.map(|before| audit_href(&query, Some(before))),
                filter: query,
            };
            html(StatusCode::OK, template.render())
        }
        Err(error) => engine_error(error, layout),
    }
}

/// `/ui/audit?…` with the same filters, from `before`.
fn audit_href(query: &AuditQuery, before: Option<i64>) -> String {
    let mut params = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in [
        ("service", &query.service),
        ("environment", &query.environment),
        ("actor", &query.actor),
    ] {
        if !value.is_empty() {
            params.append_pair(key, value);
        }
    }
    if let Some(before) = before {
        params.append_pair("before", &before.to_string());
    }
    let params = params.finish();
    if params.is_empty() {
        "/ui/audit".to_string()
    } else {
        format!("/ui/audit?{params}")
    }
}

// ---- delivery metrics ----

pub async fn dora(State(state): State<WebState>, headers: HeaderMap, uri: Uri) -> Response {
    let viewer = match require(&state, &headers, &uri) {
        Ok(viewer) => viewer,
        Err(denied) => return denied.into_response(),
    };
    let layout = viewer.layout("Delivery metrics");
    match state.engine.dora_all(&dora::WINDOWS).await {
        Ok(entries) => {
            let to = entries
                .first()
                .map_or_else(|| state.engine.time().now(), |e| e.report.to);
            let page = dora::page(&dora_cells(entries), to, layout);
            html(StatusCode::OK, page.and_then(|page| page.render()))
        }
        Err(error) => engine_error(error, layout),
    }
}

/// The engine's reports as the page's cells (the one place that knows both shapes).
fn dora_cells(entries: Vec<DoraEntry>) -> Vec<DoraCell> {
    entries
        .into_iter()
        .map(|entry| DoraCell {
            service: entry.service,
            environment: entry.environment,
            days: entry.days,
            deploys: entry.report.deploys,
            frequency_per_day: entry.report.deployment_frequency_per_day,
            lead_p50: entry.report.lead_time_seconds.p50,
            lead_p90: entry.report.lead_time_seconds.p90,
            failure_rate: entry.report.change_failure_rate,
            restore_p50: entry.report.time_to_restore_seconds.p50,
        })
        .collect()
}

pub async fn not_found(uri: Uri) -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Not found",
        &format!("There is no page at {}; the pages are /ui, /ui/promotions/<id>, /ui/audit and /ui/dora.", uri.path()),
        Some(("/ui", "Go to the overview")),
        Layout::bare("Not found"),
    )
}
