//! `bot.toml` → a typed, validated [`Config`]. Every problem is reported with its TOML key, all at
//! once, so one `check-config` run shows everything to fix.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::domain::approval::{ApprovalPolicy, DEFAULT_APPROVAL_TTL};
use crate::domain::command::{self, Command};
use crate::domain::duration::parse_duration;
use crate::domain::identity::{Identity, Roles, DEPLOYERS};
use crate::domain::rollout::{OnFailure, Strategy};
use crate::domain::verification::CheckSpec;
use crate::domain::window::{Freeze, FreezeSource, Window};

mod backend;
mod rollout;

pub use backend::{
    ArgocdConfig, BackendConfig, GithubActionsConfig, KubernetesConfig, WebhookConfig,
};

pub use rollout::PLACEHOLDERS;

/// A secret string: usable, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The directory of `bot.toml`: command backends run here and relative paths start here.
    pub base_dir: PathBuf,
    pub server: ServerConfig,
    pub database_url: String,
    pub slack: Option<SlackConfig>,
    pub discord: Option<DiscordConfig>,
    pub roles: Roles,
    pub api_tokens: Vec<ApiToken>,
    pub schedules: Vec<ScheduleConfig>,
    pub freezes: Vec<FreezeConfig>,
    pub windows: Vec<WindowConfig>,
    pub services: Vec<ServiceConfig>,
    pub web: WebConfig,
}

/// `[web]`: who may read the pages (SPEC §9) and how card links to them are signed.
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub access: WebAccess,
    /// The key of signed links and sign-in cookies; derived from the configured secrets when
    /// absent (see `engine::signing`).
    pub link_key: Option<Secret>,
    /// How long a card's signed link opens its page.
    pub link_expiry: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebAccess {
    /// Sign in with an API token (the default).
    Token,
    /// Read-only for anyone who can reach the server.
    Open,
}

/// Card links open their page for 30 days unless `[web] link_expiry` says otherwise.
pub const DEFAULT_LINK_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);
/// A link key shorter than this is guessable; 32 characters of random text is plenty.
const MIN_LINK_KEY: usize = 32;

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            access: WebAccess::Token,
            link_key: None,
            link_expiry: DEFAULT_LINK_EXPIRY,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    /// How long running deploys may finish after SIGTERM before they are left for `interrupted`.
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct SlackConfig {
    pub bot_token: Secret,
    pub signing_secret: Secret,
    pub app_token: Option<Secret>,
    pub api_url: String,
    pub approve_reactions: Vec<String>,
    pub reject_reactions: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct DiscordConfig {
    pub bot_token: Secret,
    pub application_id: u64,
    /// The application's ed25519 public key: enables `POST /discord/interactions`.
    pub public_key: Option<[u8; 32]>,
    pub guild_id: Option<u64>,
    pub api_url: String,
    pub approve_reactions: Vec<String>,
    pub reject_reactions: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ApiToken {
    pub name: String,
    pub sha256: [u8; 32],
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Channels {
    pub slack: Option<String>,
    pub discord: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub name: String,
    pub cron: cron::Schedule,
    pub timezone: Tz,
    pub command: Command,
    pub roles: Vec<String>,
    pub channels: Channels,
}

#[derive(Debug, Clone)]
pub struct FreezeConfig {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Environment names; `*` freezes all.
    pub environments: Vec<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone)]
pub struct WindowConfig {
    pub name: String,
    pub cron: cron::Schedule,
    pub duration: Duration,
    pub timezone: Tz,
    pub announce_before: Vec<Duration>,
    pub channels: Option<Channels>,
}

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    pub channels: Channels,
    pub environments: Vec<EnvironmentConfig>,
    /// `git = { path, tag }` (SPEC §10): where the bot reads a release's changes itself.
    pub git: Option<GitSource>,
}

/// A service's repository on this machine and how its release tags are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    pub path: PathBuf,
    /// The tag of a version, `{version}` standing for it: `v{version}` by default.
    pub tag: String,
}

impl GitSource {
    pub const VERSION: &'static str = "{version}";

    pub fn tag_of(&self, version: &crate::domain::version::Version) -> String {
        self.tag.replace(Self::VERSION, &version.to_string())
    }

    /// The tags of every version, for `git describe --match`.
    pub fn tag_glob(&self) -> String {
        self.tag.replace(Self::VERSION, "*")
    }
}

#[derive(Debug, Clone)]
pub struct EnvironmentConfig {
    pub name: String,
    pub backend: BackendConfig,
    pub approvals: Option<ApprovalPolicy>,
    pub windows: Vec<String>,
    /// `verify = [ … ]` (SPEC §5.1), in the order written.
    pub verify: Vec<CheckSpec>,
    pub on_failure: OnFailure,
    pub strategy: Strategy,
    /// `checklist = [ … ]` (SPEC §10): items to tick before anyone may approve.
    pub checklist: Vec<String>,
    /// `hotfix = { from, required }` (SPEC §10): the approvals a `--hotfix` promotion needs
    /// instead; it may start outside windows, never in a freeze.
    pub hotfix: Option<ApprovalPolicy>,
}

impl EnvironmentConfig {
    /// The rollout plan of a promotion into this environment (a rollback's is one call).
    pub fn plan(&self, rollback: bool) -> crate::domain::rollout::Plan {
        crate::domain::rollout::Plan::new(&self.strategy, !self.verify.is_empty(), rollback)
    }

