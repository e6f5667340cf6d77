//! `bot.toml` loading and validation (SPEC §4): the shipped demo config, unknown keys, every
//! problem reported at once with its TOML key, `${VAR}` substitution, secrets, and the
//! window / schedule / freeze tables.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shipmate::config::{self, BackendConfig, Config, ConfigError, Problem};

fn no_env(_: &str) -> Option<String> {
    None
}

fn base_dir() -> PathBuf {
    PathBuf::from("/srv/shipmate")
}

/// An environment function backed by a fixed map.
fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    config::parse(text, &base_dir(), &no_env)
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Ok(_) => panic!("config was accepted, expected problems:\n{text}"),
        Err(problems) => problems,
    }
}

/// The problem reported under `key`, failing with the full list when there is none.
fn problem_at<'p>(problems: &'p [Problem], key: &str) -> &'p Problem {
    problems
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no problem with key `{key}` in {problems:#?}"))
}

/// A small valid config to which tests append tables.
const MINIMAL: &str = r#"
[server]
listen = "127.0.0.1:8080"

[database]
url = "sqlite://bot.db"

[roles]
leads = ["slack:U0LEAD"]
deployers = ["*"]
"#;

const SERVICE: &str = r#"
[[service]]
name = "api"
  [[service.environment]]
  name = "staging"
  backend = { kind = "command", run = ["./deploy.sh"] }
  [[service.environment]]
  name = "production"
  backend = { kind = "command", run = ["./deploy.sh"] }
"#;

fn with(extra: &str) -> String {
    format!("{MINIMAL}{extra}{SERVICE}")
}

// ---- the shipped demo config ----

#[test]
fn shipped_bot_toml_loads_without_any_environment() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = manifest.join("bot.toml");
    let config = config::load(&path, &no_env).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(config.base_dir, manifest);
    assert_eq!(config.service_names(), ["api", "web"]);
    for service in &config.services {
        assert_eq!(
            service.pipeline(),
            ["dev", "staging", "production"],
            "{}",
            service.name
        );
        for env in &service.environments {
            let BackendConfig::Command { run, .. } = &env.backend else {
                panic!("{} {} is not a command backend", service.name, env.name);
            };
            assert_eq!(
                run,
                &["./deploy/deploy.sh"],
                "{} {}",
                service.name,
                env.name
            );
            assert!(
                manifest.join(&run[0]).is_file(),
                "the demo deploy script exists"
            );
        }
        for name in ["dev", "staging"] {
            assert!(
                service.environment(name).unwrap().approvals.is_none(),
                "{} {name} needs no approval",
                service.name
            );
        }
        let production = service.environment("production").unwrap();
        let approvals = production
            .approvals
            .as_ref()
            .expect("production needs approval");
        assert_eq!(approvals.from_role, "leads");
        assert_eq!(approvals.required, 1);
        assert!(!approvals.self_approval);
        assert_eq!(approvals.expires, Duration::from_secs(24 * 3600));
    }
    assert!(config.roles.is_defined("leads"));
    assert!(config.slack.is_none() && config.discord.is_none());
    assert_eq!(
        config.database_url,
        format!("sqlite://{}", manifest.join("shipmate.db").display()),
        "the SQLite file is next to bot.toml, whatever the working directory"
    );
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    let tokens: Vec<&str> = config.api_tokens.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(tokens, ["ci", "lead"]);
}

#[test]
fn sqlite_paths_are_relative_to_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bot.toml");
    std::fs::write(&path, with("")).unwrap();
    let config = config::load(&path, &no_env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.database_url,
        format!("sqlite://{}", dir.path().join("bot.db").display())
    );

    let absolute = with("").replace(
        "sqlite://bot.db",
        "sqlite:///var/lib/shipmate/bot.db?mode=rwc",
    );
    let config = parse(&absolute).unwrap();
    assert_eq!(
        config.database_url,
        "sqlite:///var/lib/shipmate/bot.db?mode=rwc"
    );
}

#[test]
fn harness_config_is_valid() {
    let text = support::test_config("sqlite://test.db", "./deploy.sh");
    let config = parse(&text).unwrap_or_else(|p| panic!("{p:#?}"));
    assert_eq!(config.service_names(), ["api", "web"]);
}

#[test]
fn a_missing_file_is_named() {
    let path = Path::new("/nonexistent/shipmate/bot.toml");
    let error = config::load(path, &no_env).unwrap_err();
    assert_eq!(error.path, path);
    let text = error.to_string();
    assert!(text.contains("/nonexistent/shipmate/bot.toml"), "{text}");
    assert!(text.contains("--config"), "{text}");
}

// ---- unknown keys ----

fn assert_unknown_key(text: &str, key: &str) {
    let problems = problems(text);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let message = &problems[0].message;
    assert!(
        message.contains(&format!("unknown field `{key}`")),
        "the message names `{key}`: {message}"
    );
}

#[test]
fn unknown_top_level_key_is_rejected() {
    // Before the first table header, so it really is top-level.
    assert_unknown_key(&format!("listen_port = 8080\n{}", with("")), "listen_port");
    // A misspelt table is an unknown top-level key too.
    assert_unknown_key(&with("\n[[services]]\nname = \"web\"\n"), "services");
}

#[test]
fn unknown_server_key_is_rejected() {
    let text = with("").replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nport = 8080",
    );
    assert_unknown_key(&text, "port");
}

#[test]
fn unknown_environment_key_is_rejected() {
    let text = with("").replace(
        "name = \"production\"",
        "name = \"production\"\n  aproval = { required = 1, from = \"leads\" }",
    );
    assert_unknown_key(&text, "aproval");
}

