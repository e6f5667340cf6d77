//! Several real `shipmate serve` processes forming one bot (SPEC §8): one sandbox directory with
//! one `bot.toml` on a fresh PostgreSQL database and the deploy scripts, and N replicas started
//! from it, each on its own loopback port. Any replica can be SIGKILLed; requests, waits and
//! logs go to the ones still alive.
//!
//! The replicas share the config file byte for byte: its `listen` address takes the port from
//! the variable [`PORT_VARIABLE`] in each replica's environment (`${VAR}` substitution).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use super::serve::{free_port, Bot, Sandbox, BIN};
use super::{send_json, CI_TOKEN};

/// The variable each replica's `listen` port comes from.
pub const PORT_VARIABLE: &str = "REPLICA_PORT";
/// What the harness configs listen on before the port becomes a variable.
const LISTEN_ANY: &str = "listen = \"127.0.0.1:0\"";

/// Cluster tests of one test binary running at once: each starts three processes with their
/// own connection pools, and the PostgreSQL server (100 connections by default) is shared with
/// every other test binary.
static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// A deploy script that appends one line per run to `runs.txt`: service, version, promotion,
/// the replica that ran it (the bot forks the script itself, so it is the script's parent) and
/// when it started, in milliseconds since the epoch.
pub const RECORD_SCRIPT: &str = r#"#!/bin/sh
echo "$SHIPMATE_SERVICE $SHIPMATE_VERSION $SHIPMATE_PROMOTION_ID $PPID $(date +%s%3N)" >> runs.txt
"#;

/// One run of [`RECORD_SCRIPT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub service: String,
    pub version: String,
    pub promotion: i64,
    /// The pid of the replica that ran the script.
    pub replica_pid: u32,
    /// Milliseconds since the Unix epoch.
    pub started_ms: i64,
}

/// Dropped in field order: the replicas are killed first, then what their scripts left in the
/// sandbox, then the turn passes to the next cluster test.
pub struct Cluster {
    replicas: Vec<Replica>,
    pub sandbox: Sandbox,
    pub database_url: String,
    _turn: tokio::sync::SemaphorePermit<'static>,
}

struct Replica {
    bot: Bot,
    killed: bool,
}