    /// The approval policy a promotion answers to: the hotfix path's for a hotfix.
    pub fn approval_policy(&self, hotfix: bool) -> Option<&ApprovalPolicy> {
        if hotfix {
            self.hotfix.as_ref()
        } else {
            self.approvals.as_ref()
        }
    }
}

impl Config {
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Every secret value the configuration holds (chat tokens, backend secrets and tokens), so
    /// that text from elsewhere (a deploy's output, a server's error) can be cleaned of them.
    pub fn secret_values(&self) -> Vec<&str> {
        let mut secrets = Vec::new();
        if let Some(slack) = &self.slack {
            secrets.extend([&slack.bot_token, &slack.signing_secret]);
            secrets.extend(slack.app_token.iter());
        }
        if let Some(discord) = &self.discord {
            secrets.push(&discord.bot_token);
        }
        secrets.extend(self.web.link_key.iter());
        for env in self.services.iter().flat_map(|s| &s.environments) {
            match &env.backend {
                BackendConfig::Webhook(hook) => secrets.extend(hook.secret.iter()),
                BackendConfig::GithubActions(github) => secrets.push(&github.token),
                BackendConfig::Argocd(argocd) => secrets.push(&argocd.token),
                BackendConfig::Command { .. } | BackendConfig::Kubernetes(_) => {}
            }
        }
        secrets
            .into_iter()
            .map(Secret::expose)
            .filter(|value| !value.is_empty())
            .collect()
    }

    pub fn service_names(&self) -> Vec<&str> {
        self.services.iter().map(|s| s.name.as_str()).collect()
    }
}

impl ServiceConfig {
    pub fn environment(&self, name: &str) -> Option<&EnvironmentConfig> {
        self.environments.iter().find(|e| e.name == name)
    }

    pub fn pipeline(&self) -> Vec<String> {
        self.environments.iter().map(|e| e.name.clone()).collect()
    }
}

/// A database URL fit to show: its password replaced by `***`. Text that does not parse as a URL
/// is not shown at all (it may be a password pasted in the wrong place).
pub fn redacted_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Only URLs that cannot have a password refuse one; this one has one.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "(a value that is not a URL)".to_string(),
    }
}

/// One thing wrong in `bot.toml`, with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        writeln!(f, "{} has {count} {noun}:", self.path.display())?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

/// Reads and validates `bot.toml`, taking `${VAR}` values from `env`.
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let fail = |key: &str, message: String| ConfigError {
        path: path.to_path_buf(),
        problems: vec![Problem {
            key: key.to_string(),
            message,
        }],
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(
            "(file)",
            format!("can't read it: {e}; pass the right file with --config"),
        )
    })?;
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse(&text, &base_dir, env).map_err(|problems| ConfigError {
        path: path.to_path_buf(),
        problems,
    })
}

/// Validates config text. `base_dir` anchors relative paths.
pub fn parse(
    text: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<Problem>> {
    let whole_file = |e: toml::de::Error| Problem {
        key: "bot.toml".to_string(),
        message: e.to_string().trim_end().to_string(),
    };
    // The typed pass first: serde's errors carry line, column and the offending key. It stops at
    // the first error, so on one the file is checked again table by table to report them all.
    let typed = toml::from_str::<RawConfig>(text).map_err(whole_file);
    let mut value: toml::Value = toml::from_str(text).map_err(|e| vec![whole_file(e)])?;
    let mut problems = Vec::new();
    substitute_env(&mut value, String::new(), env, &mut problems);
    let raw = match typed {
        Ok(_) => value.try_into().map_err(|e| vec![whole_file(e)])?,
        Err(first) => match sections::raw_config(&value, &mut problems) {
            Some(raw) => raw,
            None if problems.is_empty() => return Err(vec![first]),
            None => return Err(problems),
        },
    };
    let unset = problems.len();
    let config = Validator {
        problems: &mut problems,
    }
    .config(raw, base_dir);
    // A value with a missing variable is already reported; its follow-up ("`` is not an
    // address") would only mislead.
    let (missing, validated) = problems.split_at(unset);
    let covered = |key: &str| {
        missing
            .iter()
            .any(|m| m.key == key || m.key.starts_with(&format!("{key}[")))
    };
    let validated: Vec<Problem> = validated
        .iter()
        .filter(|p| !covered(&p.key))
        .cloned()
        .collect();
    problems.truncate(unset);
    problems.extend(validated);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

/// Replaces `${NAME}` in every string with the variable's value; a missing one is a problem.
fn substitute_env(
    value: &mut toml::Value,
    key: String,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    match value {
        toml::Value::String(text) => {
            let mut out = String::new();
            let mut rest = text.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else {
                    out.push_str(&rest[start..]);
                    rest = "";
                    break;
                };
                let name = &after[..end];
                match env(name) {
                    Some(found) => out.push_str(&found),
                    None => problems.push(Problem {
                        key: key.clone(),
                        message: format!(
                            "environment variable {name} is not set; set it in the bot's environment (secrets never live in bot.toml)"
                        ),
                    }),
                }
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *text = out;
        }
        toml::Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                substitute_env(item, format!("{key}[{index}]"), env, problems);
            }
        }
        toml::Value::Table(table) => {
            for (name, item) in table.iter_mut() {
                let child = if key.is_empty() {
                    name.clone()
                } else {
                    format!("{key}.{name}")
                };
                substitute_env(item, child, env, problems);
            }
        }
        _ => {}
    }
}

// ---- raw shape (serde) ----

/// The raw shape read table by table, so that one wrong table or array entry does not hide the
/// problems of the others.
mod sections {
    use serde::de::DeserializeOwned;

