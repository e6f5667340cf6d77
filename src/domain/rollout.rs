//! How a promotion is rolled out (SPEC §5.1, §5.2): the strategy's plan of backend calls and
//! check gates, and what a failure leads to. Pure: the engine walks the plan and stores where it
//! is (the plan index), so a restart resumes a gate where it was.

use std::fmt;
use std::time::Duration;

use super::duration::format_duration;

/// `strategy = …` of an environment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Strategy {
    /// One backend call at 100 %.
    #[default]
    Direct,
    /// One backend call per weight (percent, rising, ending at 100); the checks gate for `pause`
    /// between steps.
    Canary { steps: Vec<u8>, pause: Duration },
    /// Phase `deploy` (beside the old version, no traffic), verify, phase `switch`; a failure
    /// before the switch calls phase `discard` instead of a rollback.
    BlueGreen,
}

impl Strategy {
    pub fn kind(&self) -> &'static str {
        match self {
            Strategy::Direct => "direct",
            Strategy::Canary { .. } => "canary",
            Strategy::BlueGreen => "blue_green",
        }
    }
}

/// `on_failure = …` of an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    #[default]
    Fail,
    Rollback,
}

impl OnFailure {
    pub const WORDS: [&'static str; 2] = ["fail", "rollback"];

    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "fail" => Some(OnFailure::Fail),
            "rollback" => Some(OnFailure::Rollback),
            _ => None,
        }
    }
}

