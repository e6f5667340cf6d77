//! `shipmate serve` as a real child process in a sandbox directory: crash it with SIGKILL,
//! restart it on the same database, drive it over its HTTP API.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_shipmate");

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn poll(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

// ---- a temp directory whose processes die with it ----

/// A temp directory with `bot.toml`, `deploy.sh` and the SQLite file. Deploy scripts run there in
/// their own process group; when the bot is SIGKILLed they outlive it, so dropping the sandbox
/// kills every process still working in the directory before removing it.
pub struct Sandbox {
    pub dir: TempDir,
}

impl Sandbox {
    /// The harness config on a SQLite file in the directory, deploying with `script`, listening
    /// on a free port.
    pub fn new(script: &str) -> (Sandbox, u16) {
        Sandbox::with_config(script, |database_url| {
            super::test_config(database_url, "./deploy.sh")
        })
    }

    /// A sandbox whose `bot.toml` is `config(database_url)` (it must listen on `127.0.0.1:0`,
    /// which becomes a free port), beside `deploy.sh` holding `script`.
    pub fn with_config(script: &str, config: impl FnOnce(&str) -> String) -> (Sandbox, u16) {
        let dir = tempfile::tempdir().expect("temp dir");
        let deploy = dir.path().join("deploy.sh");
        std::fs::write(&deploy, script).expect("write deploy.sh");
        super::make_executable(&deploy);
        let database_url = format!("sqlite://{}", dir.path().join("bot.db").display());
        let port = free_port();
        let text = config(&database_url);
        let listen = "listen = \"127.0.0.1:0\"";
        assert!(
            text.contains(listen),
            "the harness config listens on port 0"
        );
        let text = text.replace(listen, &format!("listen = \"127.0.0.1:{port}\""));
        std::fs::write(dir.path().join("bot.toml"), text).expect("write bot.toml");
        (Sandbox { dir }, port)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn config(&self) -> String {
        self.path("bot.toml").display().to_string()
    }

    /// Processes whose working directory is this sandbox (Linux /proc).
    pub fn processes(&self) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let dir = self
            .dir
            .path()
            .canonicalize()
            .unwrap_or_else(|_| self.dir.path().to_path_buf());
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .is_ok_and(|cwd| cwd.starts_with(&dir))
            })
            .collect()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for pid in self.processes() {
            // The deploy script leads its own group; its `sleep` children go with it.
            let pid = Pid::from_raw(pid);
            if killpg(pid, Signal::SIGKILL).is_err() {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        poll(Duration::from_secs(5), || self.processes().is_empty());
    }
}

// ---- `shipmate serve` as a child process ----

/// A running `shipmate serve`; killed (SIGKILL) and reaped on drop, so no test leaks it.
pub struct Bot {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
    pub http: reqwest::Client,
}

impl Bot {
    /// Starts `serve` on the sandbox config and waits until `/readyz` answers 200.
    pub async fn start(sandbox: &Sandbox, port: u16, name: &str) -> Bot {
        Self::start_with_env(sandbox, port, name, &[]).await
    }

    /// [`Bot::start`] with extra variables in the bot's environment.
    pub async fn start_with_env(
        sandbox: &Sandbox,
        port: u16,
        name: &str,
        env: &[(&str, &str)],
    ) -> Bot {
        let log = sandbox.path(&format!("{name}.log"));
        let file = File::create(&log).expect("log file");
        let child = Command::new(BIN)
            .args(["serve", "--config", &sandbox.config()])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("spawn shipmate serve");
        let mut bot = Bot {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        };
        bot.wait_ready().await;
        bot
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "shipmate serve exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            let url = format!("{}/readyz", self.base);
            if let Ok(response) = self.http.get(&url).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "/readyz never answered 200:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        super::send_json(&self.http, method, &url, Some(super::CI_TOKEN), body).await
    }

    pub async fn promotion(&self, id: i64) -> Value {
        let (status, body) = self
            .request(
                reqwest::Method::GET,
                &format!("/api/v1/promotions/{id}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn wait_for_state(&self, id: i64, state: &str) -> Value {
        let mut last = Value::Null;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            last = self.promotion(id).await;
            if last["state"] == state {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "promotion #{id} never reached {state}; last: {last:#}\n{}",
            self.log()
        );
    }

    /// Waits for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "shipmate did not exit within {timeout:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown code runs, as when the machine or the OOM killer takes the bot.
    pub fn crash(&mut self) {
        self.child.kill().expect("SIGKILL the bot");
        self.child.wait().expect("reap the bot");
    }
}

impl Drop for Bot {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
