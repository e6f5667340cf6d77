//! `GET /api/v1/audit` (SPEC §10): the audit trail, newest first, filtered and paged — the same
//! read as the `/ui/audit` page.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::SecondsFormat;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::api::ApiResult;
use super::auth::ApiActor;
use super::{ApiError, AppState};
use crate::domain::audit::parse_since;
use crate::engine::pages::{AuditEntry, AuditQuery, MAX_AUDIT_PAGE};

/// The query string; each filter is optional, and an unknown parameter is refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    #[serde(default)]
    service: String,
    #[serde(default)]
    environment: String,
    #[serde(default)]
    actor: String,
    since: Option<String>,
    limit: Option<String>,
    before: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditJson {
    pub events: Vec<AuditEventJson>,
    /// The `before` of the next (older) page; `null` on the last one.
    pub next_before: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventJson {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub platform: String,
    pub kind: String,
    pub detail: String,
    pub promotion_id: Option<i64>,
    pub service: Option<String>,
    pub environment: Option<String>,
    /// Its link in the hash chain (`shipmate audit verify`); `null` before the chain began.
    pub hash: Option<String>,
}

impl From<AuditEntry> for AuditEventJson {
    fn from(entry: AuditEntry) -> Self {
        AuditEventJson {
            id: entry.id,
            at: entry.event.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            actor: entry.event.actor,
            platform: entry.event.platform,
            kind: entry.event.kind.to_string(),
            detail: entry.event.detail,
            promotion_id: entry.promotion_id,
            service: entry.service,
            environment: entry.environment,
            hash: entry.hash,
        }
    }
}

fn number(name: &str, text: Option<&str>, range: (i64, i64)) -> Result<Option<i64>, ApiError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    text.parse::<i64>()
        .ok()
        .filter(|n| (range.0..=range.1).contains(n))
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name}: `{text}` is not a number from {} to {}",
                range.0, range.1
            ))
        })
}

impl AuditParams {
    fn into_query(self) -> Result<AuditQuery, ApiError> {
        let since = match self
            .since
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            Some(text) => Some(
                parse_since(text)
                    .map_err(|problem| ApiError::bad_request(format!("since: {problem}")))?,
            ),
            None => None,
        };
        let limit = number(
            "limit",
            self.limit.as_deref(),
            (1, i64::from(MAX_AUDIT_PAGE)),
        )?;
        Ok(AuditQuery {
            service: self.service.trim().to_string(),
            environment: self.environment.trim().to_string(),
            actor: self.actor.trim().to_string(),
            before: number("before", self.before.as_deref(), (1, i64::MAX))?,
            since,
            limit: limit.and_then(|n| u32::try_from(n).ok()),
        })
    }
}

#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditParams),
    responses((status = 200, description = "Audit events, newest first", body = AuditJson)))]
pub async fn audit(
    State(state): State<AppState>,
    ApiActor(_): ApiActor,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<AuditJson> {
    let Query(params) = params.map_err(|rejection| {
        ApiError::bad_request(format!(
            "{}; the filters are service, environment, actor, since, limit and before",
            rejection.body_text()
        ))
    })?;
    let page = state.engine.audit_log(&params.into_query()?).await?;
    Ok((
        StatusCode::OK,
        Json(AuditJson {
            events: page.entries.into_iter().map(AuditEventJson::from).collect(),
            next_before: page.older,
        }),
    ))
}
