//! The `freeze`, `unfreeze` and `windows` commands: ad-hoc freezes (admins only), announced in
//! the channels of the environments they cover, and the report of windows, freezes and the queue.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::announcer::Announcer;
use super::calendar::{environment_words, parenthesized, utc, Calendar};
use super::clock::Time;
use super::ledger::Ledger;
use super::promotions::forbidden;
use super::EngineError;
use crate::config::Config;
use crate::domain::audit::AuditKind;
use crate::domain::command::FreezeTarget;
use crate::domain::duration::format_duration;
use crate::domain::identity::Actor;
use crate::domain::permission::{authorize, Action};
use crate::domain::promotion::Promotion;
use crate::domain::window::{start_gate, Freeze, FreezeSource, Gate};
use crate::store::Store;

pub(super) struct Freezes {
    pub config: Arc<Config>,
    pub store: Store,
    pub time: Time,
    pub calendar: Arc<Calendar>,
    pub announcer: Announcer,
    pub ledger: Ledger,
}

impl Freezes {
    pub async fn freeze(
        &self,
        actor: &Actor,
        target: &FreezeTarget,
        duration: Duration,
        reason: Option<&str>,
    ) -> Result<String, EngineError> {
        authorize(&self.config.roles, actor, Action::Freeze).map_err(forbidden)?;
        let environment = self.calendar.freeze_environment(target)?;
        let now = self.time.now();
        // The parser bounds durations; checked all the same, so no input can panic here.
        let ends = chrono::Duration::from_std(duration)
            .ok()
            .and_then(|length| now.checked_add_signed(length))
            .ok_or_else(|| {
                EngineError::bad_input("that freeze is too long; freeze for 366d at most")
            })?;
        let mut tx = self.store.begin().await?;
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
        tx.audit(None, &actor.identity, AuditKind::Freeze, &text, now)
            .await?;
        self.announcer
            .announce(
                &mut tx,
                &self.announcer.environment_channels(&freeze.environment),
                &text,
            )
            .await?;
        tx.commit().await?;
        self.ledger.wake_workers();
        Ok(text)
    }

    pub async fn unfreeze(
        &self,
        actor: &Actor,
        target: &FreezeTarget,
    ) -> Result<String, EngineError> {
        authorize(&self.config.roles, actor, Action::Unfreeze).map_err(forbidden)?;
        let environment = self.calendar.freeze_environment(target)?;
        let now = self.time.now();
        let mut tx = self.store.begin().await?;
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
            .calendar
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
        tx.audit(None, &actor.identity, AuditKind::Unfreeze, &text, now)
            .await?;
        self.announcer
            .announce(
                &mut tx,
                &self.announcer.environment_channels(&environment),
                &text,
            )
            .await?;
        tx.commit().await?;
        self.ledger.wake_workers();
        Ok(text)
    }

    /// `/release windows [env]`: open or closed now, the next openings, freezes, the queue.
    pub async fn windows_report(&self, environment: Option<&str>) -> Result<String, EngineError> {
        let names = match environment {
            Some(name) => {
                vec![self
                    .calendar
                    .freeze_environment(&FreezeTarget::Environment(name.to_string()))?]
            }
            None => self.calendar.environment_names(),
        };
        let now = self.time.now();
        let adhoc = self.store.active_freezes(now).await?;
        let freezes = self.calendar.freezes_with(&adhoc);
        let queued = self.store.queued_promotions().await?;
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
        queued: &[Promotion],
        now: DateTime<Utc>,
    ) -> String {
        let windows = self.calendar.windows_in(environment);
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
                promotion.describe(),
                promotion.requested_by
            ));
        }
        text
    }
}