/// What a backend call is asked to do (`SHIPMATE_PHASE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Deploy,
    Switch,
    Discard,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Deploy => "deploy",
            Phase::Switch => "switch",
            Phase::Discard => "discard",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One backend call: `SHIPMATE_STEP`/`SHIPMATE_STEPS`/`SHIPMATE_WEIGHT`/`SHIPMATE_PHASE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// 1-based.
    pub number: u32,
    pub of: u32,
    /// Percent of traffic the new version gets once this call succeeded.
    pub weight: u8,
    pub phase: Phase,
}

impl Step {
    /// The single call of a direct rollout.
    pub const FULL: Step = Step {
        number: 1,
        of: 1,
        weight: 100,
        phase: Phase::Deploy,
    };

    /// `step 2/3 (50%)`, the words failure reasons use.
    pub fn describe(&self) -> String {
        format!("step {}/{} ({}%)", self.number, self.of, self.weight)
    }
}

/// How long a gate's checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateLength {
    /// A canary pause: every check runs for this long (or until advanced).
    Pause(Duration),
    /// The final verification: each check runs for its own `for`.
    ChecksOwn,
}

/// One move of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Call the backend.
    Call(Step),
    /// Run the checks; `before_next` is the step that follows (a gate a pause may hold), `None`
    /// for the final verification after the last call.
    Gate {
        after: Step,
        length: GateLength,
        before_next: Option<Step>,
    },
}

/// The actions of one promotion's rollout, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub strategy_kind: &'static str,
    pub actions: Vec<Action>,
}

impl Plan {
    /// The plan for `strategy` with `has_checks`. A rollback runs the old, known version: a canary
    /// environment takes it back in one step (the failed version is live; no time for steps).
    pub fn new(strategy: &Strategy, has_checks: bool, rollback: bool) -> Plan {
        let mut actions = Vec::new();
        match strategy {
            Strategy::Canary { steps, pause } if !rollback => {
                let of = u32::try_from(steps.len()).unwrap_or(u32::MAX);
                let calls: Vec<Step> = (1..)
                    .zip(steps)
                    .map(|(number, weight)| Step {
                        number,
                        of,
                        weight: *weight,
                        phase: Phase::Deploy,
                    })
                    .collect();
                for (index, step) in calls.iter().enumerate() {
                    actions.push(Action::Call(*step));
                    match calls.get(index + 1) {
                        Some(next) => actions.push(Action::Gate {
                            after: *step,
                            length: GateLength::Pause(*pause),
                            before_next: Some(*next),
                        }),
                        None if has_checks => actions.push(final_gate(*step)),
                        None => {}
                    }
                }
            }
            Strategy::BlueGreen => {
                let deploy = Step {
                    number: 1,
                    of: 2,
                    weight: 0,
                    phase: Phase::Deploy,
                };
                let switch = Step {
                    number: 2,
                    of: 2,
                    weight: 100,
                    phase: Phase::Switch,
                };
                actions.push(Action::Call(deploy));
                if has_checks {
                    actions.push(Action::Gate {
                        after: deploy,
                        length: GateLength::ChecksOwn,
                        before_next: Some(switch),
                    });
                }
                actions.push(Action::Call(switch));
            }
            Strategy::Direct | Strategy::Canary { .. } => {
                actions.push(Action::Call(Step::FULL));
                if has_checks {
                    actions.push(final_gate(Step::FULL));
                }
            }
        }
        let strategy_kind = if rollback && matches!(strategy, Strategy::Canary { .. }) {
            Strategy::Direct.kind()
        } else {
            strategy.kind()
        };
        Plan {
            strategy_kind,
            actions,
        }
    }

    pub fn action(&self, index: usize) -> Option<Action> {
        self.actions.get(index).copied()
    }

    /// The index from which the promotion is `verifying` rather than `deploying`: the first gate
    /// that is a checks-own verification (blue-green's before the switch, or the final one).
    pub fn verifying_from(&self) -> Option<usize> {
        self.actions.iter().position(|action| {
            matches!(
                action,
                Action::Gate {
                    length: GateLength::ChecksOwn,
                    ..
                }
            )
        })
    }

    /// Whether the new version still takes no traffic at `index`: a failure there is undone by
    /// `discard`, not by a rollback (blue-green before its switch has completed).
    pub fn discards_at(&self, index: usize) -> bool {
        self.strategy_kind == Strategy::BlueGreen.kind()
            && self.actions[..index.min(self.actions.len())]
                .iter()
                .all(|action| !matches!(action, Action::Call(step) if step.phase == Phase::Switch))
            && !matches!(self.action(index), Some(Action::Call(step)) if step.phase == Phase::Switch)
    }

    /// The step a discard call uses (blue-green's phase `discard`).
    pub fn discard_step() -> Step {
        Step {
            number: 1,
            of: 2,
            weight: 0,
            phase: Phase::Discard,
        }
    }

    /// More than one backend call: each step is audited and named on the card.
    pub fn is_multi_step(&self) -> bool {
        self.actions
            .iter()
            .filter(|a| matches!(a, Action::Call(_)))
            .count()
            > 1
    }

    /// Whether a step is left after the gate at `index` (what pause holds).
    pub fn has_next_step(&self, index: usize) -> bool {
        self.actions
            .iter()
            .skip(index + 1)
            .any(|action| matches!(action, Action::Call(_)))
    }
}

fn final_gate(after: Step) -> Action {
    Action::Gate {
        after,
        length: GateLength::ChecksOwn,
        before_next: None,
    }
}

/// The card's progress line for a rollout at a gate: `canary 2/3 · 50% · next step at 14:05 (in
/// 4m)` or `verifying: 1m40s of 5m`. `clock` is the local time of day the next step is due.
pub fn gate_line(
    strategy_kind: &str,
    action: Action,
    elapsed: Duration,
    length: Duration,
    paused_by: Option<&str>,
    clock: &str,
) -> String {
    let Action::Gate {
        after, before_next, ..
    } = action
    else {
        return String::new();
    };
    let remaining = length.saturating_sub(elapsed);
    let head = match strategy_kind {
        "canary" => format!("canary {}/{} · {}%", after.number, after.of, after.weight),
        "blue_green" => "blue-green · new version beside the old, no traffic yet".to_string(),
        _ => String::new(),
    };
    let tail = match (before_next, paused_by) {
        (Some(next), Some(who)) => format!(
            "paused by {who} before step {}/{}; checks keep running",
            next.number, next.of
        ),
        (Some(_), None) if remaining.is_zero() => "next step now".to_string(),
        (Some(_), None) => format!(
            "next step at {clock} (in {})",
            format_duration(round_up_minute(remaining))
        ),
        (None, _) => format!(
            "verifying: {} of {}",
            format_duration(elapsed.min(length)),
            format_duration(length)
        ),
    };
    if head.is_empty() {
        tail
    } else {
        format!("{head} · {tail}")
    }
}

/// Whole minutes for countdowns over a minute (the card refreshes every 30 s, not every second).
fn round_up_minute(remaining: Duration) -> Duration {
    let seconds = remaining.as_secs();
    if seconds < 60 {
        return Duration::from_secs(seconds.max(1));
    }
    Duration::from_secs(seconds.div_ceil(60) * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary() -> Strategy {
        Strategy::Canary {
            steps: vec![10, 50, 100],
            pause: Duration::from_secs(300),
        }
    }

    #[test]
    fn a_canary_calls_once_per_step_with_a_pause_gate_between_and_verifies_after_the_last() {
        let plan = Plan::new(&canary(), true, false);
        let shape: Vec<String> = plan
            .actions
            .iter()
            .map(|action| match action {
                Action::Call(step) => format!("call {} {}%", step.number, step.weight),
                Action::Gate {
                    length: GateLength::Pause(p),
                    ..
                } => format!("pause {}", p.as_secs()),
                Action::Gate { .. } => "verify".to_string(),
            })
            .collect();
        assert_eq!(
            shape,
            [
                "call 1 10%",
                "pause 300",
                "call 2 50%",
                "pause 300",
                "call 3 100%",
                "verify"
            ]
        );
        assert_eq!(plan.verifying_from(), Some(5));
        assert!(plan.has_next_step(1));
        assert!(!plan.has_next_step(5));
    }

    #[test]
    fn a_canary_without_checks_still_pauses_between_steps_and_ends_at_the_last_call() {
        let plan = Plan::new(&canary(), false, false);
        assert_eq!(plan.actions.len(), 5);
        assert_eq!(plan.verifying_from(), None);
    }

    #[test]
    fn a_rollback_of_a_canary_environment_is_one_full_step() {
        let plan = Plan::new(&canary(), true, true);
        assert_eq!(
            plan.actions,
            [Action::Call(Step::FULL), final_gate(Step::FULL)]
        );
        assert_eq!(plan.strategy_kind, "direct");
    }

    #[test]
    fn blue_green_discards_before_the_switch_and_rolls_back_after() {
        let plan = Plan::new(&Strategy::BlueGreen, true, false);
        assert_eq!(plan.actions.len(), 3);
        assert!(plan.discards_at(0), "deploy phase failed");
        assert!(plan.discards_at(1), "verification before the switch failed");
        assert!(
            !plan.discards_at(2),
            "the switch itself failed: traffic may have moved"
        );
        assert_eq!(plan.verifying_from(), Some(1));
        assert!(!Plan::new(&canary(), true, false).discards_at(0));
    }

    #[test]
    fn a_direct_plan_without_checks_is_one_call() {
        let plan = Plan::new(&Strategy::Direct, false, false);
        assert_eq!(plan.actions, [Action::Call(Step::FULL)]);
        assert_eq!(plan.verifying_from(), None, "no checks, no verification");
    }

    #[test]
    fn gate_lines_show_the_step_and_a_countdown_in_minutes() {
        let plan = Plan::new(&canary(), true, false);
        let gate = plan.action(3).expect("second pause");
        let line = gate_line(
            "canary",
            gate,
            Duration::from_secs(60),
            Duration::from_secs(300),
            None,
            "14:05",
        );
        assert_eq!(line, "canary 2/3 · 50% · next step at 14:05 (in 4m)");
        let paused = gate_line(
            "canary",
            gate,
            Duration::from_secs(60),
            Duration::from_secs(300),
            Some("@bob"),
            "14:05",
        );
        assert_eq!(
            paused,
            "canary 2/3 · 50% · paused by @bob before step 3/3; checks keep running"
        );
        let verify = gate_line(
            "direct",
            plan.action(5).expect("final gate"),
            Duration::from_secs(100),
            Duration::from_secs(300),
            None,
            "",
        );
        assert_eq!(verify, "verifying: 1m40s of 5m");
    }
}
