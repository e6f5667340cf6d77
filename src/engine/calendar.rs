//! Release windows and freezes as the engine judges them: the start gate of a promotion and why
//! it waits. The time arithmetic is in `domain::window`; this knows which windows and freezes
//! apply to what, from the configuration.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::EngineError;
use crate::config::Config;
use crate::domain::command::FreezeTarget;
use crate::domain::promotion::Promotion;
use crate::domain::why::Blocker;
use crate::domain::window::{start_gate, Freeze, FreezeSource, Gate, Span, Window};
use crate::store::FreezeRecord;

/// `[[window]]`s by name and `[[freeze]]`s, built once from the configuration.
pub(super) struct Calendar {
    config: Arc<Config>,
    pub windows: BTreeMap<String, Window>,
    pub planned_freezes: Vec<Freeze>,
}

fn adhoc_freeze(record: &FreezeRecord) -> Freeze {
    Freeze {
        start: record.starts_at,
        end: record.ends_at,
        environments: vec![record.environment.clone()],
        reason: record.reason.clone(),
        source: FreezeSource::AdHoc,
    }
}

/// "production", or "every environment" for `*`.
pub(super) fn environment_words(environment: &str) -> String {
    if environment == Freeze::ALL {
        "every environment".to_string()
    } else {
        environment.to_string()
    }
}

/// ` (incident 7)` after a freeze, or nothing when it has no reason.
pub(super) fn parenthesized(reason: Option<&str>) -> String {
    reason.map(|r| format!(" ({r})")).unwrap_or_default()
}

pub(super) fn utc(at: DateTime<Utc>) -> String {
    at.format("%a %Y-%m-%d %H:%M UTC").to_string()
}

impl Calendar {
    pub fn new(config: Arc<Config>) -> Self {
        Calendar {
            windows: config
                .windows
                .iter()
                .map(|w| (w.name.clone(), Window::from(w)))
                .collect(),
            planned_freezes: config.freezes.iter().map(Freeze::from).collect(),
            config,
        }
    }

    /// The windows an environment of a service starts in (none: any time).
    pub fn windows_of(&self, service: &str, environment: &str) -> Vec<&Window> {
        self.config
            .service(service)
            .and_then(|s| s.environments.iter().find(|e| e.name == environment))
            .map(|env| {
                env.windows
                    .iter()
                    .filter_map(|name| self.windows.get(name))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The windows any service's `environment` starts in, each once.
    pub fn windows_in(&self, environment: &str) -> Vec<&Window> {
        let mut names: Vec<&str> = Vec::new();
        for service in &self.config.services {
            for env in service
                .environments
                .iter()
                .filter(|e| e.name == environment)
            {
                for window in &env.windows {
                    if !names.contains(&window.as_str()) {
                        names.push(window);
                    }
                }
            }
        }
        names
            .iter()
            .filter_map(|name| self.windows.get(*name))
            .collect()
    }

    /// The planned freezes plus the ad-hoc ones in force.
    pub fn freezes_with(&self, adhoc: &[FreezeRecord]) -> Vec<Freeze> {
        let mut freezes = self.planned_freezes.clone();
        freezes.extend(adhoc.iter().map(adhoc_freeze));
        freezes
    }

    /// May `promotion` start at `at`, given the ad-hoc freezes in force?
    pub fn gate(&self, promotion: &Promotion, adhoc: &[FreezeRecord], at: DateTime<Utc>) -> Gate {
        self.gate_of(&promotion.service, &promotion.environment, adhoc, at)
    }

    /// May a promotion of `service` into `environment` start at `at`?
    pub fn gate_of(
        &self,
        service: &str,
        environment: &str,
        adhoc: &[FreezeRecord],
        at: DateTime<Utc>,
    ) -> Gate {
        let windows = self.windows_of(service, environment);
        start_gate(environment, &windows, &self.freezes_with(adhoc), at)
    }

    /// Why a promotion waits at a gate, for its card and for `why`; `None` when it may start.
    pub fn gate_blocker(
        &self,
        (service, environment): (&str, &str),
        gate: &Gate,
        adhoc: &[FreezeRecord],
        at: DateTime<Utc>,
    ) -> Option<Blocker> {
        match gate {
            Gate::Open { .. } => None,
            Gate::OutsideWindow { next_opening } => Some(Blocker::Window {
                next_opening: next_opening
                    .as_ref()
                    .map(|span| self.opening_words(service, environment, span)),
            }),
            Gate::Frozen { until, reason } => Some(Blocker::Freeze {
                environment: environment.to_string(),
                until: utc(*until),
                reason: reason.clone(),
                set_by: self.freezers(environment, adhoc, at),
            }),
        }
    }

    /// Who set the freezes covering `environment` at `at`: people, or bot.toml.
    fn freezers(
        &self,
        environment: &str,
        adhoc: &[FreezeRecord],
        at: DateTime<Utc>,
    ) -> Vec<String> {
        let mut by: Vec<String> = Vec::new();
        let planned = self
            .planned_freezes
            .iter()
            .any(|f| f.covers(environment, at));
        let people = adhoc
            .iter()
            .filter(|record| adhoc_freeze(record).covers(environment, at))
            .map(|record| record.created_by.clone());
        for who in people.chain(planned.then(|| "bot.toml".to_string())) {
            if !by.contains(&who) {
                by.push(who);
            }
        }
        by
    }

    /// Why `promotion` must wait at `at`; `None`: it may start. An admin's `--force` passes every
    /// gate; a hotfix passes closed windows but never a freeze.
    pub fn must_wait(
        &self,
        promotion: &Promotion,
        adhoc: &[FreezeRecord],
        at: DateTime<Utc>,
    ) -> Option<Blocker> {
        if promotion.force_reason.is_some() {
            return None;
        }
        let gate = self.gate(promotion, adhoc, at);
        if promotion.hotfix_reason.is_some() && !matches!(gate, Gate::Frozen { .. }) {
            return None;
        }
        self.gate_blocker(
            (&promotion.service, &promotion.environment),
            &gate,
            adhoc,
            at,
        )
    }

    /// `prod-window opens Tue 2026-11-24 14:00 CET (13:00 UTC)`.
    fn opening_words(&self, service: &str, environment: &str, span: &Span) -> String {
        let windows = self.windows_of(service, environment);
        let window = windows
            .iter()
            .find(|w| w.next_opening(span.start - chrono::Duration::seconds(1)) == Some(*span))
            .or(windows.first());
        match window {
            Some(window) => format!("{} opens {}", window.name(), window.format_time(span.start)),
            None => format!("next opening {}", utc(span.start)),
        }
    }

    /// Every environment name of every service, in pipeline order, once each.
    pub fn environment_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for service in &self.config.services {
            for env in &service.environments {
                if !names.contains(&env.name) {
                    names.push(env.name.clone());
                }
            }
        }
        names
    }

    /// The environment a freeze names (`*` for all), if there is one by that name.
    pub fn freeze_environment(&self, target: &FreezeTarget) -> Result<String, EngineError> {
        match target {
            FreezeTarget::All => Ok(Freeze::ALL.to_string()),
            FreezeTarget::Environment(name) => {
                if self.environment_names().iter().any(|e| e == name) {
                    Ok(name.clone())
                } else {
                    Err(EngineError::not_found(format!(
                        "no environment `{name}`; known: {} (or `all`)",
                        self.environment_names().join(", ")
                    )))
                }
            }
        }
    }
}
