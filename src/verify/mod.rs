//! Post-deploy verification probes (SPEC §5.1): one probe of an `http`, `prometheus` or
//! `command` check, turned into a [`Reading`]. Judging readings is the domain's
//! (`crate::domain::verification::judge`); scheduling probes and gates is the engine's.

pub mod command;
pub mod http;
pub mod prometheus;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::deploy::template::substitute;
use crate::deploy::DeployRequest;
use crate::domain::verification::{CheckKind, CheckSpec, Reading};

/// The longest a single HTTP or Prometheus probe may take, however rarely the check probes.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest: a check probing very often still gives the server a chance to answer.
pub const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// What a probe needs to know about the promotion being verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    /// Service, version, environment, previous version and rollout step; a command check's
    /// script gets exactly the deploy script's `SHIPMATE_*` variables from it.
    pub request: DeployRequest,
}

/// Makes probes of verification checks.
#[async_trait]
pub trait Prober: Send + Sync {
    /// One probe of `check`, its placeholders substituted from `target`. Returns when the probe
    /// is done, or `Reading::Unreachable("cancelled")` soon after `cancel` fires.
    async fn probe(
        &self,
        check: &CheckSpec,
        target: &ProbeTarget,
        cancel: CancellationToken,
    ) -> Reading;
}

/// The real probes: HTTP and Prometheus over `client`, command checks run like deploy scripts.
#[derive(Debug, Clone)]
pub struct LiveProber {
    client: reqwest::Client,
    /// Where command checks run (the config file's directory, like deploy scripts).
    base_dir: PathBuf,
    /// The `env` table of each (service, environment)'s command backend: a check script gets
    /// the same extra variables as that environment's deploy script.
    command_env: HashMap<(String, String), BTreeMap<String, String>>,
}

impl LiveProber {
    /// A prober with no `env` tables yet (see [`LiveProber::with_command_env`]). `client` is
    /// shared with whatever else makes HTTP calls; each probe sets its own timeout.
    pub fn new(base_dir: PathBuf, client: reqwest::Client) -> Self {
        Self {
            client,
            base_dir,
            command_env: HashMap::new(),
        }
    }

    /// Gives command checks of `service` in `environment` that environment's backend `env`
    /// table (values already substituted from `${VAR}`).
    pub fn with_command_env(
        mut self,
        service: &str,
        environment: &str,
        env: BTreeMap<String, String>,
    ) -> Self {
        self.command_env
            .insert((service.to_string(), environment.to_string()), env);
        self
    }

    fn env_of(&self, request: &DeployRequest) -> BTreeMap<String, String> {
        self.command_env
            .get(&(request.service.clone(), request.environment.clone()))
            .cloned()
            .unwrap_or_default()
    }

    async fn probe_kind(
        &self,
        kind: &CheckKind,
        every: Duration,
        request: &DeployRequest,
        cancel: CancellationToken,
    ) -> Reading {
        let timeout = request_timeout(every);
        match kind {
            CheckKind::Http { url, .. } => {
                let url = substitute(url, request);
                until_cancelled(&cancel, http::status(&self.client, &url, timeout)).await
            }
            CheckKind::Prometheus { url, query, .. } => {
                let (url, query) = (substitute(url, request), substitute(query, request));
                let probe = prometheus::instant_query(&self.client, &url, &query, timeout);
                until_cancelled(&cancel, probe).await
            }
            CheckKind::Command { run, timeout } => {
                let script = command::Script {
                    run: run.iter().map(|arg| substitute(arg, request)).collect(),
                    timeout: *timeout,
                    working_dir: self.base_dir.clone(),
                    env: self.env_of(request),
                };
                // The backend honours `cancel` itself and kills the script's process group.
                script.run(request.clone(), cancel).await
            }
        }
    }
}

#[async_trait]
impl Prober for LiveProber {
    async fn probe(
        &self,
        check: &CheckSpec,
        target: &ProbeTarget,
        cancel: CancellationToken,
    ) -> Reading {
        let reading = self
            .probe_kind(&check.kind, check.every, &target.request, cancel)
            .await;
        tracing::debug!(check = %check.name, ?reading, "probe");
        reading
    }
}

/// How long a probe may take to connect; the whole request is bounded by [`request_timeout`].
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP client for probes: says it is shipmate (a health endpoint's logs tell probes from
/// users), bounds connecting, follows up to 10 redirects (reqwest's default; see
/// [`http`]) and honours `HTTPS_PROXY`/`NO_PROXY`. Fails only if TLS cannot be set up.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("shipmate/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
}

/// The reading of a cancelled probe.
pub fn cancelled() -> Reading {
    Reading::Unreachable("cancelled".to_string())
}

/// Runs `probe` unless `cancel` fires first; dropping the probe aborts its request.
async fn until_cancelled(
    cancel: &CancellationToken,
    probe: impl Future<Output = Reading>,
) -> Reading {
    tokio::select! {
        biased;
        () = cancel.cancelled() => cancelled(),
        reading = probe => reading,
    }
}

