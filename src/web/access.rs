//! Who may read the pages (SPEC §9). `[web] access = "open"`: anyone who reaches the server.
//! `"token"` (the default): whoever signed in at `/ui/login` with an API token, which leaves an
//! HttpOnly cookie holding a signed sign-in (the token's name and an expiry, never the token),
//! or whoever opens a card's signed link (that one promotion's page only).

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::config::WebAccess;
use crate::engine::signing::{find_token, LinkRefusal, SESSION_LENGTH};

use super::view::{Layout, LoginPage};
use super::{html, message, WebState};

const COOKIE: &str = "shipmate_session";

/// Who is reading a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Viewer {
    /// `access = "open"`: anyone.
    Anyone,
    /// Signed in with the API token of this name.
    SignedIn(String),
    /// Holds a signed link to this promotion's page, and nothing more.
    Link(i64),
}

impl Viewer {
    pub fn layout(&self, title: impl Into<String>) -> Layout {
        Layout {
            title: title.into(),
            nav: !matches!(self, Viewer::Link(_)),
            signed_in: match self {
                Viewer::SignedIn(name) => Some(name.clone()),
                _ => None,
            },
        }
    }
}

/// Why a request was not let in; answered as the page or redirect that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Not signed in: off to sign in, then back to `next`.
    SignIn { next: String },
    /// A card's signed link that does not open promotion `id`'s page.
    BadLink { id: i64, refusal: LinkRefusal },
    /// A form posted from another site.
    CrossSite,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::SignIn { next } => {
                Redirect::to(&format!("/ui/login?next={}", encoded(&next))).into_response()
            }
            Denied::BadLink { id, refusal } => {
                let why = match refusal {
                    LinkRefusal::Expired => "This link has expired",
                    LinkRefusal::Altered => "This link was altered or is not one of this bot's",
                };
                let login = format!(
                    "/ui/login?next={}",
                    encoded(&format!("/ui/promotions/{id}"))
                );
                message(
                    StatusCode::FORBIDDEN,
                    "Link refused",
                    &format!("{why}. Sign in with an API token to see promotion #{id}, or ask for a fresh link (the promotion's chat card has one)."),
                    Some((&login, "Sign in")),
                    Layout::bare("Link refused"),
                )
            }
            Denied::CrossSite => (
                StatusCode::FORBIDDEN,
                "this form was posted from another site; open the bot's own /ui/login page",
            )
                .into_response(),
        }
    }
}

/// The viewer of a page that needs no link: open access or a valid sign-in.
pub fn require(state: &WebState, headers: &HeaderMap, uri: &Uri) -> Result<Viewer, Denied> {
    viewer(state, headers).ok_or_else(|| to_login(uri))
}

/// The query of a card's signed link.
#[derive(Debug, Default, Deserialize)]
pub struct LinkQuery {
    pub exp: Option<String>,
    pub sig: Option<String>,
}

/// The viewer of promotion `id`'s page: as [`require`], or the holder of a valid signed link to
/// it. A link that is expired or altered is refused with a page that says so.
pub fn require_for_promotion(
    state: &WebState,
    headers: &HeaderMap,
    uri: &Uri,
    id: i64,
    link: &LinkQuery,
) -> Result<Viewer, Denied> {
    if let Some(viewer) = viewer(state, headers) {
        return Ok(viewer);
    }
    let (Some(exp), Some(sig)) = (&link.exp, &link.sig) else {
        return Err(to_login(uri));
    };
    let now = state.engine.time().now();
    let checked = exp
        .parse::<i64>()
        .map_err(|_| LinkRefusal::Altered)
        .and_then(|exp| state.engine.signer().check_link(id, exp, sig, now));
    checked
        .map(|()| Viewer::Link(id))
        .map_err(|refusal| Denied::BadLink { id, refusal })
}

