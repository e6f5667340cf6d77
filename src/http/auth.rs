//! Bearer tokens for the HTTP API, compared as SHA-256 digests in constant time.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::domain::identity::{Actor, Identity};
use crate::engine::signing::find_token;

use super::error::ApiError;
use super::AppState;

/// The caller of an API request, authenticated by its token: identity `api:<token name>`.
pub struct ApiActor(pub Actor);

impl FromRequestParts<AppState> for ApiActor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
            ApiError::unauthorized("missing header Authorization: Bearer <token>")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            })?;
        let known = find_token(&state.engine.config().api_tokens, token).ok_or_else(|| {
            ApiError::unauthorized("unknown API token; check [[api_tokens]] in bot.toml")
        })?;
        let actor =
            Actor::new(Identity::new("api", &known.name)).with_roles(known.roles.iter().cloned());
        Ok(ApiActor(actor))
    }
}
