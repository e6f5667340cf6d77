//! `/api/v1` handlers: JSON in, engine call, JSON out.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::domain::audit::AuditEvent;
use crate::domain::command::Command;
use crate::domain::dora;
use crate::domain::identity::Actor;
use crate::domain::manifest::{BadDigest, Manifest};
use crate::domain::promotion::Promotion;
use crate::domain::release::Release;
use crate::domain::version::{Version, VersionSpec};
use crate::engine::{
    ClusterView, DoraQuery, DoraReport, EnvironmentStatus, PromotionDetail, PromotionView, Reply,
    Request, ServiceStatus,
};

use super::auth::ApiActor;
use super::error::ApiError;
use super::AppState;

pub(super) type ApiResult<T> = Result<(StatusCode, Json<T>), ApiError>;

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    json.map(|Json(value)| value).map_err(ApiError::from)
}

fn version(text: &str) -> Result<Version, ApiError> {
    text.parse()
        .map_err(|e: crate::domain::version::VersionError| {
            ApiError::bad_request(format!("version: {e}"))
        })
}

// ---- responses ----

#[derive(Serialize, ToSchema)]
pub struct ReleaseJson {
    id: i64,
    service: String,
    version: String,
    commit: Option<String>,
    notes: Option<String>,
    created_by: String,
    created_at: String,
    committed_at: Option<String>,
    digest: Option<String>,
    changes: Vec<String>,
    /// Why the changes could not be read from git, when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    changes_note: Option<String>,
}

