//! What the web pages read (SPEC §9): the overview of services, environments, the queue, windows
//! and freezes; one promotion with its rollout steps, check results, deploy log and backend
//! links; the audit log filtered and paged. Engine-owned types, built from the store's records.

use super::governance::{asked_of, ChecklistLine};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::calendar::Calendar;
use super::card::RolloutStand;
use super::clock::Time;
use super::reply::ServiceStatus;
use super::view::{PromotionDetail, Reads};
use super::EngineError;
use crate::config::Config;
use crate::domain::audit::AuditEvent;
use crate::domain::promotion::{Promotion, PromotionState};
use crate::domain::rollout::{Action, GateLength, Phase, Step};
use crate::domain::window::{start_gate, Freeze, Gate};
use crate::store::{AuditFilter, RolloutRecord, Store, TallyRecord};

/// Openings of a window shown ahead.
const OPENINGS_SHOWN: usize = 3;
/// Audit entries on one page.
pub const AUDIT_PAGE: u32 = 50;

/// The front page: what runs where, what is active, the release calendar.
#[derive(Debug, Clone)]
pub struct Overview {
    pub now: DateTime<Utc>,
    pub services: Vec<ServiceStatus>,
    pub environments: Vec<EnvironmentCalendar>,
    /// Freezes in force now or later (planned and ad hoc).
    pub freezes: Vec<Freeze>,
}

/// Whether promotions may start in an environment now, and when its windows open next.
#[derive(Debug, Clone)]
pub struct EnvironmentCalendar {
    pub environment: String,
    pub gate: Gate,
    pub windows: Vec<WindowOpenings>,
}

#[derive(Debug, Clone)]
pub struct WindowOpenings {
    pub name: String,
    pub duration: Duration,
    /// The next openings in the window's zone with UTC alongside.
    pub next: Vec<String>,
}

/// One promotion as its page shows it.
#[derive(Debug, Clone)]
pub struct PromotionPage {
    pub now: DateTime<Utc>,
    pub detail: PromotionDetail,
    /// The environment the version comes from, if any.
    pub from_environment: Option<String>,
    /// The last deploy output lines, oldest first.
    pub log: Vec<String>,
    pub rollout: Option<RolloutReport>,
    /// The environment's checklist with who ticked what (empty: it has none).
    pub checklist: Vec<ChecklistLine>,
}

/// Where a promotion's rollout went: its steps, the results of its checks, who steered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutReport {
    pub strategy: &'static str,
    /// The card's line while it runs (`canary 2/3 · 50% · next step in 3m12s`).
    pub line: Option<String>,
    pub steps: Vec<StepReport>,
    pub checks: Vec<CheckReport>,
    pub paused_by: Option<String>,
    pub abort_by: Option<String>,
    pub abort_reason: Option<String>,
    pub rolled_back_by: Option<i64>,
    /// What the last remote backend call said, and the http(s) links it gave (a GitHub run, a
    /// status URL, an Argo CD application).
    pub backend_status: Option<String>,
    pub backend_links: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepReport {
    pub label: String,
    pub progress: StepProgress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepProgress {
    Done,
    Running,
    /// Where the rollout stopped (failed, aborted, interrupted).
    Stopped,
    Pending,
}

impl StepProgress {
    pub fn as_str(self) -> &'static str {
        match self {
            StepProgress::Done => "done",
            StepProgress::Running => "running",
            StepProgress::Stopped => "stopped",
            StepProgress::Pending => "pending",
        }
    }
}

/// One check's result in one gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The gate it ran in (`after step 1/3 (10%)`, `verification`).
    pub gate: String,
    pub name: String,
    pub kind: &'static str,
    pub probes: u32,
    pub outcome: String,
}

/// A page of the audit log, newest first.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// The `before` of the next (older) page, when there may be one.
    pub older: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub promotion_id: Option<i64>,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub event: AuditEvent,
    pub hash: Option<String>,
}

/// The audit log's filters as a person gave them; empty means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub service: String,
    pub environment: String,
    pub actor: String,
    pub before: Option<i64>,
    pub since: Option<DateTime<Utc>>,
    /// Entries per page (1 to [`MAX_AUDIT_PAGE`]); the pages' size when not given.
    pub limit: Option<u32>,
}

/// The most audit entries one page holds.
pub const MAX_AUDIT_PAGE: u32 = 500;

pub(super) struct WebReads {
    pub config: Arc<Config>,
    pub store: Store,
    pub time: Time,
    pub calendar: Arc<Calendar>,
    pub reads: Reads,
}