#[test]
fn unknown_backend_key_is_rejected() {
    let text = with("").replace(
        "run = [\"./deploy.sh\"] }\n  [[service.environment]]",
        "run = [\"./deploy.sh\"], timout = \"5m\" }\n  [[service.environment]]",
    );
    let problems = problems(&text);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].key.ends_with(".backend.timout"),
        "{problems:#?}"
    );
    assert_eq!(
        problems[0].message,
        "a command backend has no `timout`; its keys are kind, run, timeout, env"
    );
}

#[test]
fn unknown_key_in_other_tables_is_rejected() {
    assert_unknown_key(
        &with("\n[[api_tokens]]\nname = \"ci\"\ntoken = \"x\"\nrole = [\"deployers\"]\n"),
        "role",
    );
    assert_unknown_key(
        &with("\n[slack]\nbot_token = \"x\"\nsigning_secret = \"y\"\nchannel = \"C1\"\n"),
        "channel",
    );
}

// ---- every problem at once ----

const BROKEN: &str = r#"
[server]
listen = "localhost:eighty"

[database]
url = "sqlite://bot.db"

[slack]
bot_token = "${SLACK_BOT_TOKEN}"
signing_secret = "not-a-real-secret"

[roles]
leads = ["slack:U0LEAD", "bob"]
deployers = ["*"]

[[api_tokens]]
name = "ci"
roles = ["deployers"]

[[service]]
name = "api"
  [[service.environment]]
  name = "staging"
  backend = { kind = "command", run = ["./deploy.sh"], timeout = "10m" }
  [[service.environment]]
  name = "production"
  backend = { kind = "command", run = ["./deploy.sh"], timeout = "10 minutes please" }
  approvals = { required = 2, from = "reviewers" }
  windows = ["lunch"]
  verify = { kind = "http", url = "https://api.example.com/healthz", for = "2m" }

[[service]]
name = "api"
  [[service.environment]]
  name = "production"
  backend = { kind = "command", run = ["./deploy.sh"] }

[[service]]
name = "web"
"#;

#[test]
fn every_problem_is_listed_at_once_with_its_key() {
    let problems = problems(BROKEN);
    let expect = |key: &str, needles: &[&str]| {
        let problem = problem_at(&problems, key);
        for needle in needles {
            assert!(
                problem.message.contains(needle),
                "{key}: `{}` should mention `{needle}`",
                problem.message
            );
        }
    };
    expect(
        "slack.bot_token",
        &["SLACK_BOT_TOKEN", "is not set", "set it"],
    );
    expect("service[1].name", &["`api`", "used twice", "unique"]);
    expect(
        "service[2].environment",
        &["web", "empty pipeline", "[[service.environment]]"],
    );
    expect(
        "service[0].environment[1].backend.timeout",
        &["10 minutes please", "not a duration", "30m"],
    );
    expect(
        "service[0].environment[1].approvals.from",
        &["unknown role `reviewers`", "[roles]", "leads"],
    );
    expect(
        "service[0].environment[1].verify",
        &["must be a list of checks", "verify = [{ kind = \"http\""],
    );
    expect(
        "server.listen",
        &["localhost:eighty", "not an address", "host:port"],
    );
    expect(
        "roles.leads[1]",
        &["`bob`", "not an identity", "slack:<user id>"],
    );
    expect(
        "service[0].environment[1].windows[0]",
        &["unknown window `lunch`", "[[window]]"],
    );
    expect("api_tokens[0]", &["sha256", "token"]);
    assert_eq!(
        problems.len(),
        10,
        "nothing else is reported: {problems:#?}"
    );

    let error = ConfigError {
        path: PathBuf::from("bot.toml"),
        problems,
    };
    insta::assert_snapshot!("every_problem_at_once", error.to_string());
}

#[test]
fn load_reports_the_same_problems_under_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bot.toml");
    std::fs::write(&path, BROKEN).unwrap();
    let error = config::load(&path, &no_env).unwrap_err();
    assert_eq!(error.path, path);
    assert_eq!(error.problems.len(), 10, "{error}");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("{} has 10 problems:\n", path.display())),
        "{text}"
    );
    for problem in &error.problems {
        assert!(
            text.contains(&format!("  - {}: {}\n", problem.key, problem.message)),
            "{text}"
        );
    }
}

#[test]
fn one_problem_is_singular() {
    let text = with("").replace("deployers = [\"*\"]", "");
    let error = ConfigError {
        path: PathBuf::from("bot.toml"),
        problems: problems(&text),
    };
    insta::assert_snapshot!("missing_deployers", error.to_string());
}

#[test]
fn a_toml_syntax_error_points_at_the_line() {
    let problems = problems("[server]\nlisten = \"127.0.0.1:8080\n");
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].message.contains("line 2"),
        "{}",
        problems[0].message
    );
}

// ---- ${VAR} substitution and secrets ----

