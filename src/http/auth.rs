//! Bearer tokens for the HTTP API, compared as SHA-256 digests in constant time.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ApiToken;
use crate::domain::identity::{Actor, Identity};

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

/// Checks every configured token, without stopping early, so timing says nothing about which
/// token or how much of it matched.
fn find_token<'a>(tokens: &'a [ApiToken], presented: &str) -> Option<&'a ApiToken> {
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found = None;
    for token in tokens {
        if bool::from(token.sha256.ct_eq(&digest)) {
            found = Some(token);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_the_matching_token() {
        let token = |name: &str, secret: &str| ApiToken {
            name: name.into(),
            sha256: Sha256::digest(secret.as_bytes()).into(),
            roles: vec![],
        };
        let tokens = [token("ci", "s3cret"), token("ops", "other")];
        assert_eq!(
            find_token(&tokens, "s3cret").map(|t| t.name.as_str()),
            Some("ci")
        );
        assert_eq!(
            find_token(&tokens, "other").map(|t| t.name.as_str()),
            Some("ops")
        );
        assert!(find_token(&tokens, "s3cre").is_none());
        assert!(find_token(&tokens, "").is_none());
    }
}
