//! The `shipmate` binary (SPEC §7): exit codes of `check-config` and `migrate`, and `serve` as a
//! real process — crash recovery after SIGKILL and graceful shutdown on SIGTERM.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use tempfile::TempDir;

use support::serve::{poll, Bot, Sandbox, BIN};
/// Unset in the child, so `${…}` of it is always a missing variable.
const UNSET_VAR: &str = "SHIPMATE_TEST_SURELY_UNSET_TOKEN";

fn shipmate(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove(UNSET_VAR)
        .env("RUST_LOG", "info")
        .output()
        .expect("run the shipmate binary")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bot.toml")
}

// ---- check-config ----

#[test]
fn check_config_accepts_the_shipped_config() {
    let output = shipmate(&[
        "check-config",
        "--config",
        &shipped_config().display().to_string(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("is valid"), "{}", stdout(&output));
}

#[test]
fn check_config_lists_every_problem_with_its_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bot.toml");
    let text = r#"
[server]
listen = "localhost:eighty"

[database]
url = "sqlite://bot.db"

[slack]
bot_token = "${UNSET}"
signing_secret = "literal"

[roles]
leads = ["bob"]
deployers = ["*"]

[[api_tokens]]
name = "ci"

[[service]]
name = "api"
  [[service.environment]]
  name = "production"
  backend = { kind = "command", run = ["./deploy.sh"], timeout = "10 minutes please" }
  approvals = { required = 1, from = "reviewers" }
  windows = ["lunch"]
  verify = { kind = "http", url = "https://api.example.com/healthz" }

[[service]]
name = "api"
"#
    .replace("UNSET", UNSET_VAR);
    std::fs::write(&path, text).unwrap();
    let output = shipmate(&["check-config", "--config", &path.display().to_string()]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{} has 10 problems:", path.display())),
        "{err}"
    );
    for (key, needle) in [
        ("server.listen", "not an address"),
        ("slack.bot_token", UNSET_VAR),
        ("roles.leads[0]", "not an identity"),
        ("api_tokens[0]", "sha256"),
        (
            "service[0].environment[0].backend.timeout",
            "10 minutes please",
        ),
        (
            "service[0].environment[0].approvals.from",
            "unknown role `reviewers`",
        ),
        (
            "service[0].environment[0].windows[0]",
            "unknown window `lunch`",
        ),
        (
            "service[0].environment[0].verify",
            "must be a list of checks",
        ),
        ("service[1].name", "used twice"),
        ("service[1].environment", "empty pipeline"),
    ] {
        let line = err
            .lines()
            .find(|line| line.starts_with(&format!("  - {key}: ")))
            .unwrap_or_else(|| panic!("no line for {key}:\n{err}"));
        assert!(line.contains(needle), "{line}");
    }
}

/// A config whose production environment verifies and rolls out as a canary (SPEC §5.1, §5.2),
/// its Prometheus URL from `${PROM_VAR}`.
const ROLLOUT_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:8080"

[database]
url = "sqlite://bot.db"

[roles]
deployers = ["*"]

[[service]]
name = "api"
  [[service.environment]]
  name = "production"
  backend = { kind = "command", run = ["./deploy.sh"] }
  verify = [
    { kind = "http", url = "https://api.example.com/healthz", for = "2m", every = "10s" },
    { kind = "prometheus", url = "${PROM_VAR}", query = 'sum(rate(errors{version="{version}"}[1m]))', max = 0.01 },
    { kind = "command", run = ["./smoke.sh"], timeout = "5m" },
  ]
  on_failure = "rollback"
  strategy = { kind = "canary", steps = [10, 50, 100], pause = "5m" }
"#;

const PROM_VAR: &str = "SHIPMATE_TEST_PROMETHEUS_URL";

/// `check-config` of `text` written to `bot.toml` in a temp directory (kept while the caller
/// holds it), with `PROM_VAR` set to `prom_url`.
fn check_rollout_config(text: &str, prom_url: &str) -> (TempDir, PathBuf, Output) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bot.toml");
    std::fs::write(&path, text.replace("PROM_VAR", PROM_VAR)).unwrap();
    let output = Command::new(BIN)
        .args(["check-config", "--config", &path.display().to_string()])
        .env(PROM_VAR, prom_url)
        .output()
        .expect("run the shipmate binary");
    (dir, path, output)
}