fn viewer(state: &WebState, headers: &HeaderMap) -> Option<Viewer> {
    let config = state.engine.config();
    match config.web.access {
        WebAccess::Open => Some(Viewer::Anyone),
        WebAccess::Token => {
            let value = cookie(headers, COOKIE)?;
            let now = state.engine.time().now();
            let token = state
                .engine
                .signer()
                .check_session(value, &config.api_tokens, now)?;
            Some(Viewer::SignedIn(token.name.clone()))
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

fn to_login(uri: &Uri) -> Denied {
    Denied::SignIn {
        next: uri
            .path_and_query()
            .map_or("/ui", |p| p.as_str())
            .to_string(),
    }
}

fn encoded(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Where to go after signing in: only a path of these pages, never another site (`//evil`,
/// `/\evil`, `https://…`), so the login cannot be used to redirect anywhere else.
pub fn safe_next(next: Option<&str>) -> String {
    let next = next.unwrap_or_default();
    let same_site = next.starts_with("/ui")
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control);
    if same_site {
        next.to_string()
    } else {
        "/ui".to_string()
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// `GET /ui/login`: the form (open access has nothing to sign in to).
pub async fn login_form(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(query): Query<NextQuery>,
) -> Response {
    let next = safe_next(query.next.as_deref());
    if viewer(&state, &headers).is_some() {
        return Redirect::to(&next).into_response();
    }
    login_page(StatusCode::OK, next, None)
}

fn login_page(status: StatusCode, next: String, problem: Option<String>) -> Response {
    use askama::Template;
    let page = LoginPage {
        layout: Layout::bare("Sign in"),
        next,
        problem,
    };
    html(status, page.render())
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    next: Option<String>,
}

/// `POST /ui/login`: a known API token signs the browser in until [`SESSION_LENGTH`] passes.
pub async fn login(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    if let Err(refused) = same_origin(&headers) {
        return refused.into_response();
    }
    let config = state.engine.config();
    if config.web.access == WebAccess::Open {
        return Redirect::to(&next).into_response();
    }
    let Some(token) = find_token(&config.api_tokens, form.token.trim()) else {
        let problem = if config.api_tokens.is_empty() {
            "This bot has no API tokens to sign in with: add an [[api_tokens]] entry to bot.toml, or set [web] access = \"open\"."
        } else {
            "That is not one of this bot's API tokens ([[api_tokens]] in bot.toml); check it and try again."
        };
        return login_page(StatusCode::UNAUTHORIZED, next, Some(problem.into()));
    };
    let expires = state.engine.time().now() + SESSION_LENGTH;
    let value = state.engine.signer().session(token, expires);
    let cookie = format!(
        "{COOKIE}={value}; Path=/ui; Max-Age={}; HttpOnly; SameSite=Lax{}",
        SESSION_LENGTH.num_seconds(),
        secure(&state)
    );
    with_cookie(Redirect::to(&next).into_response(), &cookie)
}

/// `POST /ui/logout`: forgets the sign-in in this browser.
pub async fn logout(State(state): State<WebState>, headers: HeaderMap) -> Response {
    if let Err(refused) = same_origin(&headers) {
        return refused.into_response();
    }
    let cookie = format!(
        "{COOKIE}=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Lax{}",
        secure(&state)
    );
    let to = match state.engine.config().web.access {
        WebAccess::Open => "/ui",
        WebAccess::Token => "/ui/login",
    };
    with_cookie(Redirect::to(to).into_response(), &cookie)
}

/// `; Secure` when the bot is reached over https (its public URL says so).
fn secure(state: &WebState) -> &'static str {
    let https = state
        .engine
        .config()
        .server
        .public_url
        .as_deref()
        .is_some_and(|url| url.starts_with("https://"));
    if https {
        "; Secure"
    } else {
        ""
    }
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// A form posted from another site is refused. Browsers say where a request comes from in
/// `Sec-Fetch-Site`; older ones only in `Origin`, which must then name the host the form was
/// posted to (an `Origin` of `null`, as sent under `Referrer-Policy: no-referrer`, tells nothing).
/// Clients that are no browser send neither and are not at risk.
fn same_origin(headers: &HeaderMap) -> Result<(), Denied> {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if let Some(site) = header(HeaderName::from_static("sec-fetch-site")) {
        return match site {
            "same-origin" | "none" => Ok(()),
            _ => Err(Denied::CrossSite),
        };
    }
    let Some(origin) = header(header::ORIGIN).filter(|o| *o != "null") else {
        return Ok(());
    };
    let origin_host = url::Url::parse(origin).ok().map(|url| {
        let host = url.host_str().unwrap_or_default().to_string();
        match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    });
    if origin_host.is_some() && origin_host.as_deref() == header(header::HOST) {
        Ok(())
    } else {
        Err(Denied::CrossSite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_these_pages() {
        for (given, expected) in [
            (
                Some("/ui/promotions/4?exp=1&sig=x"),
                "/ui/promotions/4?exp=1&sig=x",
            ),
            (Some("/ui/audit"), "/ui/audit"),
            (Some("//evil.example/ui"), "/ui"),
            (Some("https://evil.example/ui"), "/ui"),
            (Some("/ui\\@evil"), "/ui"),
            (Some("/api/v1/services"), "/ui"),
            (Some("/ui\r\nSet-Cookie: x"), "/ui"),
            (None, "/ui"),
        ] {
            assert_eq!(safe_next(given), expected, "{given:?}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; shipmate_session=v.a.l; b=2"),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("v.a.l"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn a_post_from_another_site_is_refused() {
        let headers = |origin: Option<&'static str>, site: Option<&'static str>| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_static("bot.example:8080"));
            if let Some(origin) = origin {
                headers.insert(header::ORIGIN, HeaderValue::from_static(origin));
            }
            if let Some(site) = site {
                headers.insert("sec-fetch-site", HeaderValue::from_static(site));
            }
            headers
        };
        assert!(same_origin(&headers(None, None)).is_ok());
        assert!(same_origin(&headers(Some("https://bot.example:8080"), None)).is_ok());
        assert!(same_origin(&headers(Some("https://evil.example"), None)).is_err());
        // Under no-referrer a browser's own form says `null`; its Sec-Fetch-Site decides.
        assert!(same_origin(&headers(Some("null"), Some("same-origin"))).is_ok());
        assert!(same_origin(&headers(Some("null"), Some("cross-site"))).is_err());
        assert!(same_origin(&headers(
            Some("https://bot.example:8080"),
            Some("same-site")
        ))
        .is_err());
    }
}
