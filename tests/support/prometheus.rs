//! A real Prometheus (Debian `prometheus`) scraping a real Pushgateway (Debian
//! `prometheus-pushgateway`) every second, both on free loopback ports with their data in a temp
//! directory, both killed on drop. Tests push gauges and wait until a query shows them
//! (about 2.5 s after a push: the next scrape, then the next query sees it).
//!
//! Without the binaries a test is skipped with a notice, except under `CI=true`, where it fails:
//! CI installs them (`.ci/run`), so missing binaries there are a broken CI, not a reason to pass.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

const PROMETHEUS: &str = "prometheus";
const PUSHGATEWAY: &str = "prometheus-pushgateway";
/// How long a server may take to answer `/-/ready` (Prometheus opens its TSDB first).
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How often readiness and queries are polled.
const POLL: Duration = Duration::from_millis(100);
/// Attempts to start a server; another process may grab the free port before the server binds it.
const START_ATTEMPTS: usize = 3;

/// A running Prometheus and Pushgateway.
pub struct Prometheus {
    /// Prometheus's base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    /// The Pushgateway's base URL.
    pub pushgateway_url: String,
    http: reqwest::Client,
    // Fields drop in order: the servers are killed (Drop below) before their directory goes.
    servers: Vec<Server>,
    _dir: TempDir,
}

/// One child process, killed on drop.
struct Server {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }
}

/// Why a started server did not become ready.
enum NotReady {
    Exited(ExitStatus),
    TooSlow(String),
}