    use super::{Problem, RawConfig, RawDatabase, RawServer};

    const TABLES: [&str; 11] = [
        "server",
        "database",
        "slack",
        "discord",
        "roles",
        "api_tokens",
        "schedule",
        "freeze",
        "window",
        "service",
        "web",
    ];

    /// Every structural problem of `value`; the raw config when the only ones are missing
    /// required tables (validation then goes on with stand-ins, to report the rest).
    pub(super) fn raw_config(
        value: &toml::Value,
        problems: &mut Vec<Problem>,
    ) -> Option<RawConfig> {
        let Some(table) = value.as_table() else {
            problems.push(problem("bot.toml", "is not a table of settings".into()));
            return None;
        };
        let before = problems.len();
        for key in table.keys().filter(|k| !TABLES.contains(&k.as_str())) {
            problems.push(problem(
                key,
                format!(
                    "unknown field `{key}`; bot.toml's tables are {}",
                    TABLES.join(", ")
                ),
            ));
        }
        let mut missing = 0;
        let mut required = |name: &str, example: &str, problems: &mut Vec<Problem>| {
            if !table.contains_key(name) {
                missing += 1;
                problems.push(problem(
                    name,
                    format!("the [{name}] table is missing; add it, e.g. [{name}] {example}"),
                ));
            }
        };
        required("server", "listen = \"127.0.0.1:8080\"", problems);
        required("database", "url = \"sqlite://shipmate.db\"", problems);
        let raw = RawConfig {
            server: table_of(table, "server", problems).unwrap_or_else(|| RawServer {
                listen: "127.0.0.1:8080".into(),
                public_url: None,
                shutdown_grace: None,
            }),
            database: table_of(table, "database", problems).unwrap_or_else(|| RawDatabase {
                url: "sqlite://shipmate.db".into(),
            }),
            slack: table_of(table, "slack", problems),
            discord: table_of(table, "discord", problems),
            roles: table_of(table, "roles", problems).unwrap_or_default(),
            api_tokens: entries_of(table, "api_tokens", problems),
            schedule: entries_of(table, "schedule", problems),
            freeze: entries_of(table, "freeze", problems),
            window: entries_of(table, "window", problems),
            service: entries_of(table, "service", problems),
            web: table_of(table, "web", problems),
        };
        (problems.len() - before == missing).then_some(raw)
    }

    fn problem(key: &str, message: String) -> Problem {
        Problem {
            key: key.to_string(),
            message,
        }
    }

