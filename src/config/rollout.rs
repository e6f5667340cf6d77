//! An environment's `verify`, `on_failure` and `strategy` (SPEC §5.1, §5.2) → the domain's
//! [`CheckSpec`]s, [`OnFailure`] and [`Strategy`].
//!
//! `verify` and `strategy` are read by hand from their TOML values rather than through serde:
//! serde stops at the first wrong key of a whole `[[service]]`, which would hide every other
//! problem of that service, whereas here each check reports all its problems under exact keys.

use std::time::Duration;

use crate::domain::duration::{format_duration, parse_duration};
use crate::domain::rollout::{OnFailure, Strategy};
use crate::domain::verification::{
    CheckKind, CheckSpec, DEFAULT_COMMAND_TIMEOUT, DEFAULT_EVERY, DEFAULT_FOR,
};

use super::Validator;

/// The names the engine fills into check URLs, queries and commands.
pub const PLACEHOLDERS: [&str; 4] = ["service", "version", "environment", "previous_version"];

const CHECK_KINDS: [&str; 3] = ["http", "prometheus", "command"];
const HTTP_KEYS: [&str; 5] = ["kind", "url", "expect", "for", "every"];
const PROMETHEUS_KEYS: [&str; 7] = ["kind", "url", "query", "min", "max", "for", "every"];
const COMMAND_KEYS: [&str; 3] = ["kind", "run", "timeout"];
const CHECK_EXAMPLE: &str = r#"{ kind = "http", url = "https://api.example.com/healthz" }"#;

/// `direct` is accepted so that the default can be written out.
const STRATEGY_KINDS: [&str; 3] = ["direct", "canary", "blue_green"];
const CANARY_KEYS: [&str; 3] = ["kind", "steps", "pause"];
const CANARY_EXAMPLE: &str = r#"{ kind = "canary", steps = [10, 50, 100], pause = "5m" }"#;

/// Probing more often than this only loads the thing watched; sub-second pauses are typos.
const SHORTEST_INTERVAL: Duration = Duration::from_secs(1);

/// One inline table of the rollout keys (a check, the strategy) and the key it is found at.
pub(super) struct Entry<'t> {
    key: String,
    table: &'t toml::Table,
}

impl<'t> Entry<'t> {
    pub(super) fn get(&self, name: &str) -> Option<&'t toml::Value> {
        self.table.get(name)
    }

    pub(super) fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.key)
    }
}