#[test]
fn env_variables_are_substituted_whole_and_embedded() {
    let text = format!(
        "{}{}",
        MINIMAL
            .replace(
                "listen = \"127.0.0.1:8080\"",
                "listen = \"${BIND}:${PORT}\"\npublic_url = \"https://${HOST}/bot\""
            )
            .replace("sqlite://bot.db", "sqlite://${DATA_DIR}/bot.db"),
        r#"
[slack]
bot_token = "${SLACK_BOT_TOKEN}"
signing_secret = "${SLACK_SIGNING_SECRET}"

[[api_tokens]]
name = "ci"
token = "${SHIPMATE_CI_TOKEN}"
roles = ["deployers"]

[[service]]
name = "api"
  [[service.environment]]
  name = "staging"
  backend = { kind = "command", run = ["./deploy.sh", "--region=${REGION}"] }
"#
    );
    let env = env_of(&[
        ("BIND", "0.0.0.0"),
        ("PORT", "9090"),
        ("HOST", "bot.example.com"),
        ("DATA_DIR", "/var/lib/shipmate"),
        ("SLACK_BOT_TOKEN", "xoxb-super-secret-value"),
        ("SLACK_SIGNING_SECRET", "signing-secret-value"),
        ("SHIPMATE_CI_TOKEN", "ci-token-value"),
        ("REGION", "eu-west-1"),
    ]);
    let config = config::parse(&text, &base_dir(), &env).unwrap_or_else(|p| panic!("{p:#?}"));
    assert_eq!(config.server.listen.to_string(), "0.0.0.0:9090");
    assert_eq!(
        config.server.public_url.as_deref(),
        Some("https://bot.example.com/bot")
    );
    assert_eq!(config.database_url, "sqlite:///var/lib/shipmate/bot.db");
    let slack = config.slack.as_ref().expect("slack configured");
    assert_eq!(slack.bot_token.expose(), "xoxb-super-secret-value");
    assert_eq!(slack.signing_secret.expose(), "signing-secret-value");
    let expected_digest: [u8; 32] = {
        use sha2::{Digest, Sha256};
        Sha256::digest(b"ci-token-value").into()
    };
    assert_eq!(config.api_tokens[0].sha256, expected_digest);
    let BackendConfig::Command { run, .. } = &config.services[0].environments[0].backend else {
        panic!("not a command backend");
    };
    assert_eq!(run, &["./deploy.sh", "--region=eu-west-1"]);

    let debug = format!("{config:?}");
    for secret in [
        "xoxb-super-secret-value",
        "signing-secret-value",
        "ci-token-value",
    ] {
        assert!(
            !debug.contains(secret),
            "Debug output leaks `{secret}`: {debug}"
        );
    }
    assert!(debug.contains("Secret(***)"), "{debug}");
}

#[test]
fn every_missing_variable_is_named_with_its_key() {
    let text = with(
        r#"
[slack]
bot_token = "${SLACK_BOT_TOKEN}"
signing_secret = "prefix-${SLACK_SIGNING_SECRET}"
"#,
    );
    let problems = problems(&text);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    let token = problem_at(&problems, "slack.bot_token");
    assert!(token.message.contains("SLACK_BOT_TOKEN"), "{token}");
    let secret = problem_at(&problems, "slack.signing_secret");
    assert!(secret.message.contains("SLACK_SIGNING_SECRET"), "{secret}");
}

#[test]
fn a_missing_variable_is_reported_once_not_again_as_a_bad_value() {
    let text = format!(
        "{}{}",
        MINIMAL
            .replace("\"127.0.0.1:8080\"", "\"${BIND}\"")
            .replace("\"sqlite://bot.db\"", "\"${DATABASE_URL}\""),
        r#"
[[api_tokens]]
name = "ci"
token = "${CI_TOKEN}"

[[service]]
name = "api"
  [[service.environment]]
  name = "staging"
  backend = { kind = "command", run = ["${DEPLOY_SCRIPT}"] }
"#
    );
    let problems = problems(&text);
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "api_tokens[0].token",
            "database.url",
            "server.listen",
            "service[0].environment[0].backend.run[0]",
        ],
        "{problems:#?}"
    );
    for problem in &problems {
        assert!(problem.message.contains("is not set"), "{problem}");
    }
}

#[test]
fn secret_debug_never_shows_the_value() {
    let secret = config::Secret::new("hunter2");
    assert_eq!(format!("{secret:?}"), "Secret(***)");
    assert!(!format!("{:#?}", Some(secret.clone())).contains("hunter2"));
    assert_eq!(secret.expose(), "hunter2");
}

// ---- windows, schedules, freezes ----

const CALENDAR: &str = r#"
[[schedule]]
name = "nightly-staging"
cron = "0 0 2 * * Mon-Fri"
timezone = "Europe/Berlin"
command = "promote api latest to staging"
roles = ["deployers"]
channels = { slack = "C0123RELEASES" }

[[freeze]]
start = "2026-12-23T00:00:00+01:00"
end = "2027-01-02T00:00:00+01:00"
environments = ["production"]
reason = "holidays"

[[freeze]]
start = "2026-11-01T00:00:00Z"
end = "2026-11-01T06:00:00Z"
environments = ["*"]

[[window]]
name = "prod-window"
cron = "0 0 14 * * Tue,Thu"
duration = "2h"
timezone = "America/New_York"
announce_before = ["30m", "1h"]
channels = { slack = "C0123RELEASES", discord = "1100220033004400" }
"#;

fn calendar(old: &str, new: &str) -> String {
    assert!(
        old.is_empty() || CALENDAR.contains(old),
        "`{old}` is in the calendar"
    );
    let calendar = CALENDAR.replacen(old, new, 1);
    format!("{MINIMAL}{calendar}{SERVICE}").replace(
        "name = \"production\"",
        "name = \"production\"\n  windows = [\"prod-window\"]",
    )
}