impl From<Release> for ReleaseJson {
    fn from(r: Release) -> Self {
        ReleaseJson {
            id: r.id,
            service: r.service,
            version: r.version.to_string(),
            commit: r.commit,
            notes: r.notes,
            created_by: r.created_by,
            created_at: time(r.created_at),
            committed_at: r.manifest.committed_at.map(time),
            digest: r.manifest.digest.map(|d| d.to_string()),
            changes: r.manifest.changes,
            changes_note: r.manifest.changes_note,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ApprovalJson {
    by: String,
    at: String,
}

#[derive(Serialize, ToSchema)]
pub struct EventJson {
    at: String,
    actor: String,
    platform: String,
    kind: String,
    detail: String,
}

impl From<AuditEvent> for EventJson {
    fn from(e: AuditEvent) -> Self {
        EventJson {
            at: time(e.at),
            actor: e.actor,
            platform: e.platform,
            kind: e.kind.to_string(),
            detail: e.detail,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PromotionJson {
    id: i64,
    service: String,
    version: String,
    environment: String,
    state: &'static str,
    requested_by: String,
    rollback: bool,
    previous_version: Option<String>,
    approvals: Vec<ApprovalJson>,
    required_approvals: u32,
    force_reason: Option<String>,
    hotfix_reason: Option<String>,
    retry_of: Option<i64>,
    reason: Option<String>,
    commit: Option<String>,
    notes: Option<String>,
    created_at: String,
    updated_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<EventJson>>,
    /// What a running remote backend call says it does (a GitHub run's status and link, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    backend_status: Option<String>,
}

impl PromotionJson {
    fn from_record(p: Promotion) -> Self {
        let stage = p.stage.columns();
        PromotionJson {
            id: p.id,
            version: p.version.to_string(),
            state: stage.state.as_str(),
            requested_by: p.requested_by.to_string(),
            rollback: p.rollback,
            previous_version: p.previous_version.map(|v| v.to_string()),
            approvals: Vec::new(),
            required_approvals: p.required_approvals,
            created_at: time(p.created_at),
            updated_at: time(p.updated_at),
            started_at: stage.started_at.map(time),
            finished_at: stage.finished_at.map(time),
            expires_at: p.expires_at.map(time),
            service: p.service,
            environment: p.environment,
            force_reason: p.force_reason,
            hotfix_reason: p.hotfix_reason,
            retry_of: p.retry_of,
            reason: stage.reason,
            commit: None,
            notes: None,
            events: None,
            backend_status: None,
        }
    }

    fn from_view(view: PromotionView) -> Self {
        PromotionJson {
            approvals: view
                .approvals
                .into_iter()
                .map(|a| ApprovalJson {
                    by: a.by.to_string(),
                    at: time(a.at),
                })
                .collect(),
            commit: view.commit,
            notes: view.notes,
            ..Self::from_record(view.promotion)
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ActiveJson {
    id: i64,
    version: String,
    state: &'static str,
    requested_by: String,
    approvals: i64,
    required_approvals: u32,
}

#[derive(Serialize, ToSchema)]
pub struct EnvironmentJson {
    name: String,
    version: Option<String>,
    active_promotion: Option<ActiveJson>,
}

#[derive(Serialize, ToSchema)]
pub struct ServiceJson {
    service: String,
    environments: Vec<EnvironmentJson>,
}

impl From<ServiceStatus> for ServiceJson {
    fn from(s: ServiceStatus) -> Self {
        ServiceJson {
            service: s.service,
            environments: s.environments.into_iter().map(environment_json).collect(),
        }
    }
}

fn environment_json(env: EnvironmentStatus) -> EnvironmentJson {
    EnvironmentJson {
        name: env.name,
        version: env.version.map(|v| v.to_string()),
        active_promotion: env.active.map(|p| ActiveJson {
            id: p.id,
            version: p.version.to_string(),
            state: p.state().as_str(),
            requested_by: p.requested_by.to_string(),
            approvals: env.active_approvals,
            required_approvals: p.required_approvals,
        }),
    }
}

/// `GET /promotions/{id}/log`.
#[derive(Serialize, ToSchema)]
pub struct LogJson {
    lines: Vec<String>,
}

/// `POST /commands`: the text a chat user would read.
#[derive(Serialize, ToSchema)]
pub struct CommandReply {
    reply: String,
}

/// `GET /cluster` (SPEC §8).
#[derive(Serialize, ToSchema)]
pub struct ClusterJson {
    /// The replica that answered.
    this_replica: String,
    /// The replica holding the platform connections, if any.
    gateway_holder: Option<String>,
    /// Oldest first.
    replicas: Vec<ReplicaJson>,
}

#[derive(Serialize, ToSchema)]
pub struct ReplicaJson {
    id: String,
    host: String,
    pid: i64,
    started_at: String,
    /// On the database's clock.
    last_seen: String,
    holds_gateway: bool,
    /// Jobs (deploys, card edits, announcements) whose lease it holds now.
    jobs_running: i64,
}

impl From<ClusterView> for ClusterJson {
    fn from(view: ClusterView) -> Self {
        ClusterJson {
            this_replica: view.this_replica,
            gateway_holder: view.gateway_holder,
            replicas: view
                .replicas
                .into_iter()
                .map(|r| ReplicaJson {
                    started_at: time(r.started_at),
                    last_seen: time(r.last_seen),
                    id: r.id,
                    host: r.host,
                    pid: r.pid,
                    holds_gateway: r.holds_gateway,
                    jobs_running: r.jobs_running,
                })
                .collect(),
        }
    }
}

/// `GET /dora` (SPEC §9); `service`/`environment` are `null` when the report pools several.
#[derive(Serialize, ToSchema)]
pub struct DoraJson {
    service: Option<String>,
    environment: Option<String>,
    days: u32,
    from: String,
    to: String,
    deploys: u64,
    deployment_frequency_per_day: f64,
    lead_time_seconds: LeadTimeJson,
    /// `null` when nothing changed in the window: unknown, not 0 %.
    change_failure_rate: Option<f64>,
    time_to_restore_seconds: RestoreTimeJson,
    /// Non-rollback promotions that ended in the window.
    changes: u64,
    failed_changes: u64,
    /// Failed changes followed by a success.
    restores: u64,
}

#[derive(Serialize, ToSchema)]
pub struct LeadTimeJson {
    p50: Option<f64>,
    p90: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct RestoreTimeJson {
    p50: Option<f64>,
}

impl From<DoraReport> for DoraJson {
    fn from(r: DoraReport) -> Self {
        DoraJson {
            service: r.service,
            environment: r.environment,
            days: r.days,
            from: time(r.from),
            to: time(r.to),
            deploys: r.deploys,
            deployment_frequency_per_day: r.deployment_frequency_per_day,
            lead_time_seconds: LeadTimeJson {
                p50: r.lead_time_seconds.p50,
                p90: r.lead_time_seconds.p90,
            },
            change_failure_rate: r.change_failure_rate,
            time_to_restore_seconds: RestoreTimeJson {
                p50: r.time_to_restore_seconds.p50,
            },
            changes: r.changes,
            failed_changes: r.failed_changes,
            restores: r.restores,
        }
    }
}

fn promotion_reply(reply: Reply, status: StatusCode) -> ApiResult<PromotionJson> {
    match reply {
        Reply::Promotion { view, .. } => Ok((status, Json(PromotionJson::from_view(*view)))),
        _ => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "unexpected reply",
        )),
    }
}

// ---- requests ----

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRelease {
    service: String,
    version: String,
    commit: Option<String>,
    notes: Option<String>,
    /// RFC 3339.
    committed_at: Option<String>,
    /// `sha256:<64 hex>`.
    digest: Option<String>,
    /// Commit subjects since the previous version.
    changes: Option<Vec<String>>,
}

/// The most changes a release may list, and the longest one: a changelog, not a dump.
const MAX_CHANGES: usize = 1000;
const MAX_CHANGE_CHARS: usize = 1000;

impl CreateRelease {
    fn manifest(&self) -> Result<Manifest, ApiError> {
        let committed_at = self
            .committed_at
            .as_deref()
            .map(|text| {
                DateTime::parse_from_rfc3339(text)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        ApiError::bad_request(format!(
                            "committed_at `{text}` is not an RFC 3339 time, e.g. 2026-12-04T09:30:00Z"
                        ))
                    })
            })
            .transpose()?;
        let digest = self
            .digest
            .as_deref()
            .map(|text| {
                text.parse()
                    .map_err(|e: BadDigest| ApiError::bad_request(format!("digest: {e}")))
            })
            .transpose()?;
        let changes = self.changes.clone().unwrap_or_default();
        if changes.len() > MAX_CHANGES {
            return Err(ApiError::bad_request(format!(
                "changes lists {} entries; at most {MAX_CHANGES}",
                changes.len()
            )));
        }
        if let Some(long) = changes
            .iter()
            .position(|c| c.chars().count() > MAX_CHANGE_CHARS)
        {
            return Err(ApiError::bad_request(format!(
                "changes[{long}] is over {MAX_CHANGE_CHARS} characters; give the commit subject"
            )));
        }
        Ok(Manifest {
            committed_at,
            digest,
            changes,
            changes_note: None,
        })
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePromotion {
    service: String,
    version: String,
    environment: Option<String>,
    force_reason: Option<String>,
    hotfix_reason: Option<String>,
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    reason: Option<String>,
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AbortBody {
    reason: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRollback {
    service: String,
    environment: String,
    version: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandBody {
    text: String,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    environment: Option<String>,
    limit: Option<u32>,
}

/// `GET /dora` parameters; `days` is read here so a bad one is refused in our words.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DoraParams {
    service: Option<String>,
    environment: Option<String>,
    days: Option<String>,
}

impl DoraParams {
    /// Empty parameters (`?service=`) count as left out.
    fn into_query(self) -> Result<DoraQuery, ApiError> {
        let given = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
        let days = match given(self.days) {
            None => dora::DEFAULT_DAYS,
            Some(text) => dora::parse_days(text.trim())
                .map_err(|e| ApiError::bad_request(format!("days: {e}")))?,
        };
        Ok(DoraQuery {
            service: given(self.service),
            environment: given(self.environment),
            days,
        })
    }
}

// ---- handlers ----

#[utoipa::path(post, path = "/releases", tag = "releases", request_body = CreateRelease,
    responses(
        (status = 201, description = "The release was created", body = ReleaseJson),
        (status = 200, description = "An existing release's manifest was updated (a new digest, changes, a commit time)", body = ReleaseJson),
    ))]
pub async fn create_release(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    json: Result<Json<CreateRelease>, JsonRejection>,
) -> ApiResult<ReleaseJson> {
    let request = body(json)?;
    let manifest = request.manifest()?;
    let command = Command::Create {
        version: version(&request.version)?,
        service: request.service,
        commit: request.commit,
        notes: request.notes,
        manifest,
    };
    match execute(&state, actor, command).await? {
        Reply::Release { release, created } => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json((*release).into())))
        }
        _ => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "unexpected reply",
        )),
    }
}

#[utoipa::path(post, path = "/promotions", tag = "promotions", request_body = CreatePromotion,
    responses((status = 202, description = "Requested: it deploys, waits for approval or queues for a window", body = PromotionJson)))]
pub async fn create_promotion(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    json: Result<Json<CreatePromotion>, JsonRejection>,
) -> ApiResult<PromotionJson> {
    let request = body(json)?;
    let spec: VersionSpec = request
        .version
        .parse()
        .map_err(|e| ApiError::bad_request(format!("version: {e}")))?;
    let blank = |reason: &Option<String>| reason.as_deref().is_some_and(|r| r.trim().is_empty());
    if blank(&request.force_reason) {
        return Err(ApiError::bad_request(
            "force_reason: must say why the window or freeze is overridden",
        ));
    }
    if blank(&request.hotfix_reason) {
        return Err(ApiError::bad_request(
            "hotfix_reason: must say why this is a hotfix",
        ));
    }
    if request.force_reason.is_some() && request.hotfix_reason.is_some() {
        return Err(ApiError::bad_request(
            "force_reason and hotfix_reason don't go together: force overrides every gate, a hotfix takes the hotfix approvals; send one",
        ));
    }
    let command = Command::Promote {
        service: request.service,
        version: spec,
        to: request.environment,
        force_reason: request.force_reason,
        hotfix_reason: request.hotfix_reason,
    };
    promotion_reply(execute(&state, actor, command).await?, StatusCode::ACCEPTED)
}

#[utoipa::path(get, path = "/promotions/{id}", tag = "promotions", params(("id" = i64, Path, minimum = 1, description = "The promotion id, e.g. 42")),
    responses((status = 200, description = "The promotion with its audit events", body = PromotionJson)))]
