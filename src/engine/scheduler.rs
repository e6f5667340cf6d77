//! The scheduler: window announcements, openings and closings, freeze announcements and
//! `[[schedule]]` commands, each fired once through a unique (name, event, time) row; queued
//! promotions started when their gate opens; announcements sent from the outbox.
//!
//! It runs on the engine's clock from the housekeeping loop, so tests drive time instead of
//! sleeping. Each tick looks for occurrences since the last tick whose every occurrence fired,
//! but never more than [`LATE_LIMIT`] back: an occurrence that failed (its database write, its
//! command) is tried again on the next ticks while it is less than that overdue, and one missed
//! by more (the bot was down) is dropped, not announced late. Each occurrence fires or fails on
//! its own. Queued promotions do not depend on occurrences: they start whenever a tick finds
//! their gate open.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::announcer::{channels_of, Announcer};
use super::calendar::{parenthesized, utc, Calendar};
use super::clock::Time;
use super::commands::Commands;
use super::ledger::Ledger;
use super::outbox::chrono_of;
use super::{EngineError, ErrorKind};
use crate::config::{Config, ScheduleConfig};
use crate::domain::duration::format_duration;
use crate::domain::identity::{Actor, Identity};
use crate::domain::platform::ChatPlatform;
use crate::domain::promotion::{Promotion, PromotionState};
use crate::domain::window::{announcement_times, occurrences_after, Freeze, Span, Window};
use crate::store::{Store, StoreError};

/// An occurrence more overdue than this is skipped rather than announced late.
pub const LATE_LIMIT: Duration = Duration::from_secs(300);

pub(super) struct Scheduler {
    pub config: Arc<Config>,
    pub store: Store,
    pub time: Time,
    pub calendar: Arc<Calendar>,
    pub announcer: Announcer,
    pub ledger: Ledger,
    pub commands: Arc<Commands>,
    /// The previous tick (`None` before the first).
    pub since: Mutex<Option<DateTime<Utc>>>,
}

impl Scheduler {
    /// One scheduler tick: fire what fell due since the last settled tick, then start what may
    /// start.
    pub async fn tick(&self) {
        let now = self.time.now();
        let earliest = now - chrono_of(LATE_LIMIT);
        let since = match self.since.lock() {
            Ok(settled) => settled.map_or(earliest, |at| at.max(earliest)),
            Err(_) => return,
        };
        if since < now && !self.fire_due(since, now).await {
            // Something failed: the next tick looks from the same point again.
            tracing::warn!("scheduler: an occurrence failed; trying again on the next tick");
        } else if let Ok(mut settled) = self.since.lock() {
            *settled = Some(now);
        }
        if let Err(e) = self.start_queued(now).await {
            tracing::error!(error = %e, "scheduler: could not start queued promotions");
        }
    }

    /// Fires every occurrence in `(since, now]` that has not fired; `false` if any failed.
    async fn fire_due(&self, since: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let mut settled = true;
        for (name, window) in &self.calendar.windows {
            settled &= self.fire_window(name, window, since, now).await;
        }
        settled &= self.fire_freezes(since, now).await;
        settled &= self.fire_schedules(since, now).await;
        settled
    }