#[test]
fn windows_schedules_and_freezes_parse() {
    let config = parse(&calendar("", "")).unwrap_or_else(|p| panic!("{p:#?}"));

    let [window] = config.windows.as_slice() else {
        panic!("one window: {:?}", config.windows);
    };
    assert_eq!(window.name, "prod-window");
    assert_eq!(window.duration, Duration::from_secs(2 * 3600));
    assert_eq!(window.timezone, chrono_tz::America::New_York);
    assert_eq!(
        window.announce_before,
        [Duration::from_secs(1800), Duration::from_secs(3600)]
    );
    let channels = window.channels.as_ref().expect("channels");
    assert_eq!(channels.slack.as_deref(), Some("C0123RELEASES"));
    assert_eq!(channels.discord.as_deref(), Some("1100220033004400"));
    // Seconds-first cron: 14:00:00 on Tuesdays and Thursdays.
    let after = chrono::DateTime::parse_from_rfc3339("2026-11-17T00:00:00Z")
        .unwrap()
        .with_timezone(&window.timezone);
    let next = window.cron.after(&after).next().expect("next opening");
    assert_eq!(next.to_rfc3339(), "2026-11-17T14:00:00-05:00");
    assert_eq!(
        config
            .service("api")
            .unwrap()
            .environment("production")
            .unwrap()
            .windows,
        ["prod-window"]
    );

    let [schedule] = config.schedules.as_slice() else {
        panic!("one schedule: {:?}", config.schedules);
    };
    assert_eq!(schedule.name, "nightly-staging");
    assert_eq!(schedule.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(schedule.roles, ["deployers"]);
    assert_eq!(schedule.channels.slack.as_deref(), Some("C0123RELEASES"));
    assert!(
        matches!(&schedule.command, shipmate::domain::command::Command::Promote { service, to, .. }
            if service == "api" && to.as_deref() == Some("staging")),
        "{:?}",
        schedule.command
    );

    let [holidays, night] = config.freezes.as_slice() else {
        panic!("two freezes: {:?}", config.freezes);
    };
    assert_eq!(holidays.start.to_rfc3339(), "2026-12-22T23:00:00+00:00");
    assert_eq!(holidays.end.to_rfc3339(), "2027-01-01T23:00:00+00:00");
    assert_eq!(holidays.environments, ["production"]);
    assert_eq!(holidays.reason.as_deref(), Some("holidays"));
    assert_eq!(night.environments, ["*"]);
    assert_eq!(night.reason, None);
}

#[test]
fn timezone_defaults_to_utc() {
    let config = parse(&calendar("timezone = \"America/New_York\"\n", "")).unwrap();
    assert_eq!(config.windows[0].timezone, chrono_tz::UTC);
}

/// Replaces `old` in the calendar, expecting exactly one problem, under `key`, that mentions every
/// needle.
fn assert_calendar_problem(old: &str, new: &str, key: &str, needles: &[&str]) {
    let problems = problems(&calendar(old, new));
    assert_eq!(problems.len(), 1, "{old} → {new}: {problems:#?}");
    let problem = &problems[0];
    assert_eq!(problem.key, key, "{problem}");
    for needle in needles {
        assert!(
            problem.message.contains(needle),
            "{key}: `{}` should mention `{needle}`",
            problem.message
        );
    }
}

#[test]
fn window_cron_must_be_seconds_first() {
    assert_calendar_problem(
        "cron = \"0 0 14 * * Tue,Thu\"",
        "cron = \"0 14 * * Tue,Thu\"",
        "window[0].cron",
        &["0 14 * * Tue,Thu", "not a cron schedule", "seconds first"],
    );
}

#[test]
fn window_timezone_must_be_an_iana_name() {
    assert_calendar_problem(
        "timezone = \"America/New_York\"",
        "timezone = \"Eastern\"",
        "window[0].timezone",
        &["`Eastern` is not a time zone", "IANA"],
    );
}

#[test]
fn window_announce_before_must_be_durations() {
    assert_calendar_problem(
        "announce_before = [\"30m\", \"1h\"]",
        "announce_before = [\"30m\", \"an hour\"]",
        "window[0].announce_before[1]",
        &["`an hour` is not a duration", "30m"],
    );
}

#[test]
fn window_duration_must_be_a_duration() {
    assert_calendar_problem(
        "duration = \"2h\"",
        "duration = \"0s\"",
        "window[0].duration",
        &["`0s` is not a duration"],
    );
}

#[test]
fn window_names_must_be_unique() {
    let config = calendar("", "")
        + "\n[[window]]\nname = \"prod-window\"\ncron = \"0 0 9 * * *\"\nduration = \"1h\"\n";
    let problems = problems(&config);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].key, "window[1].name");
}

#[test]
fn schedule_cron_must_be_seconds_first() {
    assert_calendar_problem(
        "cron = \"0 0 2 * * Mon-Fri\"",
        "cron = \"every night\"",
        "schedule[0].cron",
        &["every night", "seconds first"],
    );
}

#[test]
fn schedule_timezone_must_be_an_iana_name() {
    assert_calendar_problem(
        "timezone = \"Europe/Berlin\"",
        "timezone = \"Europe/Berlinn\"",
        "schedule[0].timezone",
        &["Europe/Berlinn", "IANA"],
    );
}

#[test]
fn schedule_command_must_parse() {
    let problems = problems(&calendar(
        "command = \"promote api latest to staging\"",
        "command = \"deploy everything\"",
    ));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].key, "schedule[0].command");
    assert!(!problems[0].message.contains('\n'), "{}", problems[0]);
}

#[test]
fn schedule_roles_must_be_known() {
    assert_calendar_problem(
        "roles = [\"deployers\"]",
        "roles = [\"deployer\"]",
        "schedule[0].roles[0]",
        &["unknown role `deployer`", "deployers"],
    );
}

#[test]
fn freeze_end_must_be_after_start() {
    assert_calendar_problem(
        "end = \"2027-01-02T00:00:00+01:00\"",
        "end = \"2026-12-22T00:00:00+01:00\"",
        "freeze[0].end",
        &["after start"],
    );
}

