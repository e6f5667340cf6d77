//! Release governance over HTTP (SPEC §10): why a promotion waits, and ticking its checklist.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::api::{act, promotion_id, ApiResult, PromotionJson};
use super::auth::ApiActor;
use super::{ApiError, AppState};
use crate::domain::command::Command;
use crate::domain::why::Blocker;

/// `GET /api/v1/promotions/{id}/why`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhyJson {
    pub id: i64,
    pub state: String,
    /// Empty: nothing holds it up.
    pub blockers: Vec<BlockerJson>,
    /// The same as `/release why` answers.
    pub text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BlockerJson {
    /// `approvals`, `checklist`, `window`, `freeze`, `busy`, `digest`, `check_failed`, `ended`.
    pub kind: &'static str,
    pub problem: String,
    pub unblock: String,
}

impl From<&Blocker> for BlockerJson {
    fn from(blocker: &Blocker) -> Self {
        BlockerJson {
            kind: blocker.kind(),
            problem: blocker.problem(),
            unblock: blocker.remedy(),
        }
    }
}

#[utoipa::path(get, path = "/promotions/{id}/why", tag = "promotions",
    params(("id" = i64, Path, minimum = 1, description = "The promotion id, e.g. 42")),
    responses((status = 200, description = "What it waits for or what blocked it, each with what would unblock it", body = WhyJson)))]
pub async fn why(
    State(state): State<AppState>,
    ApiActor(_): ApiActor,
    Path(id): Path<String>,
) -> ApiResult<WhyJson> {
    let why = state.engine.why(promotion_id(&id)?).await?;
    Ok((
        StatusCode::OK,
        Json(WhyJson {
            id: why.promotion.id,
            state: why.promotion.state().as_str().to_string(),
            blockers: why.blockers.iter().map(BlockerJson::from).collect(),
            text: why.to_text(),
        }),
    ))
}

/// `POST /api/v1/promotions/{id}/checklist/{item}`: ticks item `item` (from 1) as the token.
#[utoipa::path(post, path = "/promotions/{id}/checklist/{item}", tag = "promotions",
    params(
        ("id" = i64, Path, minimum = 1, description = "The promotion id, e.g. 42"),
        ("item" = u32, Path, minimum = 1, description = "The checklist item's number, from 1"),
    ),
    responses((status = 200, description = "Ticked (ticking again changes nothing)", body = PromotionJson)))]
pub async fn tick(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path((id, item)): Path<(String, String)>,
) -> ApiResult<PromotionJson> {
    let id = promotion_id(&id)?;
    let item = item
        .parse::<u32>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{item}` is not a checklist item number; items are numbered from 1"
            ))
        })?;
    act(&state, actor, Command::Check { id, item }, StatusCode::OK).await
}