    async fn fire_window(
        &self,
        name: &str,
        window: &Window,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> bool {
        let due = |at: DateTime<Utc>| since < at && at <= now;
        let config = self.config.windows.iter().find(|w| w.name == name);
        let leads = config
            .map(|w| w.announce_before.clone())
            .unwrap_or_default();
        let occurrence = format!("window:{name}");
        let channels = self.announcer.window_channels(name);
        let mut settled = true;
        for span in spans_around(window, &leads, since, now) {
            for (lead, at) in announcement_times(&span, &leads) {
                if due(at) {
                    let event = format!("announce:{}", format_duration(lead));
                    let text = format!(
                        "⏰ {name} opens in {}: {} until {}.",
                        format_duration(lead),
                        window.format_time(span.start),
                        window.format_time(span.end)
                    );
                    let fired = self
                        .fire_announcement(&occurrence, &event, at, &channels, &text)
                        .await;
                    settled &= fired_or_logged(fired, &occurrence, &event);
                }
            }
            if due(span.start) {
                let fired = match self.opening_text(name, window, &span).await {
                    Ok(text) => {
                        self.fire_announcement(&occurrence, "open", span.start, &channels, &text)
                            .await
                    }
                    Err(error) => Err(error),
                };
                settled &= fired_or_logged(fired, &occurrence, "open");
            }
            if due(span.end) {
                let next = window
                    .next_opening(span.end)
                    .map(|next| window.format_time(next.start))
                    .unwrap_or_else(|| "none scheduled".to_string());
                let text = format!("🔴 {name} is closed; next opening {next}.");
                let fired = self
                    .fire_announcement(&occurrence, "close", span.end, &channels, &text)
                    .await;
                settled &= fired_or_logged(fired, &occurrence, "close");
            }
        }
        settled
    }

    async fn opening_text(
        &self,
        name: &str,
        window: &Window,
        span: &Span,
    ) -> Result<String, EngineError> {
        let queued: Vec<String> = self
            .store
            .queued_promotions()
            .await?
            .iter()
            .filter(|p| {
                self.calendar
                    .windows_of(&p.service, &p.environment)
                    .iter()
                    .any(|w| w.name() == name)
            })
            .map(|p| format!("{} (by {})", p.describe(), p.requested_by))
            .collect();
        let queue = if queued.is_empty() {
            "Nothing is queued.".to_string()
        } else {
            format!("Starting the queue: {}.", queued.join(", "))
        };
        Ok(format!(
            "🟢 {name} is open until {}. {queue}",
            window.format_time(span.end)
        ))
    }

    async fn fire_freezes(&self, since: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let due = |at: DateTime<Utc>| since < at && at <= now;
        let mut settled = true;
        for (index, freeze) in self.calendar.planned_freezes.iter().enumerate() {
            let name = format!("freeze:planned:{index}");
            let channels = self.announcer.freeze_channels(freeze);
            let envs = freeze.environments.join(", ");
            let why = parenthesized(freeze.reason.as_deref());
            if due(freeze.start) {
                let text = format!(
                    "🧊 {envs} frozen until {}{why}, as planned in bot.toml.",
                    utc(freeze.end)
                );
                let fired = self
                    .fire_announcement(&name, "set", freeze.start, &channels, &text)
                    .await;
                settled &= fired_or_logged(fired, &name, "set");
            }
            if due(freeze.end) {
                let text = format!("🌤️ the planned freeze of {envs}{why} is over.");
                let fired = self
                    .fire_announcement(&name, "lifted", freeze.end, &channels, &text)
                    .await;
                settled &= fired_or_logged(fired, &name, "lifted");
            }
        }
        let ended = self.store.freezes_ended(since, now).await;
        let ended = match ended {
            Ok(ended) => ended,
            Err(error) => return fired_or_logged(Err(error.into()), "freezes", "lifted"),
        };
        for freeze in ended {
            let text = format!(
                "🌤️ the freeze of {} is over{}.",
                if freeze.environment == Freeze::ALL {
                    "every environment"
                } else {
                    &freeze.environment
                },
                parenthesized(freeze.reason.as_deref())
            );
            let channels = self.announcer.environment_channels(&freeze.environment);
            let name = format!("freeze:{}", freeze.id);
            let fired = self
                .fire_announcement(&name, "lifted", freeze.ends_at, &channels, &text)
                .await;
            settled &= fired_or_logged(fired, &name, "lifted");
        }
        settled
    }

    /// Records the occurrence and queues its announcement in one transaction: it fires once.
    async fn fire_announcement(
        &self,
        name: &str,
        event: &str,
        at: DateTime<Utc>,
        channels: &[(ChatPlatform, String)],
        text: &str,
    ) -> Result<(), EngineError> {
        let mut tx = self.store.begin().await?;
        if tx
            .record_occurrence(name, event, at, self.time.now())
            .await?
        {
            self.announcer.announce(&mut tx, channels, text).await?;
            tx.commit().await?;
            self.ledger.wake_workers();
        }
        Ok(())
    }

    async fn fire_schedules(&self, since: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let mut settled = true;
        for schedule in &self.config.schedules {
            let due = occurrences_after(&schedule.cron, schedule.timezone, since)
                .take_while(|at| *at <= now);
            for at in due {
                let fired = self.run_schedule(schedule, at, now).await;
                settled &= fired_or_logged(fired, &schedule.name, "run");
            }
        }
        settled
    }

    /// Runs one occurrence of a `[[schedule]]` once, and posts its outcome. A command the
    /// database failed gives its occurrence back, to be run on a later tick.
    async fn run_schedule(
        &self,
        schedule: &ScheduleConfig,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let name = format!("schedule:{}", schedule.name);
        let mut tx = self.store.begin().await?;
        let first = tx.record_occurrence(&name, "run", at, now).await?;
        tx.commit().await?;
        if !first {
            return Ok(());
        }
        let actor = Actor::new(Identity::new("schedule", &schedule.name))
            .with_roles(schedule.roles.clone());
        let outcome = match self
            .commands
            .execute(&actor, schedule.command.clone(), None)
            .await
        {
            Ok(reply) => reply.to_text(),
            Err(error) if error.kind == ErrorKind::Internal => {
                self.store.forget_occurrence(&name, "run", at).await?;
                return Err(error);
            }
            Err(error) => format!("refused: {}", error.message),
        };
        tracing::info!(schedule = %schedule.name, %outcome, "ran a scheduled command");
        let text = format!("🗓️ {}: {}", schedule.name, outcome);
        let mut tx = self.store.begin().await?;
        self.announcer
            .announce(&mut tx, &channels_of(&schedule.channels), &text)
            .await?;
        tx.commit().await?;
        self.ledger.wake_workers();
        Ok(())
    }

    /// Starts queued promotions whose gate is open, oldest first, one per environment at a time;
    /// the rest get their card's "waiting for …" brought up to date.
    async fn start_queued(&self, now: DateTime<Utc>) -> Result<(), EngineError> {
        let queued = self.store.queued_promotions().await?;
        if queued.is_empty() {
            return Ok(());
        }
        let adhoc = self.store.active_freezes(now).await?;
        let mut busy: HashSet<String> = self.store.busy_environments().await?.into_iter().collect();
        for promotion in queued {
            if let Some(blocker) = self.calendar.must_wait(&promotion, &adhoc, now) {
                self.refresh_wait_reason(&promotion, &blocker.to_string())
                    .await?;
                continue;
            }
            if !busy.insert(promotion.environment.clone()) {
                continue;
            }
            let mut tx = self.store.begin().await?;
            if tx
                .enqueue_deploy(promotion.id, self.time.real_now())
                .await?
            {
                tx.commit().await?;
                self.ledger.wake_workers();
            }
        }
        Ok(())
    }

    /// Promotions waiting in `queued` whose gate is closed get their card's reason refreshed.
    async fn refresh_wait_reason(
        &self,
        promotion: &Promotion,
        reason: &str,
    ) -> Result<(), StoreError> {
        if promotion.state() != PromotionState::Queued || promotion.reason() == Some(reason) {
            return Ok(());
        }
        let mut tx = self.store.begin().await?;
        tx.set_reason(promotion.id, reason, self.time.now()).await?;
        self.ledger.touch_cards(&mut tx, promotion.id).await?;
        tx.commit().await?;
        self.ledger.wake_workers();
        Ok(())
    }
}

/// Whether an occurrence fired; a failure is logged with what failed.
fn fired_or_logged(fired: Result<(), EngineError>, name: &str, event: &str) -> bool {
    match fired {
        Ok(()) => true,
        Err(error) => {
            tracing::error!(%error, occurrence = name, event, "scheduler: could not fire");
            false
        }
    }
}

/// The spans of `window` whose announcements, opening or closing may fall in `(since, now]`.
fn spans_around(
    window: &Window,
    leads: &[Duration],
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<Span> {
    let longest_lead = leads.iter().max().copied().unwrap_or_default();
    let reach =
        chrono_of(window.duration()) + chrono_of(longest_lead) + chrono::Duration::seconds(1);
    let mut after = since - reach;
    let mut spans = Vec::new();
    while let Some(span) = window.next_opening(after) {
        if span.start - chrono_of(longest_lead) > now || spans.len() > 1_000 {
            break;
        }
        after = span.start;
        spans.push(span);
    }
    if let Some(open) = window.open_at(since) {
        if !spans.contains(&open) {
            spans.insert(0, open);
        }
    }
    spans
}