#[test]
fn freeze_times_must_be_rfc3339() {
    assert_calendar_problem(
        "start = \"2026-12-23T00:00:00+01:00\"",
        "start = \"December 23rd\"",
        "freeze[0].start",
        &["December 23rd", "RFC 3339"],
    );
}

#[test]
fn freeze_environments_must_be_known() {
    assert_calendar_problem(
        "environments = [\"production\"]",
        "environments = [\"prod\"]",
        "freeze[0].environments[0]",
        &["`prod`", "production, staging", "\"*\""],
    );
}

#[test]
fn environment_windows_must_be_defined() {
    let problems = problems(&calendar(
        "name = \"prod-window\"",
        "name = \"office-hours\"",
    ));
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let problem = problem_at(&problems, "service[0].environment[1].windows[0]");
    assert!(
        problem.message.contains("unknown window `prod-window`")
            && problem.message.contains("known: office-hours"),
        "{problem}"
    );
}

#[test]
fn calendar_problems_are_listed_together() {
    let text = calendar(
        "cron = \"0 0 14 * * Tue,Thu\"",
        "cron = \"0 14 * * Tue,Thu\"",
    )
    .replace(
        "timezone = \"Europe/Berlin\"",
        "timezone = \"Mars/Olympus\"",
    )
    .replace(
        "announce_before = [\"30m\", \"1h\"]",
        "announce_before = [\"soon\"]",
    )
    .replace(
        "end = \"2027-01-02T00:00:00+01:00\"",
        "end = \"2026-12-01T00:00:00+01:00\"",
    )
    .replace("environments = [\"*\"]", "environments = [\"qa\"]");
    let error = ConfigError {
        path: PathBuf::from("bot.toml"),
        problems: problems(&text),
    };
    assert_eq!(error.problems.len(), 5, "{error}");
    for problem in &error.problems {
        assert!(
            !problem.message.contains('\n'),
            "one line per problem: {problem}"
        );
    }
    insta::assert_snapshot!("calendar_problems", error.to_string());
}

#[test]
fn an_in_memory_database_is_refused() {
    for url in ["sqlite::memory:", "sqlite://:memory:"] {
        let text = support::test_config(url, "./deploy.sh");
        let problems = problems(&text);
        let problem = problem_at(&problems, "database.url");
        assert!(
            problem
                .message
                .contains("name a file, e.g. sqlite://shipmate.db"),
            "{url}: {problem}"
        );
    }
}

#[test]
fn absurd_durations_are_refused_with_the_longest_allowed() {
    // Accepted before, these made the scheduler's time arithmetic overflow and panic.
    let cases = [
        (
            calendar("duration = \"2h\"", "duration = \"300000y\""),
            "window[0].duration",
        ),
        (
            calendar(
                "announce_before = [\"30m\", \"1h\"]",
                "announce_before = [\"30m\", \"300000y\"]",
            ),
            "window[0].announce_before[1]",
        ),
        (
            with("").replace(
                "run = [\"./deploy.sh\"] }\n  [[service.environment]]",
                "run = [\"./deploy.sh\"], timeout = \"300000y\" }\n  [[service.environment]]",
            ),
            "service[0].environment[0].backend.timeout",
        ),
    ];
    for (text, key) in cases {
        let problems = problems(&text);
        let problem = problem_at(&problems, key);
        assert_eq!(
            problem.message, "`300000y` is longer than shipmate allows: at most 366d",
            "{key}"
        );
    }
}

// ---- every problem at once, whatever the first one is (issue 11 #10) ----

#[test]
fn a_missing_server_table_does_not_hide_the_other_problems() {
    let text = r#"
[database]
url = "sqlite://shipmate.db"

[roles]
leads = ["api:lead"]

[[service]]
name = "api"
  [[service.environment]]
  name = "production"
  backend = { kind = "command", run = ["./deploy.sh"] }
  approvals = { required = 1, from = "nobody" }
"#;
    let problems = problems(text);
    assert!(problem_at(&problems, "server").message.contains("[server]"));
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("unknown role `nobody`")),
        "validation went on past the missing table: {problems:#?}"
    );
}

#[test]
fn values_of_the_wrong_type_are_all_reported_with_their_keys() {
    let text = with(
        r#"
[[window]]
name = 5
cron = "0 0 14 * * Tue"
duration = "2h"

[[service]]
name = "web"
  [[service.environment]]
  name = "production"
  backend = { kind = "command", run = ["./deploy.sh"] }
  approvals = { required = "two", from = "leads" }
"#,
    );
    let problems = problems(&text);
    assert!(problem_at(&problems, "window[0].name")
        .message
        .contains("expected a string"));
    assert!(
        problem_at(&problems, "service[0].environment.approvals.required")
            .message
            .contains("expected i64"),
        "{problems:#?}"
    );
    for problem in &problems {
        assert!(!problem.message.contains('\n'), "one line each: {problem}");
    }
}

// ---- the database password never shows (issue 11 #10) ----

#[test]
fn a_bad_database_url_is_reported_without_its_password() {
    let text = with("").replace(
        "sqlite://bot.db",
        "mysql://release:s3cretpw@db.internal:3306/shipmate",
    );
    let problems = problems(&text);
    let message = &problem_at(&problems, "database.url").message;
    assert!(!message.contains("s3cretpw"), "{message}");
    assert!(message.contains("release:***@db.internal"), "{message}");
}