/// How long one HTTP or Prometheus request may take: no longer than the check's interval (the
/// next probe is due then), within [`MIN_REQUEST_TIMEOUT`]..=[`MAX_REQUEST_TIMEOUT`].
pub fn request_timeout(every: Duration) -> Duration {
    every.clamp(MIN_REQUEST_TIMEOUT, MAX_REQUEST_TIMEOUT)
}

/// A URL as it may be shown in a reading or a log: without user name and password. Text that
/// does not parse as a URL is shown only up to any `@` (it may still hold credentials).
pub fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) => {
            // Both only fail for URLs that cannot have credentials in the first place.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.to_string()
        }
        Err(_) => match text.split_once('@') {
            Some((_, host)) => format!("…@{host}"),
            None => text.to_string(),
        },
    }
}

/// At most `max` characters of `text`, on one line, with `…` where it was cut: a reading is
/// shown on a card, not archived.
pub fn shorten(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// What went wrong with a request, concisely: `connection refused`, `timed out after 5s`.
/// reqwest's own message names the URL (with any credentials) and wraps the cause several
/// times; the innermost cause is the one a person can act on.
pub(crate) fn describe_transport_error(err: &reqwest::Error, timeout: Duration) -> String {
    if err.is_timeout() {
        return format!("timed out after {}", describe_timeout(timeout));
    }
    let mut innermost: &dyn std::error::Error = err;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    if let Some(io) = innermost.downcast_ref::<std::io::Error>() {
        if io.kind() == std::io::ErrorKind::ConnectionRefused {
            return "connection refused".to_string();
        }
    }
    let text = innermost.to_string();
    if text.is_empty() {
        err.to_string()
    } else {
        text
    }
}

/// `5s`, or `500ms` below a second.
fn describe_timeout(timeout: Duration) -> String {
    if timeout < Duration::from_secs(1) {
        format!("{}ms", timeout.as_millis())
    } else {
        crate::domain::duration::format_duration(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::deploy::sample_request as request;

    fn check(kind: CheckKind) -> CheckSpec {
        CheckSpec {
            name: CheckSpec::default_name(&kind, 1),
            kind,
            duration: Duration::from_secs(60),
            every: Duration::from_secs(30),
        }
    }

    /// A server whose every answer takes 30 s, and an http and a prometheus check against it.
    async fn slow_server() -> (wiremock::MockServer, [CheckSpec; 2]) {
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(wiremock::matchers::any())
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
            .mount(&server)
            .await;
        let checks = [
            check(CheckKind::Http {
                url: server.uri(),
                expect: 200,
            }),
            check(CheckKind::Prometheus {
                url: server.uri(),
                query: "up".to_string(),
                min: None,
                max: None,
            }),
        ];
        (server, checks)
    }

    #[tokio::test]
    async fn a_cancelled_probe_ends_promptly() {
        let (_server, checks) = slow_server().await;
        let prober = LiveProber::new(PathBuf::new(), reqwest::Client::new());
        let target = ProbeTarget {
            request: request(None),
        };
        for check in &checks {
            let cancel = CancellationToken::new();
            let probe = prober.probe(check, &target, cancel.clone());
            let trigger = async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                cancel.cancel();
            };
            let limit = Duration::from_secs(5);
            let (reading, ()) = tokio::time::timeout(limit, async { tokio::join!(probe, trigger) })
                .await
                .expect("the probe ignored the cancel");
            assert_eq!(reading, cancelled(), "{}", check.name);
        }
    }

    #[tokio::test]
    async fn http_urls_are_substituted_before_the_probe() {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/production/api/1.4.2"))
            .respond_with(ResponseTemplate::new(200))
            .expect(1)
            .mount(&server)
            .await;
        let check = check(CheckKind::Http {
            url: format!("{}/{{environment}}/{{service}}/{{version}}", server.uri()),
            expect: 200,
        });
        let prober = LiveProber::new(PathBuf::new(), reqwest::Client::new());
        let target = ProbeTarget {
            request: request(None),
        };

        let reading = prober
            .probe(&check, &target, CancellationToken::new())
            .await;

        assert_eq!(reading, Reading::Status(200));
    }

    #[test]
    fn request_timeouts_follow_the_interval_within_bounds() {
        assert_eq!(
            request_timeout(Duration::from_secs(10)),
            Duration::from_secs(10)
        );
        assert_eq!(
            request_timeout(Duration::from_secs(300)),
            MAX_REQUEST_TIMEOUT
        );
        assert_eq!(request_timeout(Duration::ZERO), MIN_REQUEST_TIMEOUT);
    }

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("https://user:hunter2@prom.example.com/prom?x=1"),
            "https://prom.example.com/prom?x=1"
        );
        assert_eq!(redact_url("http://h:9090"), "http://h:9090/");
        assert_eq!(redact_url("not a url:hunter2@host"), "…@host");
    }

    #[test]
    fn shortened_text_is_one_line_and_cut() {
        assert_eq!(shorten("a\n  b\tc", 10), "a b c");
        assert_eq!(shorten("abcdef", 3), "abc…");
        assert_eq!(shorten("éééé", 4), "éééé");
    }
}
