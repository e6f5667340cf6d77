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
        let windows = self.windows_of(&promotion.service, &promotion.environment);
        start_gate(
            &promotion.environment,
            &windows,
            &self.freezes_with(adhoc),
            at,
        )
    }

    /// Why a promotion waits, for its card; `None` when it may start.
    pub fn wait_reason(&self, promotion: &Promotion, gate: &Gate) -> Option<String> {
        match gate {
            Gate::Open { .. } => None,
            Gate::OutsideWindow {
                next_opening: Some(span),
            } => Some(format!(
                "waiting for the release window: {}; it starts by itself then",
                self.opening_words(promotion, span)
            )),
            Gate::OutsideWindow { next_opening: None } => Some(
                "waiting for a release window, but none of its windows opens again; an admin can promote with --force".to_string(),
            ),
            Gate::Frozen { until, reason } => Some(format!(
                "{} is frozen until {}{}; it starts by itself once the freeze ends and a window is open",
                promotion.environment,
                utc(*until),
                parenthesized(reason.as_deref())
            )),
        }
    }

    /// Why `promotion` must wait at `at`, unless an admin forced it; `None`: it may start.
    pub fn must_wait(
        &self,
        promotion: &Promotion,
        adhoc: &[FreezeRecord],
        at: DateTime<Utc>,
    ) -> Option<String> {
        if promotion.force_reason.is_some() {
            return None;
        }
        self.wait_reason(promotion, &self.gate(promotion, adhoc, at))
    }

    /// `prod-window opens Tue 2026-11-24 14:00 CET (13:00 UTC)`.
    fn opening_words(&self, promotion: &Promotion, span: &Span) -> String {
        let windows = self.windows_of(&promotion.service, &promotion.environment);
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