#[test]
fn check_config_accepts_verification_failure_handling_and_a_canary() {
    let (_dir, _, output) = check_rollout_config(ROLLOUT_CONFIG, "http://prometheus:9090");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("is valid"), "{}", stdout(&output));
}

#[test]
fn check_config_lists_every_rollout_problem_with_its_key_and_exits_2() {
    let broken = ROLLOUT_CONFIG
        .replace(r#"every = "10s""#, r#"every = "10s", max = 1"#)
        .replace(r#"for = "2m""#, r#"for = "5s""#)
        .replace("max = 0.01", "min = 0.5, max = 0.01")
        .replace(r#"run = ["./smoke.sh"], "#, "")
        .replace(r#""rollback""#, r#""revert""#)
        .replace("[10, 50, 100]", "[10, 5, 100]");
    let (_dir, path, output) = check_rollout_config(&broken, "prometheus:9090");
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{} has 7 problems:", path.display())),
        "{err}"
    );
    for (key, needle) in [
        ("verify[0].max", "an http check has no `max`"),
        ("verify[0].every", "10s is longer than for = 5s"),
        ("verify[1].url", "`prometheus:9090` is not an http(s) URL"),
        ("verify[1].min", "0.5 is above max 0.01"),
        ("verify[2].run", "missing"),
        ("on_failure", "unknown `revert`"),
        (
            "strategy.steps[1]",
            "5 does not rise above the step before it (10)",
        ),
    ] {
        let key = format!("service[0].environment[0].{key}");
        let line = err
            .lines()
            .find(|line| line.starts_with(&format!("  - {key}: ")))
            .unwrap_or_else(|| panic!("no line for {key}:\n{err}"));
        assert!(line.contains(needle), "{line}");
    }
}

#[test]
fn check_config_names_a_missing_file_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nowhere").join("bot.toml");
    let output = shipmate(&["check-config", "--config", &path.display().to_string()]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("--config"), "{err}");
}

#[test]
fn unknown_subcommand_exits_2() {
    let output = shipmate(&["deploy-everything"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("deploy-everything"),
        "{}",
        stderr(&output)
    );

    let output = shipmate(&[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

// ---- migrate ----

#[tokio::test]
async fn migrate_creates_the_database_and_is_idempotent() {
    let (sandbox, _) = Sandbox::new(support::RECORDING_SCRIPT);
    let db = sandbox.path("bot.db");
    assert!(!db.exists());

    let output = shipmate(&["migrate", "--config", &sandbox.config()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(db.is_file(), "migrate creates {}", db.display());

    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open the migrated database");
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .expect("list tables");
    conn.close().await.expect("close");
    for table in [
        "promotions",
        "releases",
        "approvals",
        "audit_events",
        "jobs",
    ] {
        assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
    }

    let again = shipmate(&["migrate", "--config", &sandbox.config()]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
}

#[test]
fn migrate_with_a_broken_config_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bot.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:8080\"\n").unwrap();
    let output = shipmate(&["migrate", "--config", &path.display().to_string()]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("database"), "{}", stderr(&output));
}

// ---- check-backends ----

#[test]
fn check_backends_exits_0_when_every_backend_answers() {
    let (sandbox, _) = Sandbox::new("#!/bin/sh\nexit 0\n");
    let output = shipmate(&["check-backends", "--config", &sandbox.config()]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{out}{}", stderr(&output));
    assert!(out.contains("ok      api dev (command)"), "{out}");
    assert!(out.contains("deploy.sh is executable"), "{out}");
    assert!(!out.contains("FAILED"), "{out}");
}

#[test]
fn check_backends_exits_1_naming_each_backend_that_failed() {
    let (sandbox, _) = Sandbox::with_config("#!/bin/sh\nexit 0\n", |database_url| {
        support::test_config(database_url, "./missing.sh")
    });
    let output = shipmate(&["check-backends", "--config", &sandbox.config()]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}{}", stderr(&output));
    assert!(out.contains("FAILED  api production (command)"), "{out}");
    assert!(
        out.contains("missing.sh: No such file or directory"),
        "{out}"
    );
    assert!(out.contains("backends failed"), "{out}");
}

// ---- serve: crash recovery and graceful shutdown ----

/// Promotes web `version` to staging and waits until its (gated) deploy runs.
async fn deploying(bot: &Bot, version: &str) -> i64 {
    let promote = json!({"service": "web", "version": version, "environment": "staging"});
    let (status, body) = bot
        .request(reqwest::Method::POST, "/api/v1/promotions", Some(promote))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_i64().expect("promotion id");
    bot.wait_for_state(id, "deploying").await;
    id
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_killed_with_the_bot_is_interrupted_at_restart_and_can_be_retried() {
    let (sandbox, port) = Sandbox::new(support::GATED_SCRIPT);
    let mut bot = Bot::start(&sandbox, port, "first").await;

    let id = deploying(&bot, "1.0.0").await;

    bot.crash();
    drop(bot);

    let bot = Bot::start(&sandbox, port, "second").await;
    let promotion = bot.promotion(id).await;
    assert_eq!(promotion["state"], "interrupted", "{promotion:#}");
    let reason = promotion["reason"].as_str().unwrap_or_default();
    assert!(
        !reason.is_empty(),
        "an interrupted promotion says why: {promotion:#}"
    );
    assert!(promotion["finished_at"].is_string(), "{promotion:#}");
    let events = promotion["events"].as_array().expect("events");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "interrupted" && e["actor"] == "shipmate:bot"),
        "an `interrupted` event by shipmate:bot: {events:#?}"
    );
    let (status, services) = bot
        .request(reqwest::Method::GET, "/api/v1/services", None)
        .await;
    assert_eq!(status, 200, "{services}");

    let (status, retry) = bot
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/promotions/{id}/retry"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 202, "{retry}");
    let retry_id = retry["id"].as_i64().expect("retry id");
    assert_ne!(retry_id, id, "a retry is a new promotion");
    assert_eq!(retry["retry_of"], id, "{retry:#}");
    assert_eq!(retry["service"], "web");
    assert_eq!(retry["version"], "1.0.0");
    assert_eq!(retry["environment"], "staging");

    bot.wait_for_state(retry_id, "deploying").await;
    std::fs::write(sandbox.path(&format!("release-{retry_id}")), "").expect("open the gate");
    let done = bot.wait_for_state(retry_id, "succeeded").await;
    assert!(done["finished_at"].is_string(), "{done:#}");
    // The original stays interrupted: history is not rewritten.
    assert_eq!(bot.promotion(id).await["state"], "interrupted");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_shuts_down_gracefully_with_exit_0() {
    let (sandbox, port) = Sandbox::new(support::RECORDING_SCRIPT);
    let mut bot = Bot::start(&sandbox, port, "serve").await;
    let pid = Pid::from_raw(i32::try_from(bot.child.id()).expect("pid fits"));
    kill(pid, Signal::SIGTERM).expect("send SIGTERM");
    let status = bot.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", bot.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_running_deploy_finish_within_the_grace_period() {
    let (sandbox, port) = Sandbox::new(support::GATED_SCRIPT);
    let mut bot = Bot::start(&sandbox, port, "first").await;
    let id = deploying(&bot, "2.0.0").await;

    let pid = Pid::from_raw(i32::try_from(bot.child.id()).expect("pid fits"));
    kill(pid, Signal::SIGTERM).expect("send SIGTERM");
    // It stops taking requests at once, while the deploy goes on.
    let stopped_listening = poll(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
    });
    assert!(
        stopped_listening,
        "still listening after SIGTERM:\n{}",
        bot.log()
    );
    assert!(
        bot.child.try_wait().expect("try_wait").is_none(),
        "exited without waiting for the running deploy:\n{}",
        bot.log()
    );
    std::fs::write(sandbox.path(&format!("release-{id}")), "").expect("open the gate");
    let status = bot.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", bot.log());
    drop(bot);

    let bot = Bot::start(&sandbox, port, "second").await;
    let promotion = bot.promotion(id).await;
    assert_eq!(promotion["state"], "succeeded", "{promotion:#}");
}

// ---- what a deploy script sees ----

/// Writes the script's whole environment next to it.
const ENV_SCRIPT: &str = "#!/bin/sh\nenv > \"env-$SHIPMATE_PROMOTION_ID.txt\"\necho done\n";

#[tokio::test(flavor = "multi_thread")]
async fn deploy_scripts_get_none_of_the_bots_secrets_and_their_env_table() {
    let (sandbox, port) = Sandbox::new(ENV_SCRIPT);
    let config = std::fs::read_to_string(sandbox.config()).expect("read bot.toml");
    let database_url = format!("sqlite://{}", sandbox.path("bot.db").display());
    assert!(
        config.contains(&database_url),
        "the harness names its database"
    );
    let config = config
        .replace(&database_url, "${TEST_DATABASE_URL}")
        .replace(
            "run = [\"./deploy.sh\"],",
            "run = [\"./deploy.sh\"], env = { REGISTRY = \"${TEST_REGISTRY}\" },",
        );
    std::fs::write(sandbox.config(), config).expect("write bot.toml");
    let secrets = [
        ("TEST_DATABASE_URL", database_url.as_str()),
        ("SLACK_BOT_TOKEN", "xoxb-cli-secret-token"),
        ("DISCORD_BOT_TOKEN", "discord-cli-secret-token"),
        ("TEST_REGISTRY", "ghcr.io/acme"),
    ];
    let bot = Bot::start_with_env(&sandbox, port, "serve", &secrets).await;

    let promote = json!({"service": "web", "version": "1.0.0", "environment": "staging"});
    let (status, body) = bot
        .request(reqwest::Method::POST, "/api/v1/promotions", Some(promote))
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_i64().expect("promotion id");
    bot.wait_for_state(id, "succeeded").await;

    let seen = std::fs::read_to_string(sandbox.path(&format!("env-{id}.txt"))).expect("env dump");
    for secret in [
        database_url.as_str(),
        "xoxb-cli-secret-token",
        "discord-cli-secret-token",
    ] {
        assert!(
            !seen.contains(secret),
            "{secret} reached the script:\n{seen}"
        );
    }
    for expected in ["REGISTRY=ghcr.io/acme", "SHIPMATE_SERVICE=web", "RUST_LOG="] {
        let present = seen.lines().any(|line| line.starts_with(expected));
        assert_eq!(present, expected != "RUST_LOG=", "{expected}:\n{seen}");
    }
}

// ---- deploy scripts die with the bot ----

/// Appends its promotion to the ledger, leaves a `sleep` grandchild in its group (pids in
/// files), then waits for its gate.
const LINGERING_SCRIPT: &str = r#"#!/bin/sh
echo "$SHIPMATE_PROMOTION_ID" >> ledger.txt
echo $$ > "leader-$SHIPMATE_PROMOTION_ID.pid"
sleep 300 &
echo $! > "grandchild-$SHIPMATE_PROMOTION_ID.pid"
echo "waiting for the gate"
while [ ! -f "release-$SHIPMATE_PROMOTION_ID" ]; do sleep 0.05; done
echo "gate opened"
"#;

fn pid_in(sandbox: &Sandbox, name: &str) -> Pid {
    let read = || {
        std::fs::read_to_string(sandbox.path(name))
            .unwrap_or_default()
            .trim()
            .parse::<i32>()
            .ok()
    };
    assert!(
        poll(Duration::from_secs(10), || read().is_some()),
        "{name} never written"
    );
    Pid::from_raw(read().unwrap_or_default())
}

/// Alive and not a zombie.
fn running(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_dies_with_a_killed_bot_and_a_retry_runs_alone() {
    let (sandbox, port) = Sandbox::new(LINGERING_SCRIPT);
    let mut bot = Bot::start(&sandbox, port, "first").await;
    let id = deploying(&bot, "1.0.0").await;
    let leader = pid_in(&sandbox, &format!("leader-{id}.pid"));
    let grandchild = pid_in(&sandbox, &format!("grandchild-{id}.pid"));
    assert!(running(leader) && running(grandchild));

    bot.crash();
    drop(bot);
    assert!(
        poll(Duration::from_secs(5), || !running(leader)),
        "the script outlived the SIGKILLed bot"
    );

    let bot = Bot::start(&sandbox, port, "second").await;
    assert!(
        !running(grandchild),
        "the script's grandchild outlived the restart:\n{}",
        bot.log()
    );
    assert_eq!(bot.promotion(id).await["state"], "interrupted");

    let (status, retry) = bot
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/promotions/{id}/retry"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 202, "{retry}");
    let retry_id = retry["id"].as_i64().expect("retry id");
    bot.wait_for_state(retry_id, "deploying").await;
    // The script writes its ledger line before its pid file.
    pid_in(&sandbox, &format!("leader-{retry_id}.pid"));
    let ledger = std::fs::read_to_string(sandbox.path("ledger.txt")).expect("ledger");
    assert_eq!(
        ledger.lines().collect::<Vec<_>>(),
        [id.to_string(), retry_id.to_string()],
        "one run per promotion"
    );
    std::fs::write(sandbox.path(&format!("release-{retry_id}")), "").expect("open the gate");
    bot.wait_for_state(retry_id, "succeeded").await;
}