impl Validator<'_> {
    /// `verify = [ … ]`: the checks in the order written, each named by kind and 1-based position.
    pub(super) fn checks(&mut self, key: &str, raw: Option<&toml::Value>) -> Vec<CheckSpec> {
        let Some(raw) = raw else {
            return Vec::new();
        };
        let Some(entries) = raw.as_array() else {
            self.problem(
                key,
                format!(
                    "must be a list of checks, not {}: write verify = [{CHECK_EXAMPLE}]",
                    a_type(raw)
                ),
            );
            return Vec::new();
        };
        entries
            .iter()
            .enumerate()
            .filter_map(|(index, value)| {
                self.check_spec(&format!("{key}[{index}]"), value, index + 1)
            })
            .collect()
    }

    /// `on_failure = "fail" | "rollback"`; absent is `fail`.
    pub(super) fn on_failure(&mut self, key: &str, raw: Option<&toml::Value>) -> OnFailure {
        let Some(raw) = raw else {
            return OnFailure::default();
        };
        if let Some(on_failure) = raw.as_str().and_then(OnFailure::parse) {
            return on_failure;
        }
        let written = match raw.as_str() {
            Some(word) => format!("unknown `{word}`"),
            None => format!("must be a word in quotes, not {}", a_type(raw)),
        };
        self.problem(
            key,
            format!(
                "{written}; write on_failure = \"{}\" (the default: the promotion just fails) or \"{}\" (deploy the previous version again)",
                OnFailure::WORDS[0],
                OnFailure::WORDS[1]
            ),
        );
        OnFailure::default()
    }

    /// `strategy = { kind = … }`; absent is direct (one step at 100 %).
    pub(super) fn strategy(&mut self, key: &str, raw: Option<&toml::Value>) -> Strategy {
        let Some(entry) = raw.and_then(|raw| self.entry(key, raw, CANARY_EXAMPLE)) else {
            return Strategy::Direct;
        };
        let Some(kind) = self.kind(&entry, &STRATEGY_KINDS) else {
            return Strategy::Direct;
        };
        match kind {
            "canary" => {
                self.unknown_keys(&entry, &CANARY_KEYS, "a canary strategy");
                Strategy::Canary {
                    steps: self.canary_steps(&entry),
                    pause: self.pause(&entry),
                }
            }
            "blue_green" => {
                self.unknown_keys(&entry, &["kind"], "a blue_green strategy");
                Strategy::BlueGreen
            }
            _ => {
                self.unknown_keys(&entry, &["kind"], "a direct strategy");
                Strategy::Direct
            }
        }
    }

    /// One check; `None` when it has any problem (they are reported).
    fn check_spec(&mut self, key: &str, value: &toml::Value, position: usize) -> Option<CheckSpec> {
        let before = self.problems.len();
        let entry = self.entry(key, value, CHECK_EXAMPLE)?;
        let kind = self.kind(&entry, &CHECK_KINDS)?;
        let (kind, duration, every) = match kind {
            "http" => {
                self.unknown_keys(&entry, &HTTP_KEYS, "an http check");
                self.http_check(&entry)
            }
            "prometheus" => {
                self.unknown_keys(&entry, &PROMETHEUS_KEYS, "a prometheus check");
                self.prometheus_check(&entry)
            }
            _ => {
                self.unknown_keys(&entry, &COMMAND_KEYS, "a command check");
                self.command_check(&entry)
            }
        };
        (self.problems.len() == before).then(|| CheckSpec {
            name: CheckSpec::default_name(&kind, position),
            kind,
            duration,
            every,
        })
    }

    /// The check and its `for` and `every`.
    fn http_check(&mut self, entry: &Entry) -> (CheckKind, Duration, Duration) {
        let url = self.url(entry, "https://api.example.com/healthz");
        let expect = self.expected_status(entry);
        let (duration, every) = self.probe_timing(entry);
        (CheckKind::Http { url, expect }, duration, every)
    }

    fn prometheus_check(&mut self, entry: &Entry) -> (CheckKind, Duration, Duration) {
        let url = self.url(entry, "http://prometheus:9090");
        let query = self.query(entry);
        let (min, max) = self.limits(entry);
        let (duration, every) = self.probe_timing(entry);
        let kind = CheckKind::Prometheus {
            url,
            query,
            min,
            max,
        };
        (kind, duration, every)
    }

    /// A script runs once per gate, so it has no `for`/`every` of its own: both are its timeout,
    /// the longest it can keep a gate waiting.
    fn command_check(&mut self, entry: &Entry) -> (CheckKind, Duration, Duration) {
        let run = self.argv(entry, "run = [\"./smoke.sh\"]");
        let timeout = self
            .duration_or(entry, "timeout", DEFAULT_COMMAND_TIMEOUT)
            .unwrap_or(DEFAULT_COMMAND_TIMEOUT);
        (CheckKind::Command { run, timeout }, timeout, timeout)
    }

    // ---- the values of one entry ----

    /// `value` as a table, or a problem showing what one looks like.
    pub(super) fn entry<'t>(
        &mut self,
        key: &str,
        value: &'t toml::Value,
        example: &str,
    ) -> Option<Entry<'t>> {
        match value.as_table() {
            Some(table) => Some(Entry {
                key: key.to_string(),
                table,
            }),
            None => {
                self.problem(
                    key,
                    format!("must be a table like {example}, not {}", a_type(value)),
                );
                None
            }
        }
    }

    /// The entry's `kind`, one of `kinds`.
    pub(super) fn kind<'t>(&mut self, entry: &Entry<'t>, kinds: &[&str]) -> Option<&'t str> {
        let choices = quoted(kinds);
        match entry.get("kind") {
            Some(toml::Value::String(kind)) if kinds.contains(&kind.as_str()) => {
                return Some(kind.as_str())
            }
            Some(toml::Value::String(kind)) => self.problem(
                entry.key("kind"),
                format!("unknown kind `{kind}`; use one of {choices}"),
            ),
            Some(other) => self.problem(
                entry.key("kind"),
                format!(
                    "must be a string, not {}; use one of {choices}",
                    a_type(other)
                ),
            ),
            None => self.problem(
                entry.key("kind"),
                format!("missing: say which kind, one of {choices}"),
            ),
        }
        None
    }

    /// Every key of the entry not among `known` (a `max` on an http check is a mistake, not
    /// something to ignore).
    pub(super) fn unknown_keys(&mut self, entry: &Entry, known: &[&str], what: &str) {
        for name in entry.table.keys() {
            if !known.contains(&name.as_str()) {
                self.problem(
                    entry.key(name),
                    format!("{what} has no `{name}`; its keys are {}", known.join(", ")),
                );
            }
        }
    }

    /// A required, non-blank string.
    pub(super) fn text<'t>(
        &mut self,
        entry: &Entry<'t>,
        name: &str,
        example: &str,
    ) -> Option<&'t str> {
        match entry.get(name) {
            Some(toml::Value::String(text)) if !text.trim().is_empty() => Some(text.as_str()),
            Some(toml::Value::String(_)) => {
                self.problem(
                    entry.key(name),
                    format!("is empty; write {name} = {example}"),
                );
                None
            }
            Some(other) => {
                self.problem(
                    entry.key(name),
                    format!(
                        "must be a string, not {}; write {name} = {example}",
                        a_type(other)
                    ),
                );
                None
            }
            None => {
                self.problem(
                    entry.key(name),
                    format!("missing: write {name} = {example}"),
                );
                None
            }
        }
    }

    /// A duration, `default` when absent; `None` when written wrong (reported).
    pub(super) fn duration_or(
        &mut self,
        entry: &Entry,
        name: &str,
        default: Duration,
    ) -> Option<Duration> {
        match entry.get(name) {
            None => Some(default),
            Some(toml::Value::String(text)) => self.check(&entry.key(name), parse_duration(text)),
            Some(other) => {
                self.problem(
                    entry.key(name),
                    format!(
                        "must be a duration in quotes, not {}; write it like \"45s\", \"30m\" or \"2h\"",
                        a_type(other)
                    ),
                );
                None
            }
        }
    }

    /// `for` and `every` of a probing check: `every` at least a second and at most `for`.
    fn probe_timing(&mut self, entry: &Entry) -> (Duration, Duration) {
        let duration = self.duration_or(entry, "for", DEFAULT_FOR);
        let every = self.duration_or(entry, "every", DEFAULT_EVERY);
        match (duration, every) {
            (_, Some(every)) if every < SHORTEST_INTERVAL => self.problem(
                entry.key("every"),
                format!(
                    "{} is too often; probe at most once a second, e.g. every = \"10s\"",
                    format_duration_fine(every)
                ),
            ),
            (Some(duration), Some(every)) if every > duration => self.problem(
                entry.key("every"),
                format!(
                    "{} is longer than for = {}: the check would probe at most once; make every at most {} or for longer",
                    format_duration(every),
                    format_duration(duration),
                    format_duration(duration)
                ),
            ),
            _ => {}
        }
        (
            duration.unwrap_or(DEFAULT_FOR),
            every.unwrap_or(DEFAULT_EVERY),
        )
    }

    /// An http(s) URL; `{placeholder}`s are kept for the engine to fill in.
    fn url(&mut self, entry: &Entry, example: &str) -> String {
        self.http_url(entry, "url", example)
    }

    /// The http(s) URL under `name`.
    pub(super) fn http_url(&mut self, entry: &Entry, name: &str, example: &str) -> String {
        let Some(text) = self.text(entry, name, &format!("\"{example}\"")) else {
            return String::new();
        };
        if !self.known_placeholders(&entry.key(name), text) {
            return text.to_string();
        }
        // Placeholders stand for names and versions; a plain word in their place checks the rest.
        let mut sample = text.to_string();
        for name in PLACEHOLDERS {
            sample = sample.replace(&format!("{{{name}}}"), "x");
        }
        let parsed = url::Url::parse(&sample)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host());
        if parsed.is_none() {
            self.problem(
                entry.key(name),
                format!("`{text}` is not an http(s) URL; write it like {example}"),
            );
        }
        text.to_string()
    }

    /// Whether every `{name}` in `text` is one of [`PLACEHOLDERS`]; reports those that are not.
    pub(super) fn known_placeholders(&mut self, key: &str, text: &str) -> bool {
        let unknown: Vec<&str> = placeholders(text)
            .filter(|name| !PLACEHOLDERS.contains(name))
            .collect();
        for name in &unknown {
            self.problem(
                key,
                format!(
                    "`{{{name}}}` is not a placeholder; use {}",
                    PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                ),
            );
        }
        unknown.is_empty()
    }

    fn query(&mut self, entry: &Entry) -> String {
        let example = r#"'sum(rate(http_requests_total{code=~"5..",version="{version}"}[1m]))'"#;
        let Some(query) = self.text(entry, "query", example) else {
            return String::new();
        };
        self.known_placeholders(&entry.key("query"), query);
        query.to_string()
    }

    /// `expect`: an HTTP status, 200 when absent.
    fn expected_status(&mut self, entry: &Entry) -> u16 {
        let status = match entry.get("expect") {
            None => return 200,
            Some(toml::Value::Integer(status)) => u16::try_from(*status)
                .ok()
                .filter(|status| (100..=599).contains(status)),
            Some(_) => None,
        };
        status.unwrap_or_else(|| {
            let written = entry.get("expect").map(ToString::to_string).unwrap_or_default();
            self.problem(
                entry.key("expect"),
                format!("`{written}` is not an HTTP status; write a number from 100 to 599, e.g. expect = 200"),
            );
            200
        })
    }

    /// `min` and `max` of a prometheus check: at least one, finite, and min <= max.
    fn limits(&mut self, entry: &Entry) -> (Option<f64>, Option<f64>) {
        let min = self.finite_number(entry, "min");
        let max = self.finite_number(entry, "max");
        if entry.get("min").is_none() && entry.get("max").is_none() {
            self.problem(
                entry.key.clone(),
                "a prometheus check needs a limit: give max (e.g. max = 0.01), min, or both",
            );
        }
        if let (Some(low), Some(high)) = (min, max) {
            if low > high {
                self.problem(
                    entry.key("min"),
                    format!("{low} is above max {high}: no value could pass; make min at most max"),
                );
            }
        }
        (min, max)
    }

    /// An optional finite number (integer or float); `None` when absent or wrong (reported).
    fn finite_number(&mut self, entry: &Entry, name: &str) -> Option<f64> {
        let number = match entry.get(name)? {
            // Limits are small; an i64 beyond f64's exact range still compares sensibly.
            toml::Value::Integer(number) => Some(*number as f64),
            toml::Value::Float(number) if number.is_finite() => Some(*number),
            toml::Value::Float(number) => {
                self.problem(
                    entry.key(name),
                    format!("{number} is not a limit a value can be checked against; write a finite number, e.g. {name} = 0.01"),
                );
                return None;
            }
            _ => None,
        };
        if number.is_none() {
            self.problem(
                entry.key(name),
                format!("must be a number without quotes, e.g. {name} = 0.01"),
            );
        }
        number
    }

    /// `run`: the program and its arguments, like a command backend's.
    pub(super) fn argv(&mut self, entry: &Entry, example: &str) -> Vec<String> {
        let Some(value) = entry.get("run") else {
            self.problem(entry.key("run"), format!("missing: write {example}"));
            return Vec::new();
        };
        let Some(items) = value.as_array() else {
            self.problem(
                entry.key("run"),
                format!(
                    "must be a list of the program and its arguments, not {}; write {example}",
                    a_type(value)
                ),
            );
            return Vec::new();
        };
        let mut run = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(text) => run.push(text.to_string()),
                None => self.problem(
                    format!("{}[{index}]", entry.key("run")),
                    format!("must be a string, not {}", a_type(item)),
                ),
            }
        }
        let blank = |first: &toml::Value| first.as_str().is_some_and(|p| p.trim().is_empty());
        if items.first().is_none_or(blank) {
            self.problem(
                entry.key("run"),
                format!("is empty: give the program and its arguments, e.g. {example}"),
            );
        }
        run
    }

    // ---- canary ----

    /// `steps`: weights in percent, each 1–100, rising, the last 100.
    fn canary_steps(&mut self, entry: &Entry) -> Vec<u8> {
        let key = entry.key("steps");
        let Some(value) = entry.get("steps") else {
            self.problem(
                key,
                "missing: write steps = [10, 50, 100] (percent of traffic per step)",
            );
            return Vec::new();
        };
        let Some(items) = value.as_array().filter(|items| !items.is_empty()) else {
            self.problem(
                key,
                "must be a non-empty list of percentages, e.g. steps = [10, 50, 100]",
            );
            return Vec::new();
        };
        let last = items.len() - 1;
        let mut steps: Vec<u8> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let item_key = format!("{key}[{index}]");
            let Some(weight) = self.weight(&item_key, item) else {
                continue;
            };
            // One problem per entry: a step that does not rise is wrong whether or not it is last.
            if let Some(before) = steps.last().filter(|before| weight <= **before) {
                self.problem(
                    item_key,
                    format!("{weight} does not rise above the step before it ({before}); weights rise, e.g. [10, 50, 100]"),
                );
            } else if index == last && weight != 100 {
                self.problem(
                    item_key,
                    format!("the last step is {weight}; end at 100 so that the new version takes all traffic, e.g. [10, 50, 100]"),
                );
            }
            steps.push(weight);
        }
        steps
    }

    /// One canary weight: a whole percentage from 1 to 100.
    fn weight(&mut self, key: &str, item: &toml::Value) -> Option<u8> {
        let weight = item
            .as_integer()
            .and_then(|weight| u8::try_from(weight).ok())
            .filter(|weight| (1..=100).contains(weight));
        if weight.is_none() {
            self.problem(
                key,
                format!("`{item}` is not a weight; write a whole percentage from 1 to 100"),
            );
        }
        weight
    }

    /// `pause`: required, at least a second.
    fn pause(&mut self, entry: &Entry) -> Duration {
        let fallback = Duration::from_secs(300);
        if entry.get("pause").is_none() {
            self.problem(
                entry.key("pause"),
                "missing: say how long the checks gate each step, e.g. pause = \"5m\"",
            );
            return fallback;
        }
        let Some(pause) = self.duration_or(entry, "pause", fallback) else {
            return fallback;
        };
        if pause < SHORTEST_INTERVAL {
            self.problem(
                entry.key("pause"),
                format!(
                    "{} is too short to check anything; pause at least 1s, e.g. pause = \"5m\"",
                    format_duration_fine(pause)
                ),
            );
        }
        pause
    }
}

