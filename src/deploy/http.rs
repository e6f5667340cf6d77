//! Outbound HTTP of the remote backends: one client with timeouts, and [`send`], which retries
//! what may pass (network errors, 429, 5xx, rate limits) with exponential backoff that honours
//! the server's `Retry-After` and GitHub's `x-ratelimit-reset`, and never retries a 4xx that
//! means "no". Every failure comes back as a sentence a person can act on.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use tokio::time::Instant;

/// Connecting must not take longer than this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// One request (not a whole call) must not take longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Bodies are read up to this size; a deploy answer is a few lines of JSON.
const MAX_BODY: usize = 1 << 20;
/// How much of a refusing body a reason quotes.
const QUOTED_BODY_CHARS: usize = 300;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The client every remote backend uses: a user agent (GitHub requires one), timeouts.
pub fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .user_agent(concat!("shipmate/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| format!("could not build an HTTP client: {e}"))
}

/// A response as received.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// The body as JSON; an empty body is `null`.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        if self.body.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&self.body).map_err(|e| {
            format!(
                "answered {} with a body that is not JSON ({e}): {}",
                self.status.as_u16(),
                quote(&self.body)
            )
        })
    }
}

/// Why [`send`] gave no answer to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// A final answer: a 4xx that is not a rate limit. `body` is the start of what it said.
    Refused { status: u16, body: String },
    /// Retried until the deadline; `last` is the last failure.
    GaveUp { last: String },
    /// The call was stopped (aborted or detached) while waiting.
    Stopped,
}

impl HttpError {
    /// The reason as a person reads it, naming the server (`what`: "GitHub", "the webhook").
    pub fn reason(&self, what: &str) -> String {
        match self {
            HttpError::Refused { status, body } if body.is_empty() => {
                format!("{what} answered {status}")
            }
            HttpError::Refused { status, body } => format!("{what} answered {status}: {body}"),
            HttpError::GaveUp { last } => {
                format!("{what} could not be reached in time (last: {last}); check that it is up, then retry the promotion")
            }
            HttpError::Stopped => format!("stopped while waiting for {what}"),
        }
    }
}

/// One try's failure: retried or final.
#[derive(Debug)]
struct Failure {
    retry: bool,
    /// How long the server asked us to wait.
    wait: Option<Duration>,
    error: HttpError,
    message: String,
}

/// Sends the request `make` builds (again for each try) until an answer that is not retried,
/// `deadline`, or `stop`. 2xx and 3xx answers are returned; so are 4xx answers listed in
/// `accepted` (a caller that reads a 404 or 422 itself); other 4xx are [`HttpError::Refused`].
pub async fn send(
    make: impl Fn() -> RequestBuilder,
    accepted: &[u16],
    deadline: Instant,
    stop: impl Future<Output = ()>,
) -> Result<Answer, HttpError> {
    let last = Arc::new(Mutex::new(String::from("no try finished")));
    let noted = last.clone();
    let backoff = ExponentialBuilder::default()
        .with_min_delay(FIRST_BACKOFF)
        .with_max_delay(MAX_BACKOFF)
        .with_jitter()
        .without_max_times();
    let tries = (|| one_try(&make, accepted))
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|failure: &Failure| failure.retry)
        .adjust(|failure: &Failure, backoff| failure.wait.or(backoff))
        .notify(move |failure: &Failure, after: Duration| {
            tracing::warn!(error = %failure.message, retry_in = ?after, "remote call failed; retrying");
            if let Ok(mut last) = noted.lock() {
                last.clone_from(&failure.message);
            }
        });
    tokio::select! {
        () = stop => Err(HttpError::Stopped),
        result = tokio::time::timeout_at(deadline, tries) => match result {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(failure)) => Err(failure.error),
            Err(_) => Err(HttpError::GaveUp {
                last: last.lock().map(|l| l.clone()).unwrap_or_default(),
            }),
        },
    }
}

async fn one_try(make: &impl Fn() -> RequestBuilder, accepted: &[u16]) -> Result<Answer, Failure> {
    let response = make().send().await.map_err(|e| {
        let message = network_error(&e);
        Failure {
            retry: true,
            wait: None,
            error: HttpError::GaveUp {
                last: message.clone(),
            },
            message,
        }
    })?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = read_body(response).await;
    let answer = Answer {
        status,
        headers,
        body,
    };
    if status.is_success() || status.is_redirection() || accepted.contains(&status.as_u16()) {
        return Ok(answer);
    }
    let wait = asked_wait(&answer.headers);
    let rate_limited = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN
            && (wait.is_some() || limit_exhausted(&answer.headers)));
    let message = format!("answered {}: {}", status.as_u16(), quote(&answer.body));
    if rate_limited || status.is_server_error() {
        return Err(Failure {
            retry: true,
            wait,
            error: HttpError::GaveUp {
                last: message.clone(),
            },
            message,
        });
    }
    Err(Failure {
        retry: false,
        wait: None,
        error: HttpError::Refused {
            status: status.as_u16(),
            body: quote(&answer.body),
        },
        message,
    })
}

async fn read_body(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_BODY.saturating_sub(bytes.len());
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A network error without the URL (it may carry credentials): what failed, and why.
fn network_error(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    if cause.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {cause}")
    }
}

/// How long the server asked us to wait: `Retry-After` (seconds or an HTTP date), or, with
/// GitHub's `x-ratelimit-remaining: 0`, until `x-ratelimit-reset` (measured against the
/// answer's own `Date`, so no clock of ours is involved).
fn asked_wait(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let date = text("date").and_then(|d| httpdate::parse_http_date(d).ok());
    if let Some(after) = text("retry-after") {
        if let Ok(seconds) = after.trim().parse::<u64>() {
            return Some(Duration::from_secs(seconds));
        }
        if let (Ok(at), Some(now)) = (httpdate::parse_http_date(after), date) {
            return Some(at.duration_since(now).unwrap_or_default());
        }
    }
    if limit_exhausted(headers) {
        let reset = text("x-ratelimit-reset")?.trim().parse::<u64>().ok()?;
        let now = date?.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1)));
    }
    None
}

fn limit_exhausted(headers: &HeaderMap) -> bool {
    headers
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0")
}

/// The start of a body, on one line, for a reason.
pub fn quote(body: &str) -> String {
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(QUOTED_BODY_CHARS) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    #[test]
    fn the_server_says_how_long_to_wait() {
        assert_eq!(
            asked_wait(&headers(&[("retry-after", "7")])),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            asked_wait(&headers(&[
                ("date", "Wed, 21 Oct 2026 07:28:00 GMT"),
                ("retry-after", "Wed, 21 Oct 2026 07:28:30 GMT"),
            ])),
            Some(Duration::from_secs(30))
        );
        // GitHub: 1792999680 is 07:28:00 + 40 s on that day.
        let date = "Wed, 21 Oct 2026 07:28:00 GMT";
        let now = httpdate::parse_http_date(date)
            .expect("date")
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs();
        let reset = (now + 40).to_string();
        assert_eq!(
            asked_wait(&headers(&[
                ("date", date),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset),
            ])),
            Some(Duration::from_secs(40))
        );
        assert_eq!(
            asked_wait(&headers(&[("x-ratelimit-remaining", "12")])),
            None
        );
    }

    #[test]
    fn quotes_are_one_line_and_bounded() {
        assert_eq!(quote("a\n  b\tc"), "a b c");
        let long = "x".repeat(1000);
        assert_eq!(quote(&long).chars().count(), QUOTED_BODY_CHARS + 1);
    }
}