    fn read<T: DeserializeOwned>(
        value: &toml::Value,
        key: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<T> {
        match value.clone().try_into() {
            Ok(parsed) => Some(parsed),
            Err(e) => {
                // toml names the field on a line of its own ("…\nin `approvals.required`"):
                // it belongs in the key.
                let text = e.to_string();
                let (message, field) = match text.trim_end().rsplit_once("\nin `") {
                    Some((message, field)) => (message, field.trim_end_matches('`')),
                    None => (text.trim_end(), ""),
                };
                let key = match field {
                    "" => key.to_string(),
                    field => format!("{key}.{field}"),
                };
                problems.push(problem(&key, message.replace('\n', " ")));
                None
            }
        }
    }

    fn table_of<T: DeserializeOwned>(
        table: &toml::Table,
        key: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<T> {
        read(table.get(key)?, key, problems)
    }

    /// An array of tables read entry by entry (`service[1]`).
    fn entries_of<T: DeserializeOwned>(
        table: &toml::Table,
        key: &str,
        problems: &mut Vec<Problem>,
    ) -> Vec<T> {
        let Some(value) = table.get(key) else {
            return Vec::new();
        };
        let Some(entries) = value.as_array() else {
            problems.push(problem(
                key,
                format!("must be an array of tables, written [[{key}]]"),
            ));
            return Vec::new();
        };
        entries
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| read(entry, &format!("{key}[{index}]"), problems))
            .collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    database: RawDatabase,
    slack: Option<RawSlack>,
    discord: Option<RawDiscord>,
    #[serde(default)]
    roles: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    api_tokens: Vec<RawApiToken>,
    #[serde(default)]
    schedule: Vec<RawSchedule>,
    #[serde(default)]
    freeze: Vec<RawFreeze>,
    #[serde(default)]
    window: Vec<RawWindow>,
    #[serde(default)]
    service: Vec<RawService>,
    web: Option<RawWeb>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    access: Option<String>,
    link_key: Option<String>,
    link_expiry: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    public_url: Option<String>,
    shutdown_grace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlack {
    bot_token: String,
    signing_secret: String,
    app_token: Option<String>,
    api_url: Option<String>,
    approve_reactions: Option<Vec<String>>,
    reject_reactions: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscord {
    bot_token: String,
    application_id: String,
    public_key: Option<String>,
    guild_id: Option<String>,
    api_url: Option<String>,
    approve_reactions: Option<Vec<String>>,
    reject_reactions: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiToken {
    name: String,
    sha256: Option<String>,
    token: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    name: String,
    cron: String,
    timezone: Option<String>,
    command: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    channels: Channels,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFreeze {
    start: String,
    end: String,
    environments: Vec<String>,
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    name: String,
    cron: String,
    duration: String,
    timezone: Option<String>,
    #[serde(default)]
    announce_before: Vec<String>,
    channels: Option<Channels>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    #[serde(default)]
    channels: Channels,
    #[serde(default)]
    environment: Vec<RawEnvironment>,
    git: Option<RawGit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGit {
    path: String,
    tag: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    name: String,
    backend: toml::Value,
    approvals: Option<RawApprovals>,
    #[serde(default)]
    windows: Vec<String>,
    // The rollout keys are read by `rollout` from their TOML values, so that a wrong one is
    // reported under its exact key without hiding the service's other problems.
    verify: Option<toml::Value>,
    on_failure: Option<toml::Value>,
    strategy: Option<toml::Value>,
    #[serde(default)]
    checklist: Vec<String>,
    hotfix: Option<RawHotfix>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHotfix {
    from: String,
    required: i64,
    expires: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApprovals {
    required: i64,
    from: String,
    #[serde(default)]
    self_approval: bool,
    expires: Option<String>,
    /// Approvals a major release needs instead.
    major: Option<i64>,
}

// ---- validation ----

/// Slack's checkboxes element holds ten options of at most 75 characters.
const MAX_CHECKLIST_ITEMS: usize = 10;
const MAX_CHECKLIST_ITEM_CHARS: usize = 75;
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const SLACK_APPROVE: [&str; 3] = ["white_check_mark", "heavy_check_mark", "+1"];
const SLACK_REJECT: [&str; 2] = ["x", "no_entry"];
const DISCORD_APPROVE: [&str; 3] = ["✅", "✔️", "👍"];
const DISCORD_REJECT: [&str; 2] = ["❌", "⛔"];

struct Validator<'p> {
    problems: &'p mut Vec<Problem>,
}

impl Validator<'_> {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// Runs `parse`, recording its error under `key`; `None` when it failed.
    fn check<T, E: fmt::Display>(&mut self, key: &str, parsed: Result<T, E>) -> Option<T> {
        parsed.map_err(|e| self.problem(key, e.to_string())).ok()
    }

    fn duration(&mut self, key: &str, text: Option<&str>, default: Duration) -> Duration {
        match text {
            None => default,
            Some(text) => self.check(key, parse_duration(text)).unwrap_or(default),
        }
    }

    fn timezone(&mut self, key: &str, text: Option<&str>) -> Tz {
        let text = text.unwrap_or("UTC");
        let parsed = Tz::from_str(text).map_err(|_| {
            format!("`{text}` is not a time zone; use an IANA name such as Europe/Berlin or UTC")
        });
        self.check(key, parsed).unwrap_or(Tz::UTC)
    }

    fn cron(&mut self, key: &str, text: &str) -> Option<cron::Schedule> {
        let parsed = cron::Schedule::from_str(text).map_err(|e| {
            // The cron crate's error repeats the input with a caret line; keep its last line so
            // each problem stays on one line.
            let e = e.to_string();
            let e = e.lines().last().unwrap_or_default().trim().trim_end_matches('.');
            format!("`{text}` is not a cron schedule ({e}); write seconds first, e.g. \"0 0 14 * * Tue,Thu\"")
        });
        self.check(key, parsed)
    }

    fn unique(&mut self, key: &str, seen: &mut BTreeSet<String>, name: &str) {
        if name.trim().is_empty() {
            self.problem(key, "must not be empty");
        } else if !seen.insert(name.to_string()) {
            self.problem(key, format!("`{name}` is used twice; names must be unique"));
        }
    }

    fn known_roles(&mut self, key: &str, roles: &Roles, names: &[String]) {
        for (index, name) in names.iter().enumerate() {
            self.known_role(&format!("{key}[{index}]"), roles, name);
        }
    }

    fn known_role(&mut self, key: &str, roles: &Roles, name: &str) {
        if !roles.is_defined(name) {
            let known: Vec<&str> = roles.names().collect();
            self.problem(
                key,
                format!(
                    "unknown role `{name}`; define it under [roles] or use one of: {}",
                    known.join(", ")
                ),
            );
        }
    }

    fn config(&mut self, raw: RawConfig, base_dir: &Path) -> Config {
        let roles = self.roles(&raw.roles);
        let services = self.services(raw.service, &roles, &raw.window, base_dir);
        let environments: BTreeSet<String> = services
            .iter()
            .flat_map(|s| s.environments.iter().map(|e| e.name.clone()))
            .collect();
        Config {
            base_dir: base_dir.to_path_buf(),
            server: self.server(raw.server),
            database_url: self.database_url(&raw.database.url, base_dir),
            slack: raw.slack.map(|slack| self.slack(slack)),
            discord: raw.discord.map(|discord| self.discord(discord)),
            api_tokens: self.api_tokens(raw.api_tokens, &roles),
            schedules: self.schedules(raw.schedule, &roles),
            freezes: self.freezes(raw.freeze, &environments),
            windows: self.windows(raw.window),
            web: raw.web.map(|web| self.web(web)).unwrap_or_default(),
            services,
            roles,
        }
    }

    fn web(&mut self, raw: RawWeb) -> WebConfig {
        let access = match raw.access.as_deref() {
            None | Some("token") => WebAccess::Token,
            Some("open") => WebAccess::Open,
            Some(other) => {
                self.problem(
                    "web.access",
                    format!("`{other}` is not an access mode; use \"token\" (sign in with an API token) or \"open\" (read-only for anyone)"),
                );
                WebAccess::Token
            }
        };
        if let Some(key) = &raw.link_key {
            if key.chars().count() < MIN_LINK_KEY {
                self.problem(
                    "web.link_key",
                    format!("is {} characters long; use at least {MIN_LINK_KEY} random characters, e.g. from `openssl rand -hex 32`, through ${{ENV_NAME}}", key.chars().count()),
                );
            }
        }
        let link_expiry = self.duration(
            "web.link_expiry",
            raw.link_expiry.as_deref(),
            DEFAULT_LINK_EXPIRY,
        );
        if link_expiry.is_zero() {
            self.problem("web.link_expiry", "must be longer than 0s, e.g. \"30d\"");
        }
        WebConfig {
            access,
            link_key: raw.link_key.map(Secret::new),
            link_expiry,
        }
    }

    fn server(&mut self, raw: RawServer) -> ServerConfig {
        let listen = self
            .check(
                "server.listen",
                raw.listen.parse::<SocketAddr>().map_err(|_| {
                    format!(
                        "`{}` is not an address; write host:port, e.g. 127.0.0.1:8080",
                        raw.listen
                    )
                }),
            )
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        if let Some(url) = &raw.public_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                self.problem(
                    "server.public_url",
                    format!("`{url}` is not a URL; write it like https://bot.example.com"),
                );
            }
        }
        ServerConfig {
            listen,
            public_url: raw.public_url.map(|u| u.trim_end_matches('/').to_string()),
            shutdown_grace: self.duration(
                "server.shutdown_grace",
                raw.shutdown_grace.as_deref(),
                DEFAULT_SHUTDOWN_GRACE,
            ),
        }
    }

    /// SQLite paths are relative to bot.toml, so the bot finds its database from any directory.
    fn database_url(&mut self, url: &str, base_dir: &Path) -> String {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let (file, query) = path.split_once('?').unwrap_or((path, ""));
            if file.is_empty() {
                self.problem(
                    "database.url",
                    "names no file; write it like sqlite://shipmate.db",
                );
                return url.to_string();
            }
            if file.contains(":memory:") || file.starts_with("file:") {
                self.problem(
                    "database.url",
                    "an in-memory database would lose every promotion and audit event on restart; name a file, e.g. sqlite://shipmate.db",
                );
                return url.to_string();
            }
            let full = if Path::new(file).is_absolute() {
                PathBuf::from(file)
            } else {
                base_dir.join(file)
            };
            let query = if query.is_empty() {
                String::new()
            } else {
                format!("?{query}")
            };
            return format!("sqlite://{}{query}", full.display());
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            self.problem(
                "database.url",
                format!(
                    "`{}` is not a database URL; use sqlite://shipmate.db or postgres://user@host/db",
                    redacted_url(url)
                ),
            );
        }
        url.to_string()
    }

    fn slack(&mut self, raw: RawSlack) -> SlackConfig {
        SlackConfig {
            bot_token: Secret::new(raw.bot_token),
            signing_secret: Secret::new(raw.signing_secret),
            app_token: raw.app_token.map(Secret::new),
            api_url: raw
                .api_url
                .unwrap_or_else(|| "https://slack.com/api".to_string())
                .trim_end_matches('/')
                .to_string(),
            approve_reactions: reactions(raw.approve_reactions, &SLACK_APPROVE),
            reject_reactions: reactions(raw.reject_reactions, &SLACK_REJECT),
        }
    }

    fn discord(&mut self, raw: RawDiscord) -> DiscordConfig {
        let application_id = self.snowflake("discord.application_id", &raw.application_id);
        let guild_id = raw
            .guild_id
            .as_deref()
            .map(|id| self.snowflake("discord.guild_id", id));
        DiscordConfig {
            bot_token: Secret::new(raw.bot_token),
            application_id,
            public_key: raw
                .public_key
                .as_deref()
                .and_then(|key| self.public_key("discord.public_key", key)),
            guild_id,
            api_url: raw
                .api_url
                .unwrap_or_else(|| "https://discord.com".to_string())
                .trim_end_matches('/')
                .to_string(),
            approve_reactions: reactions(raw.approve_reactions, &DISCORD_APPROVE),
            reject_reactions: reactions(raw.reject_reactions, &DISCORD_REJECT),
        }
    }

    fn public_key(&mut self, key: &str, text: &str) -> Option<[u8; 32]> {
        let parsed = hex::decode(text.trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| {
                "not an ed25519 public key: paste the 64 hex characters of PUBLIC KEY from the Discord developer portal (General Information)".to_string()
            });
        self.check(key, parsed)
    }

    fn snowflake(&mut self, key: &str, text: &str) -> u64 {
        let parsed = text
            .parse::<std::num::NonZeroU64>()
            .map(u64::from)
            .map_err(|_| {
                format!(
                    "`{text}` is not a Discord id; copy the numeric id (Developer Mode → Copy ID)"
                )
            });
        self.check(key, parsed).unwrap_or(0)
    }

    fn roles(&mut self, raw: &BTreeMap<String, Vec<String>>) -> Roles {
        for (role, members) in raw {
            for (index, member) in members.iter().enumerate() {
                if member != "*" && Identity::parse(member).is_none() {
                    self.problem(
                        format!("roles.{role}[{index}]"),
                        format!("`{member}` is not an identity; write slack:<user id>, slack-group:<usergroup id>, discord:<user id>, discord-role:<role id>, api:<token name>, schedule:<name> or \"*\""),
                    );
                }
            }
        }
        if !raw.contains_key(DEPLOYERS) {
            self.problem(
                "roles.deployers",
                "missing: name who may promote, e.g. deployers = [\"*\"] for anyone",
            );
        }
        Roles::new(raw.clone())
    }

    fn api_tokens(&mut self, raw: Vec<RawApiToken>, roles: &Roles) -> Vec<ApiToken> {
        let mut seen = BTreeSet::new();
        let mut tokens = Vec::new();
        for (index, token) in raw.into_iter().enumerate() {
            let key = format!("api_tokens[{index}]");
            self.unique(&format!("{key}.name"), &mut seen, &token.name);
            self.known_roles(&format!("{key}.roles"), roles, &token.roles);
            let digest = match (&token.sha256, &token.token) {
                (Some(hex_digest), None) => {
                    self.check(&format!("{key}.sha256"), parse_sha256(hex_digest))
                }
                (None, Some(plain)) if !plain.is_empty() => {
                    Some(Sha256::digest(plain.as_bytes()).into())
                }
                (None, Some(_)) => {
                    self.problem(format!("{key}.token"), "is empty; set a long random token");
                    None
                }
                _ => {
                    self.problem(
                        key.clone(),
                        "give exactly one of sha256 = \"<hex digest of the token>\" or token = \"${ENV_VAR}\"",
                    );
                    None
                }
            };
            if let Some(sha256) = digest {
                tokens.push(ApiToken {
                    name: token.name,
                    sha256,
                    roles: token.roles,
                });
            }
        }
        tokens
    }

    fn schedules(&mut self, raw: Vec<RawSchedule>, roles: &Roles) -> Vec<ScheduleConfig> {
        let mut seen = BTreeSet::new();
        let mut schedules = Vec::new();
        for (index, schedule) in raw.into_iter().enumerate() {
            let key = format!("schedule[{index}]");
            self.unique(&format!("{key}.name"), &mut seen, &schedule.name);
            self.known_roles(&format!("{key}.roles"), roles, &schedule.roles);
            let timezone = self.timezone(&format!("{key}.timezone"), schedule.timezone.as_deref());
            let cron = self.cron(&format!("{key}.cron"), &schedule.cron);
            let command = self.check(
                &format!("{key}.command"),
                command::parse(&schedule.command).map_err(|e| e.to_string().replace('\n', " ")),
            );
            if let (Some(cron), Some(command)) = (cron, command) {
                schedules.push(ScheduleConfig {
                    name: schedule.name,
                    cron,
                    timezone,
                    command,
                    roles: schedule.roles,
                    channels: schedule.channels,
                });
            }
        }
        schedules
    }

    fn freezes(
        &mut self,
        raw: Vec<RawFreeze>,
        environments: &BTreeSet<String>,
    ) -> Vec<FreezeConfig> {
        let mut freezes = Vec::new();
        for (index, freeze) in raw.into_iter().enumerate() {
            let key = format!("freeze[{index}]");
            let start = self.timestamp(&format!("{key}.start"), &freeze.start);
            let end = self.timestamp(&format!("{key}.end"), &freeze.end);
            for (i, env) in freeze.environments.iter().enumerate() {
                if env != "*" && !environments.contains(env) {
                    self.problem(
                        format!("{key}.environments[{i}]"),
                        format!(
                            "no service has an environment `{env}`; use one of {} or \"*\"",
                            join(environments)
                        ),
                    );
                }
            }
            if freeze.environments.is_empty() {
                self.problem(
                    format!("{key}.environments"),
                    "is empty; list environments or \"*\"",
                );
            }
            match (start, end) {
                (Some(start), Some(end)) if end > start => freezes.push(FreezeConfig {
                    start,
                    end,
                    environments: freeze.environments,
                    reason: freeze.reason,
                }),
                (Some(_), Some(_)) => self.problem(format!("{key}.end"), "must be after start"),
                _ => {}
            }
        }
        freezes
    }

    fn timestamp(&mut self, key: &str, text: &str) -> Option<DateTime<Utc>> {
        let parsed = DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                format!("`{text}` is not a time; write RFC 3339, e.g. 2026-12-23T00:00:00+01:00")
            });
        self.check(key, parsed)
    }

    fn windows(&mut self, raw: Vec<RawWindow>) -> Vec<WindowConfig> {
        let mut seen = BTreeSet::new();
        let mut windows = Vec::new();
        for (index, window) in raw.into_iter().enumerate() {
            let key = format!("window[{index}]");
            self.unique(&format!("{key}.name"), &mut seen, &window.name);
            let cron = self.cron(&format!("{key}.cron"), &window.cron);
            let duration = self.check(&format!("{key}.duration"), parse_duration(&window.duration));
            let timezone = self.timezone(&format!("{key}.timezone"), window.timezone.as_deref());
            let announce_before = window
                .announce_before
                .iter()
                .enumerate()
                .filter_map(|(i, text)| {
                    self.check(&format!("{key}.announce_before[{i}]"), parse_duration(text))
                })
                .collect();
            if let (Some(cron), Some(duration)) = (cron, duration) {
                windows.push(WindowConfig {
                    name: window.name,
                    cron,
                    duration,
                    timezone,
                    announce_before,
                    channels: window.channels,
                });
            }
        }
        windows
    }

    fn services(
        &mut self,
        raw: Vec<RawService>,
        roles: &Roles,
        windows: &[RawWindow],
        base_dir: &Path,
    ) -> Vec<ServiceConfig> {
        if raw.is_empty() {
            self.problem(
                "service",
                "no services: add a [[service]] with its [[service.environment]] pipeline",
            );
        }
        let mut seen = BTreeSet::new();
        raw.into_iter()
            .enumerate()
            .map(|(index, service)| {
                let key = format!("service[{index}]");
                self.unique(&format!("{key}.name"), &mut seen, &service.name);
                if service.environment.is_empty() {
                    self.problem(
                        format!("{key}.environment"),
                        format!("{} has an empty pipeline: add [[service.environment]] tables, e.g. staging then production", service.name),
                    );
                }
                let mut env_names = BTreeSet::new();
                let environments = service
                    .environment
                    .into_iter()
                    .enumerate()
                    .map(|(i, env)| {
                        let key = format!("{key}.environment[{i}]");
                        self.unique(&format!("{key}.name"), &mut env_names, &env.name);
                        self.environment(&key, env, roles, windows, base_dir)
                    })
                    .collect();
                let git = service
                    .git
                    .and_then(|git| self.git(&format!("{key}.git"), git, base_dir));
                ServiceConfig {
                    name: service.name,
                    channels: service.channels,
                    environments,
                    git,
                }
            })
            .collect()
    }

    fn git(&mut self, key: &str, raw: RawGit, base_dir: &Path) -> Option<GitSource> {
        let tag = raw
            .tag
            .unwrap_or_else(|| format!("v{}", GitSource::VERSION));
        if raw.path.trim().is_empty() {
            self.problem(
                format!("{key}.path"),
                "is empty: give the repository's directory, e.g. path = \"/srv/api.git\"",
            );
            return None;
        }
        if !tag.contains(GitSource::VERSION) {
            self.problem(
                format!("{key}.tag"),
                format!("`{tag}` does not contain {{version}}: name the tags, e.g. tag = \"v{{version}}\""),
            );
            return None;
        }
        Some(GitSource {
            path: base_dir.join(raw.path),
            tag,
        })
    }

    fn environment(
        &mut self,
        key: &str,
        raw: RawEnvironment,
        roles: &Roles,
        windows: &[RawWindow],
        base_dir: &Path,
    ) -> EnvironmentConfig {
        for (i, window) in raw.windows.iter().enumerate() {
            if !windows.iter().any(|w| &w.name == window) {
                let known: Vec<&str> = windows.iter().map(|w| w.name.as_str()).collect();
                self.problem(
                    format!("{key}.windows[{i}]"),
                    format!("unknown window `{window}`; define it with [[window]] name = \"{window}\" (known: {})", if known.is_empty() { "none".to_string() } else { known.join(", ") }),
                );
            }
        }
        let has_approvals = raw.approvals.is_some();
        EnvironmentConfig {
            backend: self.backend(&format!("{key}.backend"), &raw.backend, base_dir),
            approvals: raw
                .approvals
                .map(|approvals| self.approvals(&format!("{key}.approvals"), approvals, roles)),
            verify: self.checks(&format!("{key}.verify"), raw.verify.as_ref()),
            on_failure: self.on_failure(&format!("{key}.on_failure"), raw.on_failure.as_ref()),
            strategy: self.strategy(&format!("{key}.strategy"), raw.strategy.as_ref()),
            checklist: self.checklist(key, raw.checklist, has_approvals),
            hotfix: raw
                .hotfix
                .map(|hotfix| self.hotfix(&format!("{key}.hotfix"), hotfix, roles)),
            windows: raw.windows,
            name: raw.name,
        }
    }

    /// A checklist gates approvals, so it needs them; each item must fit a Slack checkbox and a
    /// Discord button, and the card can hold ten.
    fn checklist(&mut self, key: &str, items: Vec<String>, has_approvals: bool) -> Vec<String> {
        let key = format!("{key}.checklist");
        if !items.is_empty() && !has_approvals {
            self.problem(
                key.clone(),
                "a checklist must be ticked before approving, but this environment needs no approval; add approvals = { required = 1, from = \"leads\" } or remove `checklist`",
            );
        }
        if items.len() > MAX_CHECKLIST_ITEMS {
            self.problem(
                key.clone(),
                format!(
                    "{} items; a card shows at most {MAX_CHECKLIST_ITEMS}: merge some",
                    items.len()
                ),
            );
        }
        for (i, item) in items.iter().enumerate() {
            let length = item.trim().chars().count();
            if length == 0 || length > MAX_CHECKLIST_ITEM_CHARS {
                self.problem(
                    format!("{key}[{i}]"),
                    format!("an item needs 1 to {MAX_CHECKLIST_ITEM_CHARS} characters (Slack shows no more on a checkbox); this one has {length}"),
                );
            }
        }
        items
            .into_iter()
            .map(|item| item.trim().to_string())
            .collect()
    }

    /// `hotfix = { from, required, expires }`: an approval policy of its own.
    fn hotfix(&mut self, key: &str, raw: RawHotfix, roles: &Roles) -> ApprovalPolicy {
        self.approvals(
            key,
            RawApprovals {
                required: raw.required,
                from: raw.from,
                self_approval: false,
                expires: raw.expires,
                major: None,
            },
            roles,
        )
    }

    /// One entry of a backend's `env` table: a name a shell can use, not one of the bot's own
    /// `SHIPMATE_*` variables, and a value the OS can carry.
    pub(super) fn script_variable(&mut self, key: &str, name: &str, value: &str) {
        let valid = name
            .chars()
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            self.problem(
                key.to_string(),
                format!("`{name}` is not a valid environment variable name; use letters, digits and `_`, not starting with a digit"),
            );
        } else if name.to_ascii_uppercase().starts_with("SHIPMATE_") {
            self.problem(
                key.to_string(),
                format!("`{name}` would override the bot's own SHIPMATE_* variables; choose another name"),
            );
        }
        if value.contains('\0') {
            self.problem(
                key.to_string(),
                "contains a NUL character, which no environment variable can carry",
            );
        }
    }

    fn approvals(&mut self, key: &str, raw: RawApprovals, roles: &Roles) -> ApprovalPolicy {
        self.known_role(&format!("{key}.from"), roles, &raw.from);
        let required = u32::try_from(raw.required).ok().filter(|n| *n >= 1);
        if required.is_none() {
            self.problem(
                format!("{key}.required"),
                format!(
                    "{} approvals can't be required; use 1 or more, or remove `{}`",
                    raw.required,
                    key.rsplit('.').next().unwrap_or("approvals")
                ),
            );
        }
        let required = required.unwrap_or(1);
        let major = raw.major.and_then(|major| {
            let valid = u32::try_from(major).ok().filter(|n| *n >= required);
            if valid.is_none() {
                self.problem(
                    format!("{key}.major"),
                    format!(
                        "{major} approvals for a major release is fewer than the {required} every release needs; use {required} or more, or remove `major`"
                    ),
                );
            }
            valid
        });
        ApprovalPolicy {
            required,
            major,
            from_role: raw.from,
            self_approval: raw.self_approval,
            expires: self.duration(
                &format!("{key}.expires"),
                raw.expires.as_deref(),
                DEFAULT_APPROVAL_TTL,
            ),
        }
    }
}

fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut digest)
        .map_err(|_| "is not a SHA-256 hex digest (64 hex characters); compute it with: printf %s \"$TOKEN\" | sha256sum".to_string())?;
    Ok(digest)
}