pub async fn get_promotion(
    State(state): State<AppState>,
    ApiActor(_): ApiActor,
    Path(id): Path<String>,
) -> ApiResult<PromotionJson> {
    let PromotionDetail {
        view,
        events,
        backend_status,
    } = state.engine.promotion_detail(promotion_id(&id)?).await?;
    let mut json = PromotionJson::from_view(view);
    json.events = Some(events.into_iter().map(EventJson::from).collect());
    json.backend_status = backend_status;
    Ok((StatusCode::OK, Json(json)))
}

pub(super) fn promotion_id(text: &str) -> Result<i64, ApiError> {
    text.trim_start_matches('#')
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{text}` is not a promotion id; use the number, e.g. 42"
            ))
        })
}

/// Runs `command` through the engine's one way in.
async fn execute(state: &AppState, actor: Actor, command: Command) -> Result<Reply, ApiError> {
    Ok(state
        .engine
        .handle(Request::command(actor, command))
        .await?)
}

pub(super) async fn act(
    state: &AppState,
    actor: Actor,
    command: Command,
    status: StatusCode,
) -> ApiResult<PromotionJson> {
    promotion_reply(execute(state, actor, command).await?, status)
}

/// `POST /promotions/{id}/<action>` with no body: the command for `id`.
async fn act_on(
    state: AppState,
    ApiActor(actor): ApiActor,
    id: &str,
    command: fn(i64) -> Command,
    status: StatusCode,
) -> ApiResult<PromotionJson> {
    act(&state, actor, command(promotion_id(id)?), status).await
}

#[utoipa::path(post, path = "/promotions/{id}/approve", tag = "promotions", params(("id" = i64, Path, minimum = 1, description = "The promotion id, e.g. 42")),
    responses((status = 200, description = "The approval counted", body = PromotionJson)))]
pub async fn approve(
    State(state): State<AppState>,
    actor: ApiActor,
    Path(id): Path<String>,
) -> ApiResult<PromotionJson> {
    act_on(
        state,
        actor,
        &id,
        |id| Command::Approve { id },
        StatusCode::OK,
    )
    .await
}

#[utoipa::path(post, path = "/promotions/{id}/cancel", tag = "promotions", params(("id" = i64, Path, minimum = 1, description = "The promotion id, e.g. 42")),
    responses((status = 200, description = "Cancelled", body = PromotionJson)))]
pub async fn cancel(
    State(state): State<AppState>,
    actor: ApiActor,
    Path(id): Path<String>,
) -> ApiResult<PromotionJson> {
    act_on(
        state,
        actor,
        &id,
        |id| Command::Cancel { id },
        StatusCode::OK,
    )
    .await
}

#[utoipa::path(post, path = "/promotions/{id}/retry", tag = "promotions", params(("id" = i64, Path, minimum = 1, description = "The promotion id, e.g. 42")),
    responses((status = 202, description = "A new promotion retrying this one", body = PromotionJson)))]
pub async fn retry(
    State(state): State<AppState>,
    actor: ApiActor,
    Path(id): Path<String>,
) -> ApiResult<PromotionJson> {
    act_on(
        state,
        actor,
        &id,
        |id| Command::Retry { id },
        StatusCode::ACCEPTED,
    )
    .await
}

#[utoipa::path(post, path = "/promotions/{id}/reject", tag = "promotions", params(("id" = i64, Path, minimum = 1, description = "The promotion id, e.g. 42")),
    request_body(content = Option<RejectBody>, description = "Optional: why"),
    responses((status = 200, description = "Rejected", body = PromotionJson)))]
pub async fn reject(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
    json: Result<Option<Json<RejectBody>>, JsonRejection>,
) -> ApiResult<PromotionJson> {
    let reason = json?
        .and_then(|Json(b)| b.reason)
        .filter(|r| !r.trim().is_empty());
    let command = Command::Reject {
        id: promotion_id(&id)?,
        reason,
    };
    act(&state, actor, command, StatusCode::OK).await
}

#[utoipa::path(post, path = "/promotions/{id}/pause", tag = "rollouts", params(("id" = i64, Path, minimum = 1, description = "The promotion id, e.g. 42")),
    responses((status = 200, description = "The rollout holds before its next step", body = PromotionJson)))]
pub async fn pause(
    State(state): State<AppState>,
    actor: ApiActor,
    Path(id): Path<String>,
) -> ApiResult<PromotionJson> {
    act_on(
        state,
        actor,
        &id,
        |id| Command::Pause { id },
        StatusCode::OK,
    )
    .await
}

#[utoipa::path(post, path = "/promotions/{id}/resume", tag = "rollouts", params(("id" = i64, Path, minimum = 1, description = "The promotion id, e.g. 42")),
    responses((status = 200, description = "The rollout goes on", body = PromotionJson)))]
pub async fn resume(
    State(state): State<AppState>,
    actor: ApiActor,
    Path(id): Path<String>,
) -> ApiResult<PromotionJson> {
    act_on(
        state,
        actor,
        &id,
        |id| Command::Resume { id },
        StatusCode::OK,
    )
    .await
}

#[utoipa::path(post, path = "/promotions/{id}/advance", tag = "rollouts", params(("id" = i64, Path, minimum = 1, description = "The promotion id, e.g. 42")),
    responses((status = 200, description = "The rollout's current pause ends now", body = PromotionJson)))]
pub async fn advance(
    State(state): State<AppState>,
    actor: ApiActor,
    Path(id): Path<String>,
) -> ApiResult<PromotionJson> {
    act_on(
        state,
        actor,
        &id,
        |id| Command::Advance { id },
        StatusCode::OK,
    )
    .await
}

/// `POST /promotions/{id}/abort`: 202, like retry, because it starts a rollback. The body may be
/// left out; a malformed one is refused naming the field rather than ignored.
#[utoipa::path(post, path = "/promotions/{id}/abort", tag = "rollouts", params(("id" = i64, Path, minimum = 1, description = "The promotion id, e.g. 42")),
    request_body(content = Option<AbortBody>, description = "Optional: why"),
    responses((status = 202, description = "Aborting: the rollout stops and rolls back", body = PromotionJson)))]
pub async fn abort(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
    json: Result<Option<Json<AbortBody>>, JsonRejection>,
) -> ApiResult<PromotionJson> {
    let request = json?.map(|Json(request)| request).unwrap_or_default();
    let command = abort_command(&id, request)?;
    act(&state, actor, command, StatusCode::ACCEPTED).await
}

/// The abort command for the path's id and the body; a blank reason is no reason.
fn abort_command(id: &str, request: AbortBody) -> Result<Command, ApiError> {
    Ok(Command::Abort {
        id: promotion_id(id)?,
        reason: request
            .reason
            .map(|reason| reason.trim().to_string())
            .filter(|reason| !reason.is_empty()),
    })
}

#[utoipa::path(post, path = "/rollbacks", tag = "promotions", request_body = CreateRollback,
    responses((status = 202, description = "A rollback promotion", body = PromotionJson)))]
pub async fn rollback(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    json: Result<Json<CreateRollback>, JsonRejection>,
) -> ApiResult<PromotionJson> {
    let request = body(json)?;
    let to = request.version.as_deref().map(version).transpose()?;
    let command = Command::Rollback {
        service: request.service,
        environment: request.environment,
        to,
    };
    act(&state, actor, command, StatusCode::ACCEPTED).await
}

#[utoipa::path(get, path = "/promotions/{id}/log", tag = "promotions", params(("id" = i64, Path, minimum = 1, description = "The promotion id, e.g. 42")),
    responses((status = 200, description = "The deploy's output lines", body = LogJson)))]
pub async fn deploy_log(
    State(state): State<AppState>,
    ApiActor(_): ApiActor,
    Path(id): Path<String>,
) -> ApiResult<LogJson> {
    let lines = state.engine.deploy_log(promotion_id(&id)?).await?;
    Ok((StatusCode::OK, Json(LogJson { lines })))
}

#[utoipa::path(get, path = "/services", tag = "services",
    responses((status = 200, description = "What runs where, and what is active", body = Vec<ServiceJson>)))]
pub async fn services(
    State(state): State<AppState>,
    ApiActor(_): ApiActor,
) -> ApiResult<Vec<ServiceJson>> {
    let status = state.engine.status(None).await?;
    Ok((
        StatusCode::OK,
        Json(status.into_iter().map(ServiceJson::from).collect()),
    ))
}

/// `GET /api/v1/cluster`: the replicas seen in the last 15 s (SPEC §8), oldest first.
#[utoipa::path(get, path = "/cluster", tag = "operations",
    responses((status = 200, description = "The replicas seen in the last 15 s", body = ClusterJson)))]
pub async fn cluster(
    State(state): State<AppState>,
    ApiActor(_): ApiActor,
) -> ApiResult<ClusterJson> {
    let view = state.engine.cluster_view().await?;
    Ok((StatusCode::OK, Json(view.into())))
}

/// `GET /api/v1/dora?service=&environment=&days=`: delivery metrics (SPEC §9).
#[utoipa::path(get, path = "/dora", tag = "metrics", params(DoraParams),
    responses((status = 200, description = "The four delivery metrics", body = DoraJson)))]
pub async fn dora(
    State(state): State<AppState>,
    ApiActor(_): ApiActor,
    query: Result<Query<DoraParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<DoraJson> {
    let Query(params) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let report = state.engine.dora(&params.into_query()?).await?;
    Ok((StatusCode::OK, Json(report.into())))
}

#[utoipa::path(get, path = "/services/{name}/history", tag = "services",
    params(("name" = String, Path, description = "The service"), HistoryQuery),
    responses((status = 200, description = "Its promotions, newest first", body = Vec<PromotionJson>)))]
pub async fn history(
    State(state): State<AppState>,
    ApiActor(_): ApiActor,
    Path(service): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Vec<PromotionJson>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let environment = query.environment.filter(|e| !e.is_empty());
    let promotions = state
        .engine
        .history(&service, environment.as_deref(), query.limit.unwrap_or(20))
        .await?;
    Ok((
        StatusCode::OK,
        Json(
            promotions
                .into_iter()
                .map(PromotionJson::from_record)
                .collect(),
        ),
    ))
}

#[utoipa::path(post, path = "/commands", tag = "commands", request_body = CommandBody,
    responses((status = 200, description = "The reply the chat command would get", body = CommandReply)))]
pub async fn command(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    json: Result<Json<CommandBody>, JsonRejection>,
) -> ApiResult<CommandReply> {
    let request = body(json)?;
    let reply = state
        .engine
        .handle(Request::typed(actor, &request.text, None))
        .await?;
    let reply = reply.to_text();
    Ok((StatusCode::OK, Json(CommandReply { reply })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: Option<&str>) -> AbortBody {
        AbortBody {
            reason: text.map(str::to_string),
        }
    }

    #[test]
    fn abort_takes_the_id_from_the_path_and_the_reason_from_the_body() {
        let cases = [
            ("42", None, None),
            ("#42", Some("p99 over 2s"), Some("p99 over 2s")),
            (
                "42",
                Some("  error rate doubled \n"),
                Some("error rate doubled"),
            ),
            ("42", Some("   "), None),
        ];
        for (id, given, expected) in cases {
            let command = abort_command(id, reason(given)).map_err(|e| e.message);
            let expected = Command::Abort {
                id: 42,
                reason: expected.map(str::to_string),
            };
            assert_eq!(command, Ok(expected), "{id} {given:?}");
        }
    }

    #[test]
    fn abort_refuses_an_id_that_is_not_one() {
        for id in ["abc", "0", "-1", "4.2", ""] {
            let error = abort_command(id, AbortBody::default()).err();
            assert_eq!(
                error.map(|e| e.status),
                Some(StatusCode::BAD_REQUEST),
                "{id}"
            );
        }
    }
}
