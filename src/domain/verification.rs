//! Verification checks (SPEC §5.1): what each kind of check must see, and how a run of readings
//! becomes passed or failed. The probes themselves (HTTP, Prometheus, a script) are in
//! `crate::verify`; this module only judges what they read.

use std::time::Duration;

use super::rollout::Step;

/// Three inconclusive Prometheus evaluations in a row fail the check.
pub const INCONCLUSIVE_LIMIT: u32 = 3;
pub const DEFAULT_FOR: Duration = Duration::from_secs(60);
pub const DEFAULT_EVERY: Duration = Duration::from_secs(10);
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// One entry of `verify = [ … ]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    /// `http check 1`: the kind and the 1-based position in the list (the metric's `check` label
    /// and what failure reasons name).
    pub name: String,
    pub kind: CheckKind,
    /// How long the check must keep passing (the final verification).
    pub duration: Duration,
    /// How often it probes.
    pub every: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// Every probe must answer `expect`.
    Http { url: String, expect: u16 },
    /// Every evaluation of `query` must be within `min`/`max`.
    Prometheus {
        url: String,
        query: String,
        min: Option<f64>,
        max: Option<f64>,
    },
    /// Runs once per gate; must exit 0.
    Command { run: Vec<String>, timeout: Duration },
}

impl CheckKind {
    pub fn label(&self) -> &'static str {
        match self {
            CheckKind::Http { .. } => "http",
            CheckKind::Prometheus { .. } => "prometheus",
            CheckKind::Command { .. } => "command",
        }
    }

    /// Whether the check probes repeatedly (`every`) rather than once per gate.
    pub fn repeats(&self) -> bool {
        !matches!(self, CheckKind::Command { .. })
    }
}

impl CheckSpec {
    /// `<kind> check <n>`.
    pub fn default_name(kind: &CheckKind, position: usize) -> String {
        format!("{} check {position}", kind.label())
    }
}

/// What one probe saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// An HTTP status.
    Status(u16),
    /// A query's value (may be NaN or infinite).
    Value(f64),
    /// A query that returned no sample.
    NoData,
    /// A script's exit: `Ok` for 0, else what it said last.
    Exit {
        code: Option<i32>,
        last_line: String,
    },
    /// The probe could not be made or answered with a transient error; for Prometheus this is
    /// inconclusive, for HTTP a failure (the endpoint must answer).
    Unreachable(String),
    /// An answer that is never a pass (a Prometheus query refused as malformed: a config error).
    Broken(String),
}

/// How one reading counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass,
    Inconclusive(String),
    /// What was seen and the limit: `0.034 > max 0.01`.
    Fail(String),
}

/// Judges one reading of `kind`.
pub fn judge(kind: &CheckKind, reading: &Reading) -> Verdict {
    match (kind, reading) {
        (CheckKind::Http { expect, .. }, Reading::Status(status)) if status == expect => {
            Verdict::Pass
        }
        (CheckKind::Http { expect, .. }, Reading::Status(status)) => {
            Verdict::Fail(format!("HTTP {status}, expected {expect}"))
        }
        (CheckKind::Prometheus { min, max, .. }, Reading::Value(value)) => {
            judge_value(*value, *min, *max)
        }
        (CheckKind::Prometheus { .. }, Reading::NoData) => {
            Verdict::Inconclusive("the query returned no data".to_string())
        }
        (CheckKind::Prometheus { .. }, Reading::Unreachable(why)) => {
            Verdict::Inconclusive(why.clone())
        }
        (CheckKind::Command { .. }, Reading::Exit { code: Some(0), .. }) => Verdict::Pass,
        (CheckKind::Command { .. }, Reading::Exit { code, last_line }) => {
            let code = code.map_or("a signal".to_string(), |c| format!("code {c}"));
            if last_line.is_empty() {
                Verdict::Fail(format!("exited with {code}"))
            } else {
                Verdict::Fail(format!("exited with {code}: {last_line}"))
            }
        }
        (_, Reading::Unreachable(why) | Reading::Broken(why)) => Verdict::Fail(why.clone()),
        (kind, other) => Verdict::Fail(format!(
            "a {} check cannot use {other:?}; this is a bug in shipmate",
            kind.label()
        )),
    }
}

fn judge_value(value: f64, min: Option<f64>, max: Option<f64>) -> Verdict {
    if value.is_nan() {
        return Verdict::Inconclusive("the query returned NaN".to_string());
    }
    if let Some(max) = max.filter(|max| value > *max) {
        return Verdict::Fail(format!("{} > max {}", number(value), number(max)));
    }
    if let Some(min) = min.filter(|min| value < *min) {
        return Verdict::Fail(format!("{} < min {}", number(value), number(min)));
    }
    Verdict::Pass
}