fn reactions(configured: Option<Vec<String>>, default: &[&str]) -> Vec<String> {
    configured.unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect())
}

fn join(names: &BTreeSet<String>) -> String {
    names.iter().cloned().collect::<Vec<_>>().join(", ")
}

// ---- configuration → domain ----

impl From<&WindowConfig> for Window {
    fn from(config: &WindowConfig) -> Self {
        Window::new(
            config.name.clone(),
            config.cron.clone(),
            config.duration,
            config.timezone,
        )
    }
}

impl From<&FreezeConfig> for Freeze {
    fn from(config: &FreezeConfig) -> Self {
        Freeze {
            start: config.start,
            end: config.end,
            environments: config.environments.clone(),
            reason: config.reason.clone(),
            source: FreezeSource::Configured,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().expect("a UTC time")
    }

    const SCRIPT_ENV: &str = r#"
[server]
listen = "127.0.0.1:8080"
[database]
url = "sqlite://bot.db"
[roles]
deployers = ["*"]
[[service]]
name = "api"
  [[service.environment]]
  name = "staging"
  backend = { kind = "command", run = ["./deploy.sh"], env = { REGISTRY = "ghcr.io/${ORG}", KUBE_CONTEXT = "staging" } }
"#;

    #[test]
    fn a_backend_env_table_is_substituted_and_kept() {
        let env = |name: &str| (name == "ORG").then(|| "acme".to_string());
        let config = parse(SCRIPT_ENV, Path::new("/srv"), &env).expect("valid");
        let env = config.services[0].environments[0].backend.script_env();
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [("KUBE_CONTEXT", "staging"), ("REGISTRY", "ghcr.io/acme")]
        );
    }