#[tokio::test]
async fn a_database_that_cannot_be_opened_is_named_without_its_password() {
    let error = match shipmate::app::connect("mysql://release:s3cretpw@127.0.0.1:1/shipmate").await
    {
        Ok(_) => panic!("no MySQL driver is built in"),
        Err(error) => error.to_string(),
    };
    assert!(!error.contains("s3cretpw"), "{error}");
    assert!(
        error.contains("release:***@127.0.0.1:1/shipmate"),
        "{error}"
    );
}

#[test]
fn redaction_keeps_what_helps_and_hides_what_does_not() {
    assert_eq!(
        config::redacted_url("postgres://bob:pw@host:5432/db?sslmode=require"),
        "postgres://bob:***@host:5432/db?sslmode=require"
    );
    assert_eq!(
        config::redacted_url("postgres://bob@host/db"),
        "postgres://bob@host/db"
    );
    assert_eq!(
        config::redacted_url("not a url but maybe a password"),
        "(a value that is not a URL)"
    );
}

// ---- verify, on_failure and strategy (SPEC §5.1, §5.2) ----

/// A pipeline whose production verifies, rolls back and rolls out as a canary.
const ROLLOUT: &str = r#"
[[service]]
name = "api"
  [[service.environment]]
  name = "staging"
  backend = { kind = "command", run = ["./deploy.sh"] }
  [[service.environment]]
  name = "production"
  backend = { kind = "command", run = ["./deploy.sh"] }
  verify = [
    { kind = "http", url = "https://api.example.com/healthz", expect = 204, for = "2m", every = "10s" },
    { kind = "prometheus", url = "${PROM_URL}", query = 'sum(rate(errors{version="{version}"}[1m]))', max = 0.01, for = "5m", every = "30s" },
    { kind = "command", run = ["./smoke.sh"], timeout = "3m" },
  ]
  on_failure = "rollback"
  strategy = { kind = "canary", steps = [10, 50, 100], pause = "5m" }
"#;

#[test]
fn rollout_keys_become_checks_a_failure_handling_and_a_strategy() {
    use shipmate::domain::rollout::{OnFailure, Strategy};
    use shipmate::domain::verification::{CheckKind, CheckSpec};

    let text = format!("{MINIMAL}{ROLLOUT}");
    let env = env_of(&[("PROM_URL", "http://prometheus.monitoring:9090")]);
    let config = config::parse(&text, &base_dir(), &env).unwrap_or_else(|p| panic!("{p:#?}"));
    let api = config.service("api").expect("api");

    let staging = api.environment("staging").expect("staging");
    assert!(staging.verify.is_empty());
    assert_eq!(staging.on_failure, OnFailure::Fail);
    assert_eq!(staging.strategy, Strategy::Direct);

    let production = api.environment("production").expect("production");
    let minutes = |n: u64| Duration::from_secs(n * 60);
    assert_eq!(
        production.verify,
        [
            CheckSpec {
                name: "http check 1".to_string(),
                kind: CheckKind::Http {
                    url: "https://api.example.com/healthz".to_string(),
                    expect: 204,
                },
                duration: minutes(2),
                every: Duration::from_secs(10),
            },
            CheckSpec {
                name: "prometheus check 2".to_string(),
                kind: CheckKind::Prometheus {
                    url: "http://prometheus.monitoring:9090".to_string(),
                    query: r#"sum(rate(errors{version="{version}"}[1m]))"#.to_string(),
                    min: None,
                    max: Some(0.01),
                },
                duration: minutes(5),
                every: Duration::from_secs(30),
            },
            CheckSpec {
                name: "command check 3".to_string(),
                kind: CheckKind::Command {
                    run: vec!["./smoke.sh".to_string()],
                    timeout: minutes(3),
                },
                duration: minutes(3),
                every: minutes(3),
            },
        ]
    );
    assert_eq!(production.on_failure, OnFailure::Rollback);
    assert_eq!(
        production.strategy,
        Strategy::Canary {
            steps: vec![10, 50, 100],
            pause: minutes(5),
        }
    );
}

