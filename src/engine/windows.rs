//! Release windows and freezes as the engine applies them: the start gate, `queued`, and the
//! `windows`, `freeze` and `unfreeze` commands. The time arithmetic is in `domain::window`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{describe, Engine, EngineError};
use crate::config::Config;
use crate::domain::command::FreezeTarget;
use crate::domain::duration::format_duration;
use crate::domain::identity::{Actor, ADMINS};
use crate::domain::promotion::{PromotionEvent, PromotionState};
use crate::domain::window::{start_gate, Freeze, FreezeSource, Gate, Span, Window};
use crate::store::{FreezeRecord, JobKind, PromotionRecord, StoreError, Tx};

/// `[[window]]`s by name and `[[freeze]]`s, built once from the configuration.
pub(super) struct Calendar {
    pub windows: BTreeMap<String, Window>,
    pub planned_freezes: Vec<Freeze>,
}

impl Calendar {
    pub fn from_config(config: &Config) -> Self {
        Calendar {
            windows: config
                .windows
                .iter()
                .map(|w| (w.name.clone(), Window::from(w)))
                .collect(),
            planned_freezes: config.freezes.iter().map(Freeze::from).collect(),
        }
    }
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
fn environment_words(environment: &str) -> String {
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

impl Engine {
    fn calendar(&self) -> &Calendar {
        &self.inner.calendar
    }

    /// The windows an environment of a service starts in (none: any time).
    pub(super) fn windows_of(&self, service: &str, environment: &str) -> Vec<&Window> {
        self.service(service)
            .ok()
            .and_then(|s| s.environments.iter().find(|e| e.name == environment))
            .map(|env| {
                env.windows
                    .iter()
                    .filter_map(|name| self.calendar().windows.get(name))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn freezes_with(&self, adhoc: &[FreezeRecord]) -> Vec<Freeze> {
        let mut freezes = self.calendar().planned_freezes.clone();
        freezes.extend(adhoc.iter().map(adhoc_freeze));
        freezes
    }

    /// May `promotion` start at `at`, given the ad-hoc freezes in force?
    pub(super) fn gate(
        &self,
        promotion: &PromotionRecord,
        adhoc: &[FreezeRecord],
        at: DateTime<Utc>,
    ) -> Gate {
        let windows = self.windows_of(&promotion.service, &promotion.environment);
        start_gate(
            &promotion.environment,
            &windows,
            &self.freezes_with(adhoc),
            at,
        )
    }

    /// Why a promotion waits, for its card; `None` when it may start.
    pub(super) fn wait_reason(&self, promotion: &PromotionRecord, gate: &Gate) -> Option<String> {
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

    /// `prod-window opens Tue 2026-11-24 14:00 CET (13:00 UTC)`.
    fn opening_words(&self, promotion: &PromotionRecord, span: &Span) -> String {
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

    /// An approved promotion starts now (a deploy job) or waits in `queued` with the reason on its
    /// card. `--force` skips windows and freezes.
    pub(super) async fn start_or_queue(
        &self,
        tx: &mut Tx,
        promotion: PromotionRecord,
    ) -> Result<PromotionRecord, EngineError> {
        let now = self.now();
        if promotion.force_reason.is_none() {
            let adhoc = tx.active_freezes(now).await?;
            let gate = self.gate(&promotion, &adhoc, now);
            if let Some(reason) = self.wait_reason(&promotion, &gate) {
                return self
                    .apply(
                        tx,
                        &promotion,
                        PromotionEvent::WaitForWindow,
                        &super::bot_identity(),
                        &reason,
                    )
                    .await;
            }
        }
        tx.enqueue_job(JobKind::Deploy, promotion.id, super::wall_now())
            .await?;
        Ok(promotion)
    }

    // ---- commands ----

    fn require_admin(&self, actor: &Actor, action: &str) -> Result<(), EngineError> {
        if self.config().roles.holds(actor, ADMINS) {
            Ok(())
        } else {
            Err(EngineError::forbidden(format!(
                "only `{ADMINS}` may {action}; ask one of them"
            )))
        }
    }

    fn freeze_environment(&self, target: &FreezeTarget) -> Result<String, EngineError> {
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

    /// Every environment name of every service, in pipeline order, once each.
    pub(super) fn environment_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for service in &self.config().services {
            for env in &service.environments {
                if !names.contains(&env.name) {
                    names.push(env.name.clone());
                }
            }
        }
        names
    }

    pub(super) async fn freeze(
        &self,
        actor: &Actor,
        target: &FreezeTarget,
        duration: Duration,
        reason: Option<&str>,
    ) -> Result<String, EngineError> {
        self.require_admin(actor, "freeze environments")?;
        let environment = self.freeze_environment(target)?;
        let now = self.now();
        let ends = now
            + chrono::Duration::from_std(duration)
                .map_err(|_| EngineError::bad_input("that freeze is too long"))?;
        let mut tx = self.store().begin().await?;
        let freeze = tx
            .insert_freeze(&environment, now, ends, reason, &actor.identity)
            .await?;
        let text = format!(
            "🧊 {} is frozen for {} (until {}){}, by {}. Promotions approved meanwhile wait as queued; admins can --force.",
            environment_words(&environment),
            format_duration(duration),
            utc(ends),
            reason.map(|r| format!(": {r}")).unwrap_or_default(),
            actor.identity
        );
        tx.audit(None, &actor.identity, "freeze", &text, now)
            .await?;
        self.announce(
            &mut tx,
            &self.environment_channels(&freeze.environment),
            &text,
        )
        .await?;
        tx.commit().await?;
        self.notify_workers();
        Ok(text)
    }

    pub(super) async fn unfreeze(
        &self,
        actor: &Actor,
        target: &FreezeTarget,
    ) -> Result<String, EngineError> {
        self.require_admin(actor, "lift freezes")?;
        let environment = self.freeze_environment(target)?;
        let now = self.now();
        let mut tx = self.store().begin().await?;
        let only = (environment != Freeze::ALL).then_some(environment.as_str());
        let lifted = tx.lift_freezes(only, now, &actor.identity).await?;
        if lifted.is_empty() {
            return Err(EngineError::conflict(format!(
                "{} has no freeze set with /release freeze; see /release windows",
                environment_words(&environment)
            )));
        }
        let mut text = format!(
            "🌤️ the freeze of {} was lifted by {}.",
            environment_words(&environment),
            actor.identity
        );
        let still: Vec<Freeze> = self
            .freezes_with(&tx.active_freezes(now).await?)
            .into_iter()
            .filter(|f| {
                f.span().contains(now) && (only.is_none() || only.is_some_and(|e| f.applies_to(e)))
            })
            .collect();
        if let Some(freeze) = still.first() {
            let by = match freeze.source {
                FreezeSource::Configured => "a [[freeze]] in bot.toml",
                FreezeSource::AdHoc => "/release freeze all",
            };
            text.push_str(&format!(
                " It stays frozen until {} by {by}{}.",
                utc(freeze.end),
                parenthesized(freeze.reason.as_deref())
            ));
        }
        tx.audit(None, &actor.identity, "unfreeze", &text, now)
            .await?;
        self.announce(&mut tx, &self.environment_channels(&environment), &text)
            .await?;
        tx.commit().await?;
        self.notify_workers();
        Ok(text)
    }

    /// `/release windows [env]`: open or closed now, the next openings, freezes, the queue.
    pub(super) async fn windows_report(
        &self,
        environment: Option<&str>,
    ) -> Result<String, EngineError> {
        let names = match environment {
            Some(name) => {
                vec![self.freeze_environment(&FreezeTarget::Environment(name.to_string()))?]
            }
            None => self.environment_names(),
        };
        let now = self.now();
        let adhoc = self.store().active_freezes(now).await?;
        let freezes = self.freezes_with(&adhoc);
        let queued = self.store().queued_promotions().await?;
        let mut lines = Vec::new();
        for name in &names {
            lines.push(self.environment_report(name, &freezes, &queued, now));
        }
        Ok(lines.join("\n"))
    }

    fn environment_report(
        &self,
        environment: &str,
        freezes: &[Freeze],
        queued: &[PromotionRecord],
        now: DateTime<Utc>,
    ) -> String {
        let mut window_names: Vec<&str> = Vec::new();
        for service in &self.config().services {
            for env in service
                .environments
                .iter()
                .filter(|e| e.name == environment)
            {
                for window in &env.windows {
                    if !window_names.contains(&window.as_str()) {
                        window_names.push(window);
                    }
                }
            }
        }
        let windows: Vec<&Window> = window_names
            .iter()
            .filter_map(|n| self.calendar().windows.get(*n))
            .collect();
        let mut text = match start_gate(environment, &windows, freezes, now) {
            Gate::Open { closes_at: None } => format!("{environment}: open (no release windows)"),
            Gate::Open {
                closes_at: Some(end),
            } => format!("{environment}: open now, until {}", utc(end)),
            Gate::OutsideWindow { .. } => format!("{environment}: closed now"),
            Gate::Frozen { until, reason } => format!(
                "{environment}: frozen until {}{}",
                utc(until),
                parenthesized(reason.as_deref())
            ),
        };
        for window in &windows {
            let openings: Vec<String> = window
                .next_openings(now, 3)
                .iter()
                .map(|span| window.format_time(span.start))
                .collect();
            text.push_str(&format!(
                "\n  {} ({}, {}): next {}",
                window.name(),
                window.timezone(),
                format_duration(window.duration()),
                if openings.is_empty() {
                    "never".to_string()
                } else {
                    openings.join("; ")
                }
            ));
        }
        for freeze in freezes
            .iter()
            .filter(|f| f.applies_to(environment) && f.end > now)
        {
            text.push_str(&format!(
                "\n  freeze {} → {}{}",
                utc(freeze.start),
                utc(freeze.end),
                parenthesized(freeze.reason.as_deref())
            ));
        }
        for promotion in queued.iter().filter(|p| p.environment == environment) {
            text.push_str(&format!(
                "\n  queued: {} by {}",
                describe(promotion),
                promotion.requested_by
            ));
        }
        text
    }

    /// Promotions waiting in `queued` whose gate is closed get their card's reason refreshed.
    pub(super) async fn refresh_wait_reason(
        &self,
        promotion: &PromotionRecord,
        reason: &str,
    ) -> Result<(), StoreError> {
        if promotion.state != PromotionState::Queued || promotion.reason.as_deref() == Some(reason)
        {
            return Ok(());
        }
        let mut tx = self.store().begin().await?;
        tx.set_reason(promotion.id, reason, self.now()).await?;
        self.touch_cards(&mut tx, promotion.id).await?;
        tx.commit().await?;
        self.notify_workers();
        Ok(())
    }
}
