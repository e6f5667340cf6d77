//! The API's OpenAPI 3.1 description (`GET /api/v1/openapi.json`), generated from the handlers'
//! own annotations and types: the router is built from the same list, so a route cannot exist
//! without its description. The error envelope, the bearer token and the error statuses every
//! route may answer are added here once rather than on each handler.

use std::sync::OnceLock;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{api, audit, governance, AppState};

/// Where the API lives: routes are described relative to it and the document names it in full.
pub const API_PREFIX: &str = "/api/v1";

/// `{"error": {"code": "...", "message": "..."}}`: every refusal and failure.
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `payload_too_large`, `unsupported_media_type`, `refused`, `internal`.
    code: String,
    /// What went wrong and what to do instead, for a person.
    message: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shipmate",
        description = "The chat-ops release bot's HTTP API for CI and scripts (SPEC §6). Every route needs `Authorization: Bearer <token>` from `[[api_tokens]]` in bot.toml, except this document."
    ),
    components(schemas(ErrorEnvelope, ErrorBody)),
    tags(
        (name = "releases"), (name = "promotions"), (name = "rollouts"), (name = "services"),
        (name = "commands"), (name = "audit"), (name = "metrics"), (name = "operations"),
    )
)]
struct ApiDoc;

/// The `/api/v1` routes with their descriptions (paths relative to [`API_PREFIX`]).
pub(super) fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::create_release))
        .routes(routes!(api::create_promotion))
        .routes(routes!(api::get_promotion))
        .routes(routes!(api::approve))
        .routes(routes!(api::reject))
        .routes(routes!(api::cancel))
        .routes(routes!(api::retry))
        .routes(routes!(api::pause))
        .routes(routes!(api::resume))
        .routes(routes!(api::advance))
        .routes(routes!(api::abort))
        .routes(routes!(api::deploy_log))
        .routes(routes!(governance::why))
        .routes(routes!(governance::tick))
        .routes(routes!(api::rollback))
        .routes(routes!(api::services))
        .routes(routes!(api::history))
        .routes(routes!(api::command))
        .routes(routes!(api::cluster))
        .routes(routes!(api::dora))
        .routes(routes!(audit::audit))
        .routes(routes!(openapi_json))
}

/// Health, readiness and metrics, at the root for probes and scrapers (described, not under
/// [`API_PREFIX`], and without a token).
pub(super) fn operations_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(super::healthz))
        .routes(routes!(super::readyz))
        .routes(routes!(super::metrics))
}

/// The description of the API, built once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let (_, mut doc) = api_routes().split_for_parts();
        complete(&mut doc);
        let (_, operations) = operations_routes().split_for_parts();
        doc.merge(operations);
        doc.to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"the API description failed: {e}\"}}"))
    })
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object)))]
pub(super) async fn openapi_json() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        document(),
    )
        .into_response()
}

/// The statuses any API route may answer besides its own, with the error envelope.
const ERRORS: [(u16, &str); 8] = [
    (400, "Malformed input: the message names the field"),
    (401, "Missing or unknown API token"),
    (403, "The token's roles do not allow it"),
    (404, "Unknown service, environment or promotion"),
    (409, "The state does not allow it"),
    (413, "Body over 1 MiB"),
    (
        422,
        "Policy refuses it: the message says why and what to do instead",
    ),
    (500, "The bot failed (the database is unreachable, …)"),
];

/// Bodies that may not be JSON answer this as well.
const UNSUPPORTED_MEDIA_TYPE: (u16, &str) = (415, "Send JSON with Content-Type: application/json");

/// Prefixes the paths, and adds the bearer scheme and the error responses to every operation.
fn complete(doc: &mut Document) {
    let paths = std::mem::take(&mut doc.paths.paths);
    for (path, mut item) in paths {
        let public = path == "/openapi.json";
        for (operation, takes_body) in [(item.get.as_mut(), false), (item.post.as_mut(), true)] {
            if let Some(operation) = operation {
                add_errors(operation, takes_body, public);
            }
        }
        doc.paths.paths.insert(format!("{API_PREFIX}{path}"), item);
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An API token from [[api_tokens]] in bot.toml"))
                .build(),
        ),
    );
    doc.security = Some(vec![SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);
}

fn add_errors(operation: &mut Operation, takes_body: bool, public: bool) {
    if public {
        return;
    }
    let envelope = ContentBuilder::new()
        .schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorEnvelope"))))
        .build();
    let statuses = ERRORS
        .iter()
        .chain(takes_body.then_some(&UNSUPPORTED_MEDIA_TYPE));
    for (status, description) in statuses {
        let response = ResponseBuilder::new()
            .description(*description)
            .content("application/json", envelope.clone())
            .build();
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert(RefOr::T(response));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_route_prefixed_and_its_errors() {
        let doc: serde_json::Value = serde_json::from_str(document()).expect("JSON");
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "{}",
            doc["openapi"]
        );
        let paths = doc["paths"].as_object().expect("paths");
        let operations = ["/healthz", "/readyz", "/metrics"];
        assert!(
            paths
                .keys()
                .all(|p| p.starts_with("/api/v1/") || operations.contains(&p.as_str())),
            "{paths:?}"
        );
        for path in operations {
            assert!(paths[path]["get"]["responses"]["200"].is_object(), "{path}");
            assert_eq!(
                paths[path]["get"]["security"],
                serde_json::json!([{}]),
                "{path}"
            );
        }
        let approve = &paths["/api/v1/promotions/{id}/approve"]["post"];
        for status in [
            "200", "400", "401", "403", "404", "409", "413", "415", "422", "500",
        ] {
            assert!(
                approve["responses"][status].is_object(),
                "{status}: {approve}"
            );
        }
        assert_eq!(
            approve["responses"]["401"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorEnvelope"
        );
        let open = &paths["/api/v1/openapi.json"]["get"];
        assert!(open["responses"]["401"].is_null(), "{open}");
        assert_eq!(open["security"], serde_json::json!([{}]), "{open}");
    }
}