impl WebReads {
    pub async fn overview(&self) -> Result<Overview, EngineError> {
        let now = self.time.now();
        let services = self.reads.status(None).await?;
        let adhoc = self.store.active_freezes(now).await?;
        let freezes = self.calendar.freezes_with(&adhoc);
        let environments = self
            .calendar
            .environment_names()
            .into_iter()
            .map(|name| self.environment_calendar(name, &freezes, now))
            .collect();
        Ok(Overview {
            now,
            services,
            environments,
            freezes: freezes.into_iter().filter(|f| f.end > now).collect(),
        })
    }

    fn environment_calendar(
        &self,
        environment: String,
        freezes: &[Freeze],
        now: DateTime<Utc>,
    ) -> EnvironmentCalendar {
        let windows = self.calendar.windows_in(&environment);
        let gate = start_gate(&environment, &windows, freezes, now);
        let windows = windows
            .iter()
            .map(|window| WindowOpenings {
                name: window.name().to_string(),
                duration: window.duration(),
                next: window
                    .next_openings(now, OPENINGS_SHOWN)
                    .iter()
                    .map(|span| window.format_time(span.start))
                    .collect(),
            })
            .collect();
        EnvironmentCalendar {
            environment,
            gate,
            windows,
        }
    }

    pub async fn promotion_page(&self, id: i64) -> Result<PromotionPage, EngineError> {
        let now = self.time.now();
        let detail = self.reads.promotion_detail(id).await?;
        let log = self.store.deploy_log(id).await?;
        let promotion = &detail.view.promotion;
        let from_environment = self.config.service(&promotion.service).and_then(|service| {
            let pipeline = service.pipeline();
            let index = pipeline.iter().position(|e| *e == promotion.environment)?;
            index.checked_sub(1).and_then(|i| pipeline.get(i).cloned())
        });
        let rollout = match self.store.rollout(id).await? {
            Some(row) => {
                let tallies = self.store.all_tallies(id).await?;
                self.rollout_report(promotion, &row, &tallies, now)
            }
            None => None,
        };
        let (checklist, _) = asked_of(&self.config, &self.store, promotion).await?;
        Ok(PromotionPage {
            now,
            detail,
            from_environment,
            log,
            rollout,
            checklist,
        })
    }

    fn rollout_report(
        &self,
        promotion: &Promotion,
        row: &RolloutRecord,
        tallies: &[TallyRecord],
        now: DateTime<Utc>,
    ) -> Option<RolloutReport> {
        let environment = self
            .config
            .service(&promotion.service)?
            .environment(&promotion.environment)?;
        let plan = environment.plan(promotion.rollback);
        let running = matches!(
            promotion.state(),
            PromotionState::Deploying | PromotionState::Verifying
        );
        let line = running
            .then(|| RolloutStand::of(&plan, row, &environment.verify, now).line)
            .flatten();
        let steps = plan
            .actions
            .iter()
            .enumerate()
            .map(|(index, action)| StepReport {
                label: action_label(plan.strategy_kind, action),
                progress: step_progress(index, row.position, promotion.state()),
            })
            .collect();
        let checks = tallies
            .iter()
            .filter_map(|record| {
                let check = environment.verify.get(record.check_index)?;
                let gate = match plan.action(record.position)? {
                    Action::Gate {
                        after,
                        before_next: Some(_),
                        ..
                    } => format!("after {}", after.describe()),
                    Action::Gate { .. } => "verification".to_string(),
                    Action::Call(_) => return None,
                };
                let tally = &record.tally;
                let outcome = match (&tally.failure, tally.done) {
                    (Some(failure), _) => format!("failed: {failure}"),
                    (None, true) => "passed".to_string(),
                    (None, false) if running && record.position == row.position => {
                        "running".to_string()
                    }
                    (None, false) => "stopped before it decided".to_string(),
                };
                Some(CheckReport {
                    gate,
                    name: check.name.clone(),
                    kind: check.kind.label(),
                    probes: tally.probes,
                    outcome,
                })
            })
            .collect();
        Some(RolloutReport {
            strategy: plan.strategy_kind,
            line,
            steps,
            checks,
            paused_by: row.paused_by.clone(),
            abort_by: row.abort_by.clone(),
            abort_reason: row.abort_reason.clone(),
            rolled_back_by: row.rolled_back_by,
            backend_links: backend_links(row),
            backend_status: row.call_status.clone(),
        })
    }