#[test]
fn every_rollout_problem_is_listed_at_once_with_its_key() {
    let broken = ROLLOUT
        .replace("expect = 204", "expect = 204, max = 1")
        .replace("${PROM_URL}", "prometheus:9090")
        .replace("max = 0.01, for", "min = 0.5, max = 0.01, for")
        .replace("{version}", "{release}")
        .replace(r#"run = ["./smoke.sh"], "#, "")
        .replace(r#""rollback""#, r#""revert""#)
        .replace("[10, 50, 100]", "[10, 50, 90]")
        .replace(r#"every = "10s""#, r#"every = "5m""#);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bot.toml");
    std::fs::write(&path, format!("{MINIMAL}{broken}")).unwrap();
    let error = config::load(&path, &no_env).unwrap_err();

    let at = "service[0].environment[1]";
    let mut keys: Vec<&str> = error
        .problems
        .iter()
        .map(|p| p.key.strip_prefix(at).unwrap_or(&p.key))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            ".on_failure",
            ".strategy.steps[2]",
            ".verify[0].every",
            ".verify[0].max",
            ".verify[1].min",
            ".verify[1].query",
            ".verify[1].url",
            ".verify[2].run",
        ],
        "{error}"
    );
    for (key, needles) in [
        (".on_failure", &["`revert`", "\"fail\"", "\"rollback\""][..]),
        (".strategy.steps[2]", &["last step is 90", "end at 100"]),
        (
            ".verify[0].every",
            &["5m is longer than for = 2m", "at most once"],
        ),
        (".verify[0].max", &["an http check has no `max`"]),
        (".verify[1].min", &["0.5 is above max 0.01"]),
        (".verify[1].query", &["`{release}`", "{previous_version}"]),
        (".verify[1].url", &["`prometheus:9090`", "http(s) URL"]),
        (".verify[2].run", &["missing", "run = [\"./smoke.sh\"]"]),
    ] {
        let problem = problem_at(&error.problems, &format!("{at}{key}"));
        for needle in needles {
            assert!(problem.message.contains(needle), "{problem}: `{needle}`");
        }
    }
}

// ---- remote backends ----

/// The minimal config with api production deploying through `backend`.
fn with_backend(backend: &str) -> String {
    with("").replacen(
        "name = \"production\"\n  backend = { kind = \"command\", run = [\"./deploy.sh\"] }",
        &format!("name = \"production\"\n  backend = {backend}"),
        1,
    )
}

fn production_backend(config: &Config) -> &BackendConfig {
    &config.services[0].environments[1].backend
}

const BACKEND_KEY: &str = "service[0].environment[1].backend";

#[test]
fn the_four_remote_backends_parse_with_their_defaults() {
    let env = env_of(&[
        ("HOOK_SECRET", "hook-secret-value"),
        ("GITHUB_TOKEN", "ghp_secretvalue"),
        ("ARGOCD_TOKEN", "argocd-secret-value"),
    ]);
    let parse_with = |backend: &str| {
        config::parse(&with_backend(backend), &base_dir(), &env)
            .unwrap_or_else(|p| panic!("{p:#?}"))
    };

    let config = parse_with(
        r#"{ kind = "webhook", url = "https://deployer.internal/hooks/{service}", secret = "${HOOK_SECRET}" }"#,
    );
    let BackendConfig::Webhook(hook) = production_backend(&config) else {
        panic!("not a webhook: {:?}", production_backend(&config));
    };
    assert_eq!(hook.url, "https://deployer.internal/hooks/{service}");
    assert_eq!(
        hook.secret.as_ref().map(|s| s.expose()),
        Some("hook-secret-value")
    );
    assert_eq!(hook.poll_every, Duration::from_secs(5));
    assert_eq!(hook.timeout, Duration::from_secs(30 * 60));
    assert!(!format!("{config:?}").contains("hook-secret-value"));

    let config = parse_with(
        r#"{ kind = "github_actions", repo = "acme/api", workflow = "deploy.yml", ref = "main", token = "${GITHUB_TOKEN}", inputs = { cluster = "eu-1" } }"#,
    );
    let BackendConfig::GithubActions(github) = production_backend(&config) else {
        panic!("not github_actions");
    };
    assert_eq!(
        (
            github.repo.as_str(),
            github.workflow.as_str(),
            github.git_ref.as_str()
        ),
        ("acme/api", "deploy.yml", "main")
    );
    assert_eq!(github.api_url, "https://api.github.com");
    assert_eq!(
        github.inputs.get("cluster").map(String::as_str),
        Some("eu-1")
    );
    assert_eq!(github.poll_every, Duration::from_secs(10));
    assert!(!format!("{config:?}").contains("ghp_secretvalue"));

    let config = parse_with(
        r#"{ kind = "kubernetes", namespace = "prod", deployment = "api", container = "api", image = "ghcr.io/acme/api:{version}", kubeconfig = "kube/prod.yaml", canary_deployment = "api-canary" }"#,
    );
    let BackendConfig::Kubernetes(kube) = production_backend(&config) else {
        panic!("not kubernetes");
    };
    assert_eq!(kube.kubeconfig, Some(base_dir().join("kube/prod.yaml")));
    assert_eq!(kube.canary_deployment.as_deref(), Some("api-canary"));
    assert_eq!(kube.timeout, Duration::from_secs(10 * 60));

    let config = parse_with(
        r#"{ kind = "argocd", url = "https://argocd.example.com/", app = "api-prod", token = "${ARGOCD_TOKEN}", image = "ghcr.io/acme/api:{version}" }"#,
    );
    let BackendConfig::Argocd(argocd) = production_backend(&config) else {
        panic!("not argocd");
    };
    assert_eq!(argocd.url, "https://argocd.example.com");
    assert_eq!(argocd.revision, None);
    assert_eq!(argocd.timeout, Duration::from_secs(15 * 60));
    assert!(!format!("{config:?}").contains("argocd-secret-value"));
}

#[test]
fn remote_backend_mistakes_are_named_by_key() {
    let cases = [
        (
            r#"{ kind = "webhook", url = "ftp://x/{service}", run = ["./x"] }"#,
            vec![("url", "is not an http(s) URL"), ("run", "a webhook backend has no `run`")],
        ),
        (
            r#"{ kind = "github_actions", repo = "acme", workflow = "deploy.yml", ref = "main" }"#,
            vec![("repo", "is not owner/name"), ("token", "missing: write token = \"${GITHUB_TOKEN}\"")],
        ),
        (
            r#"{ kind = "kubernetes", namespace = "prod", deployment = "api", container = "api", image = "ghcr.io/acme/api:latest", poll_every = "10ms" }"#,
            vec![("image", "put {version} in it"), ("poll_every", "is too often")],
        ),
        (
            r#"{ kind = "argocd", url = "https://argocd.example.com", app = "api-{release}", token = "t" }"#,
            vec![("app", "{release}")],
        ),
        (
            r#"{ kind = "helm", chart = "x" }"#,
            vec![("kind", "unknown kind `helm`; use one of \"command\", \"webhook\", \"github_actions\", \"kubernetes\", \"argocd\"")],
        ),
    ];
    for (backend, expected) in cases {
        let problems = problems(&with_backend(backend));
        for (key, message) in expected {
            let problem = problem_at(&problems, &format!("{BACKEND_KEY}.{key}"));
            assert!(problem.message.contains(message), "{backend}: {problem:?}");
        }
    }
}

#[test]
fn a_missing_backend_secret_names_its_variable_and_never_its_value() {
    let text = with_backend(
        r#"{ kind = "github_actions", repo = "acme/api", workflow = "deploy.yml", ref = "main", token = "${GITHUB_TOKEN}" }"#,
    );
    let problems = problems(&text);
    let problem = problem_at(&problems, &format!("{BACKEND_KEY}.token"));
    assert!(
        problem.message.contains("GITHUB_TOKEN is not set"),
        "{problem:?}"
    );
}

#[test]
fn the_web_table_defaults_to_token_access_and_30_day_links() {
    let config = parse(&with("")).expect("valid");
    assert_eq!(config.web.access, config::WebAccess::Token);
    assert_eq!(config.web.link_expiry, Duration::from_secs(30 * 86_400));
    assert!(config.web.link_key.is_none());

    let key = "k".repeat(40);
    let text = with("[web]\naccess = \"open\"\nlink_key = \"${LINK_KEY}\"\nlink_expiry = \"7d\"\n");
    let config = config::parse(&text, &base_dir(), &env_of(&[("LINK_KEY", &key)])).expect("valid");
    assert_eq!(config.web.access, config::WebAccess::Open);
    assert_eq!(config.web.link_expiry, Duration::from_secs(7 * 86_400));
    assert_eq!(
        config.web.link_key.as_ref().map(|k| k.expose()),
        Some(key.as_str())
    );
    assert!(
        config.secret_values().contains(&key.as_str()),
        "the link key is scrubbed from deploy output like other secrets"
    );
}

#[test]
fn web_table_problems_are_named() {
    let found = problems(&with(
        "[web]\naccess = \"public\"\nlink_key = \"short\"\nlink_expiry = \"soon\"\n",
    ));
    assert!(problem_at(&found, "web.access")
        .message
        .contains("\"token\""));
    assert!(problem_at(&found, "web.link_key")
        .message
        .contains("at least 32"));
    assert!(problem_at(&found, "web.link_expiry")
        .message
        .contains("soon"));
    assert_unknown_key(&with("[web]\ncolour = \"blue\"\n"), "colour");
}

// ---- governance: checklists and the hotfix path ----

#[test]
fn checklists_and_hotfix_paths_are_validated_with_their_keys() {
    let text = format!(
        "{MINIMAL}{}",
        r#"
[[service]]
name = "api"
  [[service.environment]]
  name = "staging"
  backend = { kind = "command", run = ["./deploy.sh"] }
  checklist = ["Smoke tested"]
  [[service.environment]]
  name = "production"
  backend = { kind = "command", run = ["./deploy.sh"] }
  approvals = { required = 1, from = "leads" }
  checklist = ["Changelog reviewed", "", "a checklist item far too long to fit on the one line a Slack checkbox shows!"]
  hotfix = { from = "oncall", required = 0 }
"#
    );
    let found = problems(&text);
    let message = |key: &str| problem_at(&found, key).message.clone();
    assert!(
        message("service[0].environment[0].checklist").contains("needs no approval"),
        "{found:#?}"
    );
    assert!(message("service[0].environment[1].checklist[1]").contains("1 to 75 characters"));
    assert!(message("service[0].environment[1].checklist[2]").contains("this one has 76"));
    assert!(message("service[0].environment[1].hotfix.from").contains("unknown role `oncall`"));
    assert!(
        message("service[0].environment[1].hotfix.required").contains("or remove `hotfix`"),
        "{found:#?}"
    );

    let good = text
        .replace("  checklist = [\"Smoke tested\"]\n", "")
        .replace(", \"\", \"a checklist item far too long to fit on the one line a Slack checkbox shows!\"", "")
        .replace("from = \"oncall\", required = 0", "from = \"leads\", required = 1, expires = \"2h\"");
    let config = parse(&good).expect("valid");
    let production = config.services[0].environment("production").expect("env");
    assert_eq!(production.checklist, ["Changelog reviewed"]);
    let hotfix = production.approval_policy(true).expect("hotfix path");
    assert_eq!((hotfix.required, hotfix.from_role.as_str()), (1, "leads"));
    assert_eq!(hotfix.expires, std::time::Duration::from_secs(7200));
    assert_eq!(
        production.approval_policy(false).map(|p| p.required),
        Some(1)
    );
}

#[test]
fn a_service_git_source_needs_a_path_and_a_tag_naming_the_version() {
    let service = |git: &str| {
        format!(
            "{MINIMAL}\n[[service]]\nname = \"api\"\ngit = {git}\n  [[service.environment]]\n  name = \"dev\"\n  backend = {{ kind = \"command\", run = [\"./deploy.sh\"] }}\n"
        )
    };
    let found = problems(&service(r#"{ path = " ", tag = "v{version}" }"#));
    assert!(
        problem_at(&found, "service[0].git.path")
            .message
            .contains("give the repository's directory"),
        "{found:#?}"
    );
    let found = problems(&service(r#"{ path = "repo", tag = "latest" }"#));
    assert!(
        problem_at(&found, "service[0].git.tag")
            .message
            .contains("`latest` does not contain {version}"),
        "{found:#?}"
    );
    let found = problems(&service(r#"{ path = "repo", branch = "main" }"#));
    assert!(
        found.iter().any(|p| p.message.contains("branch")),
        "unknown keys are refused: {found:#?}"
    );
}