    #[test]
    fn a_backend_env_table_refuses_bad_names_and_shipmate_variables() {
        let text = SCRIPT_ENV.replace(
            r#"env = { REGISTRY = "ghcr.io/${ORG}", KUBE_CONTEXT = "staging" }"#,
            r#"env = { "1BAD" = "x", "A-B" = "y", SHIPMATE_VERSION = "9.9.9", OK = "a\u0000b" }"#,
        );
        let problems = parse(&text, Path::new("/srv"), &|_: &str| None).expect_err("invalid");
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        let prefix = "service[0].environment[0].backend.env";
        assert_eq!(
            keys,
            [
                format!("{prefix}.1BAD"),
                format!("{prefix}.A-B"),
                format!("{prefix}.OK"),
                format!("{prefix}.SHIPMATE_VERSION"),
            ],
            "{problems:?}"
        );
        assert!(problems[3].message.contains("SHIPMATE_*"), "{problems:?}");
    }

    #[test]
    fn configured_freezes_keep_their_fields() {
        let config = FreezeConfig {
            start: utc("2026-12-23T00:00:00Z"),
            end: utc("2027-01-02T00:00:00Z"),
            environments: vec!["production".to_string()],
            reason: Some("holidays".to_string()),
        };
        let f = Freeze::from(&config);
        assert_eq!(f.source, FreezeSource::Configured);
        assert_eq!(f.reason.as_deref(), Some("holidays"));
        assert!(f.covers("production", utc("2026-12-25T00:00:00Z")));
    }

    #[test]
    fn window_from_config() {
        let config = WindowConfig {
            name: "prod-window".to_string(),
            cron: cron::Schedule::from_str("0 0 14 * * Tue,Thu").unwrap(),
            duration: Duration::from_secs(7200),
            timezone: chrono_tz::Europe::Berlin,
            announce_before: vec![Duration::from_secs(1800)],
            channels: None,
        };
        let w = Window::from(&config);
        assert_eq!(w.name(), "prod-window");
        assert_eq!(w.timezone(), chrono_tz::Europe::Berlin);
        assert_eq!(w.duration(), Duration::from_secs(7200));
        assert!(w.open_at(utc("2026-11-24T13:00:00Z")).is_some());
    }
}