/// What the cluster runs: `bot.toml` (the harness config plus `config`), scripts beside it.
pub struct ClusterBuilder {
    extra_config: String,
    scripts: Vec<(String, String)>,
    discord_api_url: Option<String>,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            extra_config: String::new(),
            scripts: Vec::new(),
            discord_api_url: None,
        }
    }

    /// Starts one more replica on the shared config and waits until it is ready; its index.
    pub async fn add_replica(&mut self) -> usize {
        let index = self.replicas.len();
        let bot = start_replica(&self.sandbox, &replica_name(index)).await;
        self.replicas.push(Replica { bot, killed: false });
        index
    }

    /// Replica `index`, alive or killed (a killed one answers no requests).
    pub fn bot(&self, index: usize) -> &Bot {
        &self.replicas[index].bot
    }

    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    pub fn pid(&self, index: usize) -> u32 {
        self.replicas[index].bot.child.id()
    }

    /// The index of the replica whose process is `pid`.
    pub fn replica_of_pid(&self, pid: u32) -> Option<usize> {
        (0..self.len()).find(|&index| self.pid(index) == pid)
    }

    pub fn name(&self, index: usize) -> String {
        replica_name(index)
    }

    /// SIGKILL: no shutdown code runs in the replica.
    pub fn kill(&mut self, index: usize) {
        let replica = &mut self.replicas[index];
        replica.bot.crash();
        replica.killed = true;
    }

    /// Indexes of the replicas not killed.
    pub fn live(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&index| !self.replicas[index].killed)
            .collect()
    }

    /// The `n`th live replica, round robin.
    pub fn round_robin(&self, n: usize) -> usize {
        let live = self.live();
        assert!(!live.is_empty(), "every replica was killed");
        live[n % live.len()]
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.sandbox.path(name)
    }

    /// Every replica's log, headed by its name and pid, for failure messages.
    pub fn logs(&self) -> String {
        (0..self.len())
            .map(|index| {
                format!(
                    "---- {} (pid {}{}) ----\n{}",
                    self.name(index),
                    self.pid(index),
                    if self.replicas[index].killed {
                        ", killed"
                    } else {
                        ""
                    },
                    self.bot(index).log()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A JSON request to replica `index` with `token`.
    pub async fn request_as(
        &self,
        index: usize,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let bot = self.bot(index);
        let url = format!("{}{path}", bot.base);
        send_json(&bot.http, method, &url, Some(token), body).await
    }

    /// `POST /api/v1/promotions` as CI on replica `index`.
    pub async fn promote(
        &self,
        index: usize,
        service: &str,
        version: &str,
        environment: &str,
    ) -> (u16, Value) {
        let body =
            serde_json::json!({"service": service, "version": version, "environment": environment});
        self.request_as(
            index,
            CI_TOKEN,
            Method::POST,
            "/api/v1/promotions",
            Some(body),
        )
        .await
    }

    /// Promotes as CI on replica `index` and returns the new promotion's id (it must be taken).
    pub async fn promote_id(
        &self,
        index: usize,
        service: &str,
        version: &str,
        environment: &str,
    ) -> i64 {
        let (status, body) = self.promote(index, service, version, environment).await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_i64().expect("promotion id")
    }

    /// `POST /api/v1/promotions/{id}/{action}` with `token` on replica `index`.
    pub async fn act(&self, index: usize, id: i64, action: &str, token: &str) -> (u16, Value) {
        let path = format!("/api/v1/promotions/{id}/{action}");
        self.request_as(
            index,
            token,
            Method::POST,
            &path,
            Some(serde_json::json!({})),
        )
        .await
    }

    /// Promotion `id` as a live replica shows it.
    pub async fn promotion(&self, id: i64) -> Value {
        let index = self.round_robin(0);
        let path = format!("/api/v1/promotions/{id}");
        let (status, body) = self
            .request_as(index, CI_TOKEN, Method::GET, &path, None)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until promotion `id` reaches `state`; fails with its last view and the logs after
    /// `timeout`.
    pub async fn wait_for_state(&self, id: i64, state: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.promotion(id).await;
            if last["state"] == state {
                return last;
            }
            assert!(
                Instant::now() < deadline,
                "promotion #{id} never reached {state} within {timeout:?}; last: {last:#}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /api/v1/cluster` on replica `index`.
    pub async fn cluster_view(&self, index: usize) -> Value {
        let (status, body) = self
            .request_as(index, CI_TOKEN, Method::GET, "/api/v1/cluster", None)
            .await;
        assert_eq!(status, 200, "GET /api/v1/cluster: {body}");
        body
    }

    /// The number a `SELECT COUNT(*) …` on the cluster's database answers.
    pub async fn sql_count(&self, query: &str) -> i64 {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&self.database_url)
            .await
            .expect("connect to the cluster's database");
        sqlx::query_scalar(query)
            .fetch_one(&mut db)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    /// The runs [`RECORD_SCRIPT`] wrote so far.
    pub fn runs(&self) -> Vec<Run> {
        let text = std::fs::read_to_string(self.path("runs.txt")).unwrap_or_default();
        text.lines()
            .map(|line| parse_run(line).unwrap_or_else(|| panic!("bad line in runs.txt: {line:?}")))
            .collect()
    }

    /// Waits until [`RECORD_SCRIPT`] ran for promotion `id`; the run, or `None` after `timeout`.
    pub async fn wait_run(&self, id: i64, timeout: Duration) -> Option<Run> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(run) = self.runs().into_iter().find(|run| run.promotion == id) {
                return Some(run);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl ClusterBuilder {
    /// TOML appended to the harness config (services, tables).
    pub fn config(mut self, toml: &str) -> Self {
        self.extra_config.push_str(toml);
        self
    }

    /// An executable script `name` in the sandbox (`deploy.sh` replaces the default one).
    pub fn script(mut self, name: &str, text: &str) -> Self {
        self.scripts.push((name.to_string(), text.to_string()));
        self
    }

    /// A `[discord]` table pointing at a fake Discord's REST API.
    pub fn discord(mut self, api_url: &str) -> Self {
        self.discord_api_url = Some(api_url.to_string());
        self
    }

    /// Creates a fresh PostgreSQL database and starts `replicas` replicas on it, one after the
    /// other; `None` (with a notice) when SHIPMATE_TEST_POSTGRES_URL is not set.
    pub async fn start(self, replicas: usize) -> Option<Cluster> {
        let turn = RUNNING
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let database_url = super::postgres_database().await?;
        let deploy = self
            .scripts
            .iter()
            .find(|(name, _)| name == "deploy.sh")
            .map_or(super::RECORDING_SCRIPT, |(_, text)| text.as_str());
        let mut text = super::test_config_with_chat(
            &database_url,
            "./deploy.sh",
            None,
            self.discord_api_url.as_deref(),
        );
        text.push_str(&self.extra_config);
        let sandbox = shared_config_sandbox(deploy, |_| text);
        for (name, script) in &self.scripts {
            let path = sandbox.path(name);
            std::fs::write(&path, script).expect("write script");
            super::make_executable(&path);
        }
        let mut cluster = Cluster {
            replicas: Vec::new(),
            sandbox,
            database_url,
            _turn: turn,
        };
        for _ in 0..replicas {
            cluster.add_replica().await;
        }
        Some(cluster)
    }
}

/// A sandbox whose `bot.toml` is `config(database_url)` (listening on `127.0.0.1:0`, the
/// sandbox's SQLite file given) with the port taken from each replica's [`PORT_VARIABLE`], beside
/// `deploy.sh` holding `deploy`.
pub fn shared_config_sandbox(deploy: &str, config: impl FnOnce(&str) -> String) -> Sandbox {
    let mut text = String::new();
    let (sandbox, _) = Sandbox::with_config(deploy, |database_url| {
        text = config(database_url);
        text.clone()
    });
    let listen = format!("listen = \"127.0.0.1:${{{PORT_VARIABLE}}}\"");
    std::fs::write(sandbox.path("bot.toml"), text.replace(LISTEN_ANY, &listen))
        .expect("write bot.toml");
    sandbox
}

/// Starts `shipmate serve` on the sandbox's shared config, on a free port; waits until ready.
pub async fn start_replica(sandbox: &Sandbox, name: &str) -> Bot {
    let port = free_port();
    Bot::start_with_env(sandbox, port, name, &[(PORT_VARIABLE, &port.to_string())]).await
}

/// Runs `shipmate serve` on the sandbox's shared config and a free port, expecting it to exit by
/// itself within `timeout`; its output. A serve still running then is killed and reported.
pub fn serve_expecting_exit(sandbox: &Sandbox, timeout: Duration) -> Result<Output, String> {
    let port = free_port().to_string();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", &sandbox.config()])
        .env(PORT_VARIABLE, &port)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shipmate serve");
    let exited = super::serve::poll(timeout, || matches!(child.try_wait(), Ok(Some(_))));
    if !exited {
        let _ = child.kill();
        let output = child.wait_with_output().expect("reap shipmate serve");
        return Err(format!(
            "shipmate serve was still running after {timeout:?} (on port {port}):\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(child.wait_with_output().expect("collect the output"))
}

fn replica_name(index: usize) -> String {
    let letter = u8::try_from(index)
        .ok()
        .and_then(|i| b'a'.checked_add(i))
        .map_or('?', char::from);
    format!("replica-{letter}")
}

fn parse_run(line: &str) -> Option<Run> {
    let mut fields = line.split_whitespace();
    let run = Run {
        service: fields.next()?.to_string(),
        version: fields.next()?.to_string(),
        promotion: fields.next()?.parse().ok()?,
        replica_pid: fields.next()?.parse().ok()?,
        started_ms: fields.next()?.parse().ok()?,
    };
    fields.next().is_none().then_some(run)
}

/// Milliseconds since the Unix epoch now, as [`RECORD_SCRIPT`] writes them.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

// ---- processes ----

/// (process group, state) of `pid` from /proc; `None` when there is no such process.
fn stat(pid: i32) -> Option<(i32, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    Some((pgrp, state))
}

/// Alive and not a zombie.
pub fn running(pid: i32) -> bool {
    stat(pid).is_some_and(|(_, state)| state != 'Z')
}

/// Live (non-zombie) processes in process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|(pgrp, state)| pgrp == pgid && state != 'Z'))
        .collect()
}