/// A number as people read it: `0.034`, `12`, `+Inf`.
fn number(value: f64) -> String {
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    let text = format!("{value:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// The running tally of one check in one gate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub probes: u32,
    pub inconclusive_in_row: u32,
    /// Set once the check failed: the reason without the check's name.
    pub failure: Option<String>,
    /// Whether a once-per-gate check (a script) has passed.
    pub done: bool,
}

impl Tally {
    /// Counts one verdict; returns the failure it causes, if any.
    pub fn count(&mut self, kind: &CheckKind, verdict: Verdict) -> Option<String> {
        self.probes += 1;
        match verdict {
            Verdict::Pass => {
                self.inconclusive_in_row = 0;
                if !kind.repeats() {
                    self.done = true;
                }
            }
            Verdict::Inconclusive(why) => {
                self.inconclusive_in_row += 1;
                if self.inconclusive_in_row >= INCONCLUSIVE_LIMIT {
                    self.failure = Some(format!(
                        "{INCONCLUSIVE_LIMIT} inconclusive evaluations in a row ({why})"
                    ));
                }
            }
            Verdict::Fail(why) => self.failure = Some(why),
        }
        self.failure.clone()
    }

    /// Whether the check has passed a gate that ran for `elapsed` of `length`: a repeating check
    /// passes when the time is up without failure; a script when it exited 0.
    pub fn passed(&self, kind: &CheckKind, elapsed: Duration, length: Duration) -> bool {
        self.failure.is_none()
            && if kind.repeats() {
                elapsed >= length && self.inconclusive_in_row == 0 && self.probes > 0
            } else {
                self.done
            }
    }
}

/// The failure reason a person reads: `prometheus check 2: 0.034 > max 0.01 at step 2/3 (50%)`.
pub fn failure_reason(check: &CheckSpec, what: &str, step: Step, steps_shown: bool) -> String {
    if steps_shown {
        format!("{}: {what} at {}", check.name, step.describe())
    } else {
        format!("{}: {what}", check.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rollout::Phase;

    fn prometheus(min: Option<f64>, max: Option<f64>) -> CheckKind {
        CheckKind::Prometheus {
            url: "http://prometheus:9090".to_string(),
            query: "up".to_string(),
            min,
            max,
        }
    }

    #[test]
    fn prometheus_values_are_judged_against_min_and_max() {
        let kind = prometheus(Some(0.5), Some(0.01 + 1.0));
        assert_eq!(judge(&kind, &Reading::Value(0.7)), Verdict::Pass);
        assert_eq!(
            judge(&prometheus(None, Some(0.01)), &Reading::Value(0.034)),
            Verdict::Fail("0.034 > max 0.01".to_string())
        );
        assert_eq!(
            judge(&kind, &Reading::Value(0.2)),
            Verdict::Fail("0.2 < min 0.5".to_string())
        );
        assert_eq!(
            judge(&kind, &Reading::Value(f64::INFINITY)),
            Verdict::Fail("+Inf > max 1.01".to_string())
        );
        assert!(matches!(
            judge(&kind, &Reading::Value(f64::NAN)),
            Verdict::Inconclusive(_)
        ));
        assert!(matches!(
            judge(&kind, &Reading::NoData),
            Verdict::Inconclusive(_)
        ));
        assert!(matches!(
            judge(&kind, &Reading::Broken("400 bad_data".to_string())),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn three_inconclusive_evaluations_in_a_row_fail_and_a_pass_resets_the_run() {
        let kind = prometheus(None, Some(1.0));
        let mut tally = Tally::default();
        let nan = || judge(&kind, &Reading::Value(f64::NAN));
        assert_eq!(tally.count(&kind, nan()), None);
        assert_eq!(tally.count(&kind, nan()), None);
        assert_eq!(tally.count(&kind, Verdict::Pass), None);
        assert_eq!(tally.count(&kind, nan()), None);
        assert_eq!(tally.count(&kind, nan()), None);
        let failure = tally.count(&kind, nan()).expect("third in a row fails");
        assert!(failure.starts_with("3 inconclusive"), "{failure}");
    }

    #[test]
    fn http_checks_need_the_expected_status_and_an_answer() {
        let kind = CheckKind::Http {
            url: "http://localhost/healthz".to_string(),
            expect: 200,
        };
        assert_eq!(judge(&kind, &Reading::Status(200)), Verdict::Pass);
        assert_eq!(
            judge(&kind, &Reading::Status(503)),
            Verdict::Fail("HTTP 503, expected 200".to_string())
        );
        assert!(matches!(
            judge(
                &kind,
                &Reading::Unreachable("connection refused".to_string())
            ),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn a_repeating_check_passes_only_after_its_time_with_probes_and_no_failure() {
        let kind = prometheus(None, Some(1.0));
        let mut tally = Tally::default();
        let five = Duration::from_secs(300);
        assert!(!tally.passed(&kind, five, five), "no probe yet");
        tally.count(&kind, Verdict::Pass);
        assert!(!tally.passed(&kind, Duration::from_secs(299), five));
        assert!(tally.passed(&kind, five, five));
        tally.count(&kind, Verdict::Fail("2 > max 1".to_string()));
        assert!(!tally.passed(&kind, five, five));
    }

    #[test]
    fn a_script_check_passes_once_it_exited_zero() {
        let kind = CheckKind::Command {
            run: vec!["./smoke.sh".to_string()],
            timeout: DEFAULT_COMMAND_TIMEOUT,
        };
        let mut tally = Tally::default();
        let failed = Reading::Exit {
            code: Some(3),
            last_line: "login page down".to_string(),
        };
        assert_eq!(
            judge(&kind, &failed),
            Verdict::Fail("exited with code 3: login page down".to_string())
        );
        tally.count(
            &kind,
            judge(
                &kind,
                &Reading::Exit {
                    code: Some(0),
                    last_line: String::new(),
                },
            ),
        );
        assert!(tally.passed(&kind, Duration::ZERO, Duration::from_secs(60)));
    }

    #[test]
    fn failure_reasons_name_the_check_what_was_seen_the_limit_and_the_step() {
        let check = CheckSpec {
            name: CheckSpec::default_name(&prometheus(None, Some(0.01)), 2),
            kind: prometheus(None, Some(0.01)),
            duration: DEFAULT_FOR,
            every: DEFAULT_EVERY,
        };
        let step = Step {
            number: 2,
            of: 3,
            weight: 50,
            phase: Phase::Deploy,
        };
        assert_eq!(
            failure_reason(&check, "0.034 > max 0.01", step, true),
            "prometheus check 2: 0.034 > max 0.01 at step 2/3 (50%)"
        );
    }
}