    pub async fn audit_log(&self, query: &AuditQuery) -> Result<AuditPage, EngineError> {
        let filter = AuditFilter {
            service: query.service.trim().to_string(),
            environment: query.environment.trim().to_string(),
            actor: query.actor.trim().to_string(),
            before: query.before,
            since: query.since,
            limit: query.limit.unwrap_or(AUDIT_PAGE).clamp(1, MAX_AUDIT_PAGE),
        };
        let records = self.store.audit_log(&filter).await?;
        let older = (records.len() == filter.limit as usize)
            .then(|| records.last().map(|r| r.id))
            .flatten();
        let entries = records
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                promotion_id: r.promotion_id,
                service: r.service,
                environment: r.environment,
                event: r.event,
                hash: r.hash,
            })
            .collect();
        Ok(AuditPage { entries, older })
    }
}

/// `canary 2/3 · 50%`, `deploy`, `pause 5m with checks`, `verification`.
fn action_label(strategy: &str, action: &Action) -> String {
    match action {
        Action::Call(step) => call_label(strategy, *step),
        Action::Gate {
            length: GateLength::Pause(pause),
            ..
        } => format!(
            "pause {}, checks running",
            crate::domain::duration::format_duration(*pause)
        ),
        Action::Gate { .. } => "verification checks".to_string(),
    }
}

fn call_label(strategy: &str, step: Step) -> String {
    match (strategy, step.phase) {
        ("canary", _) => format!("canary {}/{} · {}%", step.number, step.of, step.weight),
        (_, Phase::Switch) => "switch traffic to the new version".to_string(),
        ("blue_green", Phase::Deploy) => "deploy the new version beside the old".to_string(),
        (_, Phase::Discard) => "discard the new version".to_string(),
        _ => "deploy".to_string(),
    }
}

fn step_progress(index: usize, position: usize, state: PromotionState) -> StepProgress {
    use std::cmp::Ordering;
    match (index.cmp(&position), state) {
        (_, PromotionState::Succeeded | PromotionState::RolledBack) => StepProgress::Done,
        (Ordering::Less, _) => StepProgress::Done,
        (Ordering::Equal, PromotionState::Deploying | PromotionState::Verifying) => {
            StepProgress::Running
        }
        (Ordering::Equal, _) => StepProgress::Stopped,
        (Ordering::Greater, _) => StepProgress::Pending,
    }
}

/// The http(s) links of the last backend call: every such string in its handle, and any in
/// what it said.
fn backend_links(row: &RolloutRecord) -> Vec<String> {
    let mut links = Vec::new();
    if let Some(handle) = row
        .call_handle
        .as_deref()
        .and_then(|h| serde_json::from_str::<serde_json::Value>(h).ok())
    {
        collect_links(&handle, &mut links);
    }
    for word in row.call_status.iter().flat_map(|s| s.split_whitespace()) {
        let word = word.trim_end_matches([',', '.', ')', ';']);
        push_link(word, &mut links);
    }
    links
}

fn collect_links(value: &serde_json::Value, links: &mut Vec<String>) {
    match value {
        serde_json::Value::String(text) => push_link(text, links),
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_links(v, links)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect_links(v, links)),
        _ => {}
    }
}

fn push_link(text: &str, links: &mut Vec<String>) {
    let is_web = url::Url::parse(text).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
    if is_web && !links.iter().any(|l| l == text) {
        links.push(text.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_before_the_position_are_done_and_the_one_at_it_runs_or_stopped() {
        use PromotionState::*;
        assert_eq!(step_progress(0, 1, Deploying), StepProgress::Done);
        assert_eq!(step_progress(1, 1, Verifying), StepProgress::Running);
        assert_eq!(step_progress(1, 1, Failed), StepProgress::Stopped);
        assert_eq!(step_progress(2, 1, Failed), StepProgress::Pending);
        assert_eq!(step_progress(2, 1, Succeeded), StepProgress::Done);
    }

    #[test]
    fn backend_links_are_the_web_urls_of_the_handle_and_status() {
        let row = RolloutRecord {
            call_handle: Some(
                r#"{"run_id": 7, "html_url": "https://github.com/acme/api/actions/runs/7", "x": "javascript:alert(1)"}"#
                    .into(),
            ),
            call_status: Some(
                "waiting for approval: https://github.com/acme/api/actions/runs/7. See http://argo.example/app/api."
                    .into(),
            ),
            ..RolloutRecord::default()
        };
        assert_eq!(
            backend_links(&row),
            [
                "https://github.com/acme/api/actions/runs/7",
                "http://argo.example/app/api"
            ]
        );
    }
}