impl Prometheus {
    /// Starts both servers and waits until they are ready. `None` when the binaries are missing
    /// outside CI (a notice is printed); panics when they are missing under `CI=true`.
    pub async fn start() -> Option<Prometheus> {
        let (prometheus, pushgateway) = binaries()?;
        let dir = TempDir::new().expect("temp dir for prometheus");
        let http = reqwest::Client::new();
        let (gateway, gateway_port) =
            start_ready(&http, &pushgateway, dir.path(), PUSHGATEWAY, |port| {
                vec![format!("--web.listen-address=127.0.0.1:{port}")]
            })
            .await;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, scrape_config(gateway_port)).expect("write prometheus.yml");
        let data = dir.path().join("data");
        let (server, port) = start_ready(&http, &prometheus, dir.path(), PROMETHEUS, |port| {
            vec![
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", data.display()),
                format!("--web.listen-address=127.0.0.1:{port}"),
            ]
        })
        .await;
        Some(Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            pushgateway_url: format!("http://127.0.0.1:{gateway_port}"),
            http,
            servers: vec![server, gateway],
            _dir: dir,
        })
    }

    /// Replaces the metrics of push group `job` with `text` (Prometheus text format).
    pub async fn push(&self, job: &str, text: &str) {
        let url = format!("{}/metrics/job/{job}", self.pushgateway_url);
        let mut body = text.to_string();
        if !body.ends_with('\n') {
            // The text format ends every line, the last one too; the Pushgateway insists.
            body.push('\n');
        }
        let response = self
            .http
            .put(&url)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
        let status = response.status();
        let answer = response.text().await.unwrap_or_default();
        assert!(status.is_success(), "PUT {url}: HTTP {status}: {answer}");
    }

    /// Polls `query` until it returns one sample whose value satisfies `wanted`; returns that
    /// value. Panics after `within`, showing the last answer.
    pub async fn wait_for_value(
        &self,
        query: &str,
        wanted: impl Fn(f64) -> bool,
        within: Duration,
    ) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let answer = self.query(query).await;
            if let Some(value) = single_value(&answer).filter(|value| wanted(*value)) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "`{query}` did not show the wanted value within {within:?}; last answer: {answer}\n{}",
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The raw answer of an instant query (or the error, as text, to show in a failure).
    async fn query(&self, query: &str) -> Value {
        let url = format!("{}/api/v1/query", self.url);
        let sent = self.http.post(&url).form(&[("query", query)]).send().await;
        match sent {
            Ok(response) => match response.json::<Value>().await {
                Ok(answer) => answer,
                Err(e) => Value::String(format!("not JSON: {e}")),
            },
            Err(e) => Value::String(format!("POST {url}: {e}")),
        }
    }

    /// Both servers' output, for failure messages.
    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .map(|server| format!("--- {} log ---\n{}", server.name, server.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The value of an answer holding exactly one vector sample.
fn single_value(answer: &Value) -> Option<f64> {
    match answer["data"]["result"].as_array()?.as_slice() {
        [sample] => match sample["value"][1].as_str()? {
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            text => text.parse().ok(),
        },
        _ => None,
    }
}

/// One scrape job, the Pushgateway, keeping the pushed `job`/`instance` labels.
fn scrape_config(gateway_port: u16) -> String {
    format!(
        "global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: ['127.0.0.1:{gateway_port}']
"
    )
}

/// Both binaries, or `None` (with a notice) when one is missing outside CI.
fn binaries() -> Option<(PathBuf, PathBuf)> {
    match (on_path(PROMETHEUS), on_path(PUSHGATEWAY)) {
        (Some(prometheus), Some(pushgateway)) => Some((prometheus, pushgateway)),
        _ if in_ci() => panic!(
            "`{PROMETHEUS}` and `{PUSHGATEWAY}` must be on PATH under CI=true: install the Debian \
             packages with `apt-get install -y --no-install-recommends prometheus \
             prometheus-pushgateway` (.ci/run does when they are missing)"
        ),
        _ => {
            eprintln!(
                "skipped: `{PROMETHEUS}` or `{PUSHGATEWAY}` is not on PATH; install the Debian \
                 packages `prometheus prometheus-pushgateway` to run the real-Prometheus tests"
            );
            None
        }
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value.eq_ignore_ascii_case("true") || value == "1")
}

/// The executable `name` in a directory of `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Starts `binary` with `args(port)` on a free port until it answers `/-/ready`; a start that
/// exits early (the port was taken meanwhile) is retried on another port.
async fn start_ready(
    http: &reqwest::Client,
    binary: &Path,
    dir: &Path,
    name: &'static str,
    args: impl Fn(u16) -> Vec<String>,
) -> (Server, u16) {
    let mut failures = Vec::new();
    for attempt in 1..=START_ATTEMPTS {
        let port = free_port();
        let mut server = spawn(binary, dir, name, attempt, &args(port));
        match wait_ready(http, &mut server.child, port).await {
            Ok(()) => return (server, port),
            Err(NotReady::Exited(status)) => {
                failures.push(format!(
                    "port {port}: exited with {status}:\n{}",
                    server.log()
                ));
            }
            Err(NotReady::TooSlow(last)) => panic!(
                "{name} on port {port} was not ready within {READY_WITHIN:?} (last: {last}):\n{}",
                server.log()
            ),
        }
    }
    panic!(
        "{name} did not start in {START_ATTEMPTS} attempts:\n{}",
        failures.join("\n")
    )
}

fn spawn(binary: &Path, dir: &Path, name: &'static str, attempt: usize, args: &[String]) -> Server {
    let log = dir.join(format!("{name}-{attempt}.log"));
    let out = std::fs::File::create(&log).expect("server log file");
    let err = out.try_clone().expect("server log file");
    let mut command = Command::new(binary);
    command
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: prctl is async-signal-safe and allocates nothing. The server dies with the test
    // process even if it is killed before the drop runs (SIGKILL from a timeout); the signal
    // fires when the spawning thread exits, and tests spawn from their own thread, which lives
    // until the test ends.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", binary.display()));
    Server { name, child, log }
}

/// Polls `GET /-/ready` until 200, the process exits, or [`READY_WITHIN`] passes.
async fn wait_ready(http: &reqwest::Client, child: &mut Child, port: u16) -> Result<(), NotReady> {
    let url = format!("http://127.0.0.1:{port}/-/ready");
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(NotReady::Exited(status));
        }
        let last = match http.get(&url).timeout(Duration::from_secs(1)).send().await {
            Ok(response) if response.status().is_success() => {
                // Another server may hold the port and answer for ours, which then exits.
                return match child.try_wait() {
                    Ok(Some(status)) => Err(NotReady::Exited(status)),
                    _ => Ok(()),
                };
            }
            Ok(response) => format!("HTTP {}", response.status()),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(NotReady::TooSlow(last));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A loopback port free right now (bound, then released for the server to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}