/// The names in `{name}` of `text`: braces around a bare identifier. PromQL's label matchers
/// (`{code=~"5..",version="{version}"}`) hold `=` and quotes, so they are never taken for one,
/// while the `{version}` inside them is.
fn placeholders(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices('{').filter_map(move |(start, _)| {
        let rest = &text[start + 1..];
        let end = rest.find(['{', '}'])?;
        let name = &rest[..end];
        let identifier = name
            .chars()
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        (rest[end..].starts_with('}') && identifier).then_some(name)
    })
}

/// `a string`, `an integer`: what was written instead, for messages.
pub(super) fn a_type(value: &toml::Value) -> String {
    let name = value.type_str();
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

fn quoted(words: &[&str]) -> String {
    words
        .iter()
        .map(|word| format!("\"{word}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sub-second durations too (`500ms`), which [`format_duration`] would show as `0s`.
fn format_duration_fine(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        format_duration(duration)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{parse, EnvironmentConfig, Problem};

    const BASE: &str = r#"
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
  backend = { kind = "command", run = ["./deploy.sh"] }
  [[service.environment]]
  name = "production"
  backend = { kind = "command", run = ["./deploy.sh"] }
"#;

    /// Where production's keys are reported.
    const AT: &str = "service[0].environment[1]";

    fn text(production: &str) -> String {
        format!("{BASE}  {production}\n")
    }

    fn production_with(
        production: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<EnvironmentConfig, Vec<Problem>> {
        let config = parse(&text(production), Path::new("/srv"), env)?;
        Ok(config.services[0].environments[1].clone())
    }

    fn production(lines: &str) -> EnvironmentConfig {
        production_with(lines, &|_: &str| None).unwrap_or_else(|p| panic!("{p:#?}"))
    }

    fn refused(lines: &str) -> Vec<Problem> {
        match production_with(lines, &|_: &str| None) {
            Ok(env) => panic!("accepted, expected problems: {env:#?}"),
            Err(problems) => problems,
        }
    }

    /// The problems' keys under production (`verify[0].url`), sorted.
    fn keys(problems: &[Problem]) -> Vec<String> {
        let mut keys: Vec<String> = problems
            .iter()
            .map(|p| {
                p.key
                    .strip_prefix(&format!("{AT}."))
                    .unwrap_or(&p.key)
                    .to_string()
            })
            .collect();
        keys.sort();
        keys
    }

    /// The one problem at `key` (under production); it must mention every needle.
    fn assert_problem(problems: &[Problem], key: &str, needles: &[&str]) {
        let full = format!("{AT}.{key}");
        let found: Vec<&Problem> = problems.iter().filter(|p| p.key == full).collect();
        assert_eq!(found.len(), 1, "one problem at {full} in {problems:#?}");
        for needle in needles {
            assert!(
                found[0].message.contains(needle),
                "{full}: `{}` should mention `{needle}`",
                found[0].message
            );
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    // ---- what a valid environment becomes ----

    #[test]
    fn the_spec_example_yields_its_checks_failure_handling_and_strategy() {
        let env = production(
            r#"verify = [
    { kind = "http", url = "https://api.example.com/healthz", expect = 200, for = "2m", every = "10s" },
    { kind = "prometheus", url = "http://prometheus:9090", query = 'sum(rate(http_requests_total{code=~"5..",version="{version}"}[1m])) / sum(rate(http_requests_total{version="{version}"}[1m]))', max = 0.01, for = "5m", every = "30s" },
    { kind = "command", run = ["./smoke.sh", "{environment}"], timeout = "5m" },
  ]
  on_failure = "rollback"
  strategy = { kind = "canary", steps = [10, 50, 100], pause = "5m" }"#,
        );
        assert_eq!(
            env.verify,
            [
                CheckSpec {
                    name: "http check 1".to_string(),
                    kind: CheckKind::Http {
                        url: "https://api.example.com/healthz".to_string(),
                        expect: 200,
                    },
                    duration: secs(120),
                    every: secs(10),
                },
                CheckSpec {
                    name: "prometheus check 2".to_string(),
                    kind: CheckKind::Prometheus {
                        url: "http://prometheus:9090".to_string(),
                        query: r#"sum(rate(http_requests_total{code=~"5..",version="{version}"}[1m])) / sum(rate(http_requests_total{version="{version}"}[1m]))"#.to_string(),
                        min: None,
                        max: Some(0.01),
                    },
                    duration: secs(300),
                    every: secs(30),
                },
                CheckSpec {
                    name: "command check 3".to_string(),
                    kind: CheckKind::Command {
                        run: vec!["./smoke.sh".to_string(), "{environment}".to_string()],
                        timeout: secs(300),
                    },
                    duration: secs(300),
                    every: secs(300),
                },
            ]
        );
        assert_eq!(env.on_failure, OnFailure::Rollback);
        assert_eq!(
            env.strategy,
            Strategy::Canary {
                steps: vec![10, 50, 100],
                pause: secs(300),
            }
        );
    }

    #[test]
    fn absent_keys_mean_no_checks_fail_and_direct() {
        let env = production("");
        assert_eq!(env.verify, []);
        assert_eq!(env.on_failure, OnFailure::Fail);
        assert_eq!(env.strategy, Strategy::Direct);
    }

    #[test]
    fn unwritten_check_keys_take_their_defaults() {
        let env = production(
            r#"verify = [
    { kind = "http", url = "http://localhost:8080/healthz" },
    { kind = "prometheus", url = "https://prom.internal", query = "up", min = 1 },
    { kind = "command", run = ["./smoke.sh"] },
  ]
  on_failure = "fail""#,
        );
        let kinds: Vec<&CheckKind> = env.verify.iter().map(|c| &c.kind).collect();
        assert_eq!(
            kinds,
            [
                &CheckKind::Http {
                    url: "http://localhost:8080/healthz".to_string(),
                    expect: 200,
                },
                &CheckKind::Prometheus {
                    url: "https://prom.internal".to_string(),
                    query: "up".to_string(),
                    min: Some(1.0),
                    max: None,
                },
                &CheckKind::Command {
                    run: vec!["./smoke.sh".to_string()],
                    timeout: DEFAULT_COMMAND_TIMEOUT,
                },
            ]
        );
        for check in &env.verify[..2] {
            assert_eq!((check.duration, check.every), (DEFAULT_FOR, DEFAULT_EVERY));
        }
        assert_eq!(env.on_failure, OnFailure::Fail);
    }

    #[test]
    fn edge_values_that_are_allowed() {
        let env = production(
            r#"verify = [
    { kind = "http", url = "https://{environment}.example.com/{service}/healthz", expect = 599, for = "30s", every = "30s" },
    { kind = "http", url = "https://api.example.com/", expect = 100, every = "1s" },
    { kind = "prometheus", url = "http://prometheus:9090", query = "x", min = 0.5, max = 0.5 },
    { kind = "prometheus", url = "http://prometheus:9090", query = "y", min = -1, max = 2.5 },
  ]"#,
        );
        assert_eq!(env.verify[0].every, env.verify[0].duration);
        assert_eq!(
            env.verify[0].kind,
            CheckKind::Http {
                url: "https://{environment}.example.com/{service}/healthz".to_string(),
                expect: 599,
            },
            "placeholders are kept for the engine"
        );
        assert_eq!(env.verify[1].every, secs(1));
        assert!(matches!(
            env.verify[3].kind,
            CheckKind::Prometheus { min: Some(min), max: Some(max), .. } if min == -1.0 && max == 2.5
        ));
    }

    #[test]
    fn strategies_blue_green_explicit_direct_and_a_one_step_canary_parse() {
        let cases = [
            (r#"{ kind = "blue_green" }"#, Strategy::BlueGreen),
            (r#"{ kind = "direct" }"#, Strategy::Direct),
            (
                r#"{ kind = "canary", steps = [100], pause = "1s" }"#,
                Strategy::Canary {
                    steps: vec![100],
                    pause: secs(1),
                },
            ),
        ];
        for (written, expected) in cases {
            let env = production(&format!("strategy = {written}"));
            assert_eq!(env.strategy, expected, "{written}");
            assert_eq!(env.verify, [], "no checks needed for {written}");
        }
    }

    #[test]
    fn environment_variables_fill_check_values() {
        let env = |name: &str| match name {
            "PROM_URL" => Some("http://prometheus.monitoring:9090".to_string()),
            "SMOKE" => Some("./smoke-prod.sh".to_string()),
            _ => None,
        };
        let production = production_with(
            r#"verify = [
    { kind = "prometheus", url = "${PROM_URL}", query = "up", min = 1 },
    { kind = "command", run = ["${SMOKE}"] },
  ]"#,
            &env,
        )
        .unwrap_or_else(|p| panic!("{p:#?}"));
        assert!(matches!(
            &production.verify[0].kind,
            CheckKind::Prometheus { url, .. } if url == "http://prometheus.monitoring:9090"
        ));
        assert!(matches!(
            &production.verify[1].kind,
            CheckKind::Command { run, .. } if run == &["./smoke-prod.sh"]
        ));
    }

    #[test]
    fn a_missing_variable_is_reported_once_not_again_as_a_bad_url() {
        let problems = production_with(
            r#"verify = [{ kind = "prometheus", url = "${PROM_URL}", query = "up", min = 1 }]"#,
            &|_: &str| None,
        )
        .expect_err("PROM_URL is unset");
        assert_eq!(keys(&problems), ["verify[0].url"], "{problems:#?}");
        assert!(problems[0].message.contains("PROM_URL"), "{problems:#?}");
    }

    // ---- what is refused ----

    #[test]
    fn verify_must_be_a_list_of_tables_with_a_known_kind() {
        let problems = refused(r#"verify = { kind = "http", url = "https://x.example.com" }"#);
        assert_eq!(keys(&problems), ["verify"]);
        assert_problem(&problems, "verify", &["list of checks", "verify = [{"]);

        let problems = refused(
            r#"verify = ["https://x.example.com", { url = "https://x.example.com" }, { kind = "tcp", port = 80 }, { kind = 3 }]"#,
        );
        assert_eq!(
            keys(&problems),
            [
                "verify[0]",
                "verify[1].kind",
                "verify[2].kind",
                "verify[3].kind"
            ],
            "an unknown kind's other keys are not judged: {problems:#?}"
        );
        assert_problem(&problems, "verify[0]", &["must be a table", "not a string"]);
        assert_problem(
            &problems,
            "verify[1].kind",
            &["missing", "\"http\", \"prometheus\", \"command\""],
        );
        assert_problem(
            &problems,
            "verify[2].kind",
            &["`tcp`", "\"http\", \"prometheus\", \"command\""],
        );
        assert_problem(
            &problems,
            "verify[3].kind",
            &["must be a string", "not an integer"],
        );
    }

    #[test]
    fn keys_of_another_kind_are_refused() {
        let problems = refused(
            r#"verify = [
    { kind = "http", url = "https://x.example.com", max = 0.01, name = "health" },
    { kind = "prometheus", url = "http://p:9090", query = "up", max = 1, expect = 200 },
    { kind = "command", run = ["./smoke.sh"], for = "2m", every = "10s" },
  ]"#,
        );
        assert_eq!(
            keys(&problems),
            [
                "verify[0].max",
                "verify[0].name",
                "verify[1].expect",
                "verify[2].every",
                "verify[2].for",
            ]
        );
        assert_problem(
            &problems,
            "verify[0].max",
            &[
                "an http check has no `max`",
                "kind, url, expect, for, every",
            ],
        );
        assert_problem(
            &problems,
            "verify[2].for",
            &["a command check has no `for`", "kind, run, timeout"],
        );
    }

    #[test]
    fn http_checks_need_an_http_url_and_a_status() {
        let problems = refused(
            r#"verify = [
    { kind = "http" },
    { kind = "http", url = "ftp://files.example.com/x", expect = 99 },
    { kind = "http", url = "healthz", expect = 600 },
    { kind = "http", url = "", expect = "200" },
    { kind = "http", url = 8080, expect = 200.0 },
  ]"#,
        );
        assert_eq!(
            keys(&problems),
            [
                "verify[0].url",
                "verify[1].expect",
                "verify[1].url",
                "verify[2].expect",
                "verify[2].url",
                "verify[3].expect",
                "verify[3].url",
                "verify[4].expect",
                "verify[4].url",
            ]
        );
        assert_problem(&problems, "verify[0].url", &["missing", "url = \"https://"]);
        assert_problem(
            &problems,
            "verify[1].url",
            &["`ftp://files.example.com/x`", "not an http(s) URL"],
        );
        assert_problem(
            &problems,
            "verify[2].url",
            &["`healthz`", "not an http(s) URL"],
        );
        assert_problem(&problems, "verify[3].url", &["is empty"]);
        assert_problem(
            &problems,
            "verify[4].url",
            &["must be a string", "not an integer"],
        );
        assert_problem(&problems, "verify[1].expect", &["`99`", "100 to 599"]);
        assert_problem(&problems, "verify[2].expect", &["`600`", "100 to 599"]);
        assert_problem(&problems, "verify[3].expect", &["`\"200\"`", "100 to 599"]);
        assert_problem(&problems, "verify[4].expect", &["`200.0`", "100 to 599"]);
    }

    #[test]
    fn prometheus_checks_need_a_url_a_query_and_sane_limits() {
        let problems = refused(
            r#"verify = [
    { kind = "prometheus" },
    { kind = "prometheus", url = "http://p:9090", query = "  ", min = 0.5, max = 0.1 },
    { kind = "prometheus", url = "http://p:9090", query = "up", max = nan },
    { kind = "prometheus", url = "http://p:9090", query = "up", min = -inf, max = "0.01" },
  ]"#,
        );
        assert_eq!(
            keys(&problems),
            [
                "verify[0]",
                "verify[0].query",
                "verify[0].url",
                "verify[1].min",
                "verify[1].query",
                "verify[2].max",
                "verify[3].max",
                "verify[3].min",
            ]
        );
        assert_problem(
            &problems,
            "verify[0].url",
            &["missing", "http://prometheus:9090"],
        );
        assert_problem(&problems, "verify[0].query", &["missing", "query = "]);
        assert_problem(&problems, "verify[1].query", &["is empty"]);
        assert_problem(
            &problems,
            "verify[1].min",
            &["0.5 is above max 0.1", "min at most max"],
        );
        assert_problem(&problems, "verify[2].max", &["NaN", "finite number"]);
        assert_problem(&problems, "verify[3].min", &["-inf", "finite number"]);
        assert_problem(&problems, "verify[3].max", &["without quotes"]);
        let whole = problems
            .iter()
            .find(|p| p.key == format!("{AT}.verify[0]"))
            .map(|p| p.message.as_str());
        assert!(
            whole.is_some_and(|m| m.contains("max") && m.contains("min")),
            "{whole:?}"
        );
    }

    #[test]
    fn command_checks_need_a_program_and_a_timeout_duration() {
        let problems = refused(
            r#"verify = [
    { kind = "command" },
    { kind = "command", run = [] },
    { kind = "command", run = [" ", "x"] },
    { kind = "command", run = "./smoke.sh" },
    { kind = "command", run = ["./smoke.sh", 3], timeout = "soon" },
  ]"#,
        );
        assert_eq!(
            keys(&problems),
            [
                "verify[0].run",
                "verify[1].run",
                "verify[2].run",
                "verify[3].run",
                "verify[4].run[1]",
                "verify[4].timeout",
            ]
        );
        assert_problem(
            &problems,
            "verify[0].run",
            &["missing", "run = [\"./smoke.sh\"]"],
        );
        assert_problem(
            &problems,
            "verify[1].run",
            &["is empty", "the program and its arguments"],
        );
        assert_problem(&problems, "verify[2].run", &["is empty"]);
        assert_problem(
            &problems,
            "verify[3].run",
            &["must be a list", "not a string"],
        );
        assert_problem(&problems, "verify[4].run[1]", &["must be a string"]);
        assert_problem(
            &problems,
            "verify[4].timeout",
            &["`soon`", "not a duration"],
        );
    }

    #[test]
    fn check_durations_must_parse_and_every_must_fit_in_for() {
        let problems = refused(
            r#"verify = [
    { kind = "http", url = "https://x.example.com", for = "two minutes", every = 10 },
    { kind = "http", url = "https://x.example.com", for = "1m", every = "2m" },
    { kind = "http", url = "https://x.example.com", every = "90s" },
    { kind = "prometheus", url = "http://p:9090", query = "up", max = 1, every = "500ms" },
    { kind = "http", url = "https://x.example.com", for = "0s", every = "5m" },
  ]"#,
        );
        assert_eq!(
            keys(&problems),
            [
                "verify[0].every",
                "verify[0].for",
                "verify[1].every",
                "verify[2].every",
                "verify[3].every",
                "verify[4].for",
            ],
            "a wrong `for` is not compared with `every`: {problems:#?}"
        );
        assert_problem(
            &problems,
            "verify[0].for",
            &["`two minutes`", "not a duration"],
        );
        assert_problem(
            &problems,
            "verify[0].every",
            &["in quotes", "not an integer"],
        );
        assert_problem(
            &problems,
            "verify[1].every",
            &["2m is longer than for = 1m", "at most once", "at most 1m"],
        );
        assert_problem(
            &problems,
            "verify[2].every",
            &["1m30s is longer than for = 1m"],
        );
        assert_problem(&problems, "verify[3].every", &["500ms", "once a second"]);
    }

    #[test]
    fn unknown_placeholders_in_urls_and_queries_are_named_with_the_known_ones() {
        let problems = refused(
            r#"verify = [
    { kind = "http", url = "https://{env}.example.com/healthz" },
    { kind = "prometheus", url = "http://p:9090", query = 'rate(x{version="{versoin}",job="{service}"}[1m]) > {threshold}', max = 1 },
    { kind = "command", run = ["./smoke.sh", "{anything}"] },
  ]"#,
        );
        assert_eq!(
            keys(&problems),
            ["verify[0].url", "verify[1].query", "verify[1].query"],
            "one problem per unknown name; scripts' arguments are theirs: {problems:#?}"
        );
        assert_problem(
            &problems[..1],
            "verify[0].url",
            &[
                "`{env}`",
                "{service}, {version}, {environment}, {previous_version}",
            ],
        );
        let query: Vec<&str> = problems[1..].iter().map(|p| p.message.as_str()).collect();
        assert!(query[0].contains("`{versoin}`"), "{query:?}");
        assert!(query[1].contains("`{threshold}`"), "{query:?}");
    }

    #[test]
    fn placeholders_are_bare_identifiers_in_braces_not_promql_matchers() {
        let found: Vec<&str> = placeholders(
            r#"sum(x{code=~"5..",version="{version}"}[1m]) {} { spaced } {a-b} {_ok1} {previous_version}"#,
        )
        .collect();
        assert_eq!(found, ["version", "_ok1", "previous_version"]);
        assert_eq!(placeholders("{unclosed").count(), 0);
        assert_eq!(placeholders("x{job=\"a\"}").count(), 0);
    }

    #[test]
    fn on_failure_is_fail_or_rollback() {
        let problems = refused(r#"on_failure = "retry""#);
        assert_eq!(keys(&problems), ["on_failure"]);
        assert_problem(
            &problems,
            "on_failure",
            &["`retry`", "\"fail\"", "\"rollback\""],
        );
        let problems = refused("on_failure = true");
        assert_eq!(
            keys(&problems),
            ["on_failure"],
            "the exact key, not serde's"
        );
        assert_problem(
            &problems,
            "on_failure",
            &["not a boolean", "\"fail\"", "\"rollback\""],
        );
    }

    #[test]
    fn strategy_kinds_and_their_keys_are_checked() {
        for (written, key, needles) in [
            (
                r#""canary""#,
                "strategy",
                &["must be a table", "steps = [10, 50, 100]"][..],
            ),
            (
                r#"{ steps = [100] }"#,
                "strategy.kind",
                &["missing", "\"canary\", \"blue_green\""],
            ),
            (
                r#"{ kind = "rolling" }"#,
                "strategy.kind",
                &["`rolling`", "\"direct\", \"canary\", \"blue_green\""],
            ),
            (
                r#"{ kind = "blue_green", pause = "5m" }"#,
                "strategy.pause",
                &["a blue_green strategy has no `pause`"],
            ),
            (
                r#"{ kind = "direct", steps = [100] }"#,
                "strategy.steps",
                &["a direct strategy has no `steps`"],
            ),
            (
                r#"{ kind = "canary", steps = [50, 100], pause = "5m", every = "1m" }"#,
                "strategy.every",
                &["a canary strategy has no `every`", "kind, steps, pause"],
            ),
        ] {
            let problems = refused(&format!("strategy = {written}"));
            assert_eq!(keys(&problems), [key], "{written}: {problems:#?}");
            assert_problem(&problems, key, needles);
        }
    }

    #[test]
    fn canary_steps_rise_from_1_to_100_and_the_wrong_entry_is_named() {
        let problems = refused(
            r#"strategy = { kind = "canary", steps = [0, 10, 10, 5, 101, 50], pause = "5m" }"#,
        );
        assert_eq!(
            keys(&problems),
            [
                "strategy.steps[0]",
                "strategy.steps[2]",
                "strategy.steps[3]",
                "strategy.steps[4]",
                "strategy.steps[5]",
            ]
        );
        assert_problem(&problems, "strategy.steps[0]", &["`0`", "1 to 100"]);
        assert_problem(
            &problems,
            "strategy.steps[2]",
            &["10 does not rise above the step before it (10)"],
        );
        assert_problem(
            &problems,
            "strategy.steps[3]",
            &["5 does not rise above the step before it (10)"],
        );
        assert_problem(&problems, "strategy.steps[4]", &["`101`", "1 to 100"]);
        assert_problem(
            &problems,
            "strategy.steps[5]",
            &["last step is 50", "end at 100"],
        );

        for (steps, key, needle) in [
            ("[]", "strategy.steps", "non-empty"),
            ("\"10,50,100\"", "strategy.steps", "non-empty list"),
            ("[10, 50.5, 100]", "strategy.steps[1]", "`50.5`"),
            ("[10, 50]", "strategy.steps[1]", "last step is 50"),
            ("[150]", "strategy.steps[0]", "`150`"),
        ] {
            let problems = refused(&format!(
                r#"strategy = {{ kind = "canary", steps = {steps}, pause = "5m" }}"#
            ));
            assert_eq!(keys(&problems), [key], "{steps}: {problems:#?}");
            assert_problem(&problems, key, &[needle]);
        }
    }

    #[test]
    fn a_canary_needs_steps_and_a_pause_of_at_least_a_second() {
        let problems = refused(r#"strategy = { kind = "canary" }"#);
        assert_eq!(keys(&problems), ["strategy.pause", "strategy.steps"]);
        assert_problem(&problems, "strategy.pause", &["missing", "pause = \"5m\""]);
        assert_problem(
            &problems,
            "strategy.steps",
            &["missing", "steps = [10, 50, 100]"],
        );

        for (pause, needles) in [
            ("\"500ms\"", &["500ms", "at least 1s"][..]),
            ("\"later\"", &["`later`", "not a duration"][..]),
            ("300", &["in quotes", "not an integer"][..]),
        ] {
            let problems = refused(&format!(
                r#"strategy = {{ kind = "canary", steps = [50, 100], pause = {pause} }}"#
            ));
            assert_eq!(keys(&problems), ["strategy.pause"], "{pause}");
            assert_problem(&problems, "strategy.pause", needles);
        }
    }

    #[test]
    fn every_problem_of_the_rollout_keys_is_reported_at_once() {
        let problems = refused(
            r#"verify = [
    { kind = "http", url = "not a url", max = 1 },
    { kind = "prometheus", url = "http://p:9090", query = "up" },
    { kind = "command", run = [] },
  ]
  on_failure = "undo"
  strategy = { kind = "canary", steps = [10, 5], pause = "0s" }"#,
        );
        assert_eq!(
            keys(&problems),
            [
                "on_failure",
                "strategy.pause",
                "strategy.steps[1]",
                "verify[0].max",
                "verify[0].url",
                "verify[1]",
                "verify[2].run",
            ],
            "{problems:#?}"
        );
    }
}
