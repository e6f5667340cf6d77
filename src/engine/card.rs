//! The platform-neutral promotion card: everything a Slack or Discord card shows, built from the
//! store's view of a promotion. Adapters only render it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::governance::ChecklistLine;
use super::view::PromotionView;
use crate::domain::identity::Identity;
use crate::domain::manifest::{group_changes, GroupedChanges, ReleaseType};
use crate::domain::promotion::{CardAction, PromotionState};
use crate::domain::rollout::{gate_line, Action, GateLength, Phase, Plan, Step};
use crate::domain::verification::CheckSpec;
use crate::store::RolloutRecord;

/// Where a running rollout stands, for its card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutStand {
    pub line: Option<String>,
    /// Who holds it before its next step (named in `line`).
    pub paused_by: Option<Identity>,
    /// A step is left to hold before.
    pub pausable: bool,
    pub paused: bool,
}

impl RolloutStand {
    /// The stand of a promotion at `row` of `plan`, with the checks of its environment, at `now`
    /// (rules clock).
    pub fn of(
        plan: &Plan,
        row: &RolloutRecord,
        checks: &[CheckSpec],
        now: DateTime<Utc>,
    ) -> RolloutStand {
        let pausable = plan.has_next_step(row.position) && row.abort_by.is_none();
        RolloutStand {
            line: stand_line(plan, row, checks, now),
            pausable,
            paused: row.paused_by.is_some(),
            paused_by: row.paused_by.as_deref().and_then(Identity::parse_requester),
        }
    }
}

fn stand_line(
    plan: &Plan,
    row: &RolloutRecord,
    checks: &[CheckSpec],
    now: DateTime<Utc>,
) -> Option<String> {
    if let Some(by) = &row.abort_by {
        return Some(format!("aborting (asked by {by}): stopping the deploy"));
    }
    let action = plan.action(row.position)?;
    match action {
        Action::Call(step) => {
            let status = row.call_status.as_deref().filter(|_| row.calling);
            match (call_line(plan.strategy_kind, step), status) {
                (Some(line), Some(status)) => Some(format!("{line} · {status}")),
                (None, Some(status)) => Some(status.to_string()),
                (line, None) => line,
            }
        }
        Action::Gate { length, .. } => {
            let length = match length {
                GateLength::Pause(pause) => pause,
                GateLength::ChecksOwn => checks
                    .iter()
                    .filter(|c| c.kind.repeats())
                    .map(|c| c.duration)
                    .max()
                    .unwrap_or_default(),
            };
            let started = row.gate_started_at.unwrap_or(now);
            let elapsed = (now - started).to_std().unwrap_or_default();
            let due = started + chrono::Duration::from_std(length).unwrap_or_default();
            let clock = format!("{} UTC", due.format("%H:%M"));
            Some(gate_line(
                plan.strategy_kind,
                action,
                elapsed,
                length,
                row.paused_by.as_deref(),
                &clock,
            ))
        }
    }
}

/// `canary 2/3 · 50% · deploying`; nothing for a one-step deploy (its state says it all).
fn call_line(strategy_kind: &str, step: Step) -> Option<String> {
    match (strategy_kind, step.phase) {
        ("canary", _) => Some(format!(
            "canary {}/{} · {}% · deploying",
            step.number, step.of, step.weight
        )),
        ("blue_green", Phase::Deploy) => {
            Some("blue-green · deploying the new version beside the old".to_string())
        }
        ("blue_green", Phase::Switch) => {
            Some("blue-green · switching traffic to the new version".to_string())
        }
        ("blue_green", Phase::Discard) => {
            Some("blue-green · discarding the new version".to_string())
        }
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub promotion_id: i64,
    pub service: String,
    pub version: String,
    /// The environment the version comes from (the previous one in the pipeline), if any.
    pub from_environment: Option<String>,
    pub environment: String,
    pub rollback: bool,
    pub requested_by: Identity,
    pub notes: Option<String>,
    pub commit: Option<String>,
    pub approvals: Vec<Identity>,
    pub required_approvals: u32,
    pub state: PromotionState,
    /// Why it stopped short (failed, rejected, …).
    pub reason: Option<String>,
    /// Where a canary or blue-green rollout stands, or how long verification has run:
    /// `canary 2/3 · 50% · next step at 14:05 UTC (in 4m)`.
    pub rollout: Option<String>,
    /// Who paused the rollout, for the adapter to mention in the rollout line.
    pub paused_by: Option<Identity>,
    /// The newest deploy output line.
    pub progress: Option<String>,
    /// How long the deploy ran (or has been running).
    pub duration: Option<Duration>,
    /// `<public_url>/ui/promotions/<id>?exp=…&sig=…` (a signed link to its web page) when a
    /// public URL is configured.
    pub link: Option<String>,
    pub actions: &'static [CardAction],
    /// The environment's checklist with who ticked what (SPEC §10); empty when it has none.
    pub checklist: Vec<ChecklistLine>,
    /// Whether the checklist can be ticked from the card now (awaiting approval).
    pub checklist_open: bool,
    /// Who is asked to approve (role members, users or groups), while it awaits approval; the
    /// adapter mentions those of its platform.
    pub approvers: Vec<Identity>,
    /// Why this is a hotfix (`--hotfix`).
    pub hotfix: Option<String>,
    /// How big a step it is against what the environment ran when it was asked for; none for
    /// rollbacks and re-deploys.
    pub release_type: Option<ReleaseType>,
    /// The artifact's digest, short (`sha256:9f86d08`).
    pub digest: Option<String>,
    /// The release's first changes, grouped (SPEC §10); the web page lists them all.
    pub changes: GroupedChanges,
    /// Why git could not give the changes, when it could not.
    pub changes_note: Option<String>,
}

/// How many changes a card lists before "and N more".
pub const CHANGES_ON_CARD: usize = 10;

impl Card {
    pub fn build(
        view: &PromotionView,
        from_environment: Option<String>,
        progress: Option<String>,
        link: Option<String>,
        now: DateTime<Utc>,
    ) -> Card {
        let p = &view.promotion;
        let duration = p.started_at().map(|start| {
            let end = p.finished_at().unwrap_or(now);
            (end - start).to_std().unwrap_or_default()
        });
        Card {
            promotion_id: p.id,
            service: p.service.clone(),
            version: p.version.to_string(),
            from_environment,
            environment: p.environment.clone(),
            rollback: p.rollback,
            requested_by: p.requested_by.clone(),
            notes: view.notes.clone(),
            commit: view.commit.clone(),
            approvals: view.approvals.iter().map(|a| a.by.clone()).collect(),
            required_approvals: p.required_approvals,
            state: p.state(),
            reason: p.reason().map(str::to_string),
            rollout: None,
            paused_by: None,
            progress,
            duration,
            link,
            actions: CardAction::offered(p.state()),
            checklist: Vec::new(),
            checklist_open: false,
            approvers: Vec::new(),
            hotfix: p.hotfix_reason.clone(),
            release_type: p.release_type(),
            digest: view.manifest.digest.as_ref().map(|d| d.short().to_string()),
            changes: group_changes(&view.manifest.changes, CHANGES_ON_CARD),
            changes_note: view.manifest.changes_note.clone(),
        }
    }

    /// The grouped changes as lines: `heading` marks up a group's title and `item` one change
    /// (the adapter escapes and cuts it); a last line counts what the card leaves out. `None`
    /// when there are no changes.
    pub fn changes_text(
        &self,
        heading: impl Fn(&str) -> String,
        item: impl Fn(&str) -> String,
    ) -> Option<String> {
        if self.changes.groups.is_empty() {
            return None;
        }
        let mut lines = Vec::new();
        for (group, changes) in &self.changes.groups {
            lines.push(heading(group.title()));
            lines.extend(changes.iter().map(|change| format!("• {}", item(change))));
        }
        if self.changes.more > 0 {
            lines.push(format!("and {} more", self.changes.more));
        }
        Some(lines.join("\n"))
    }

    /// The card with its checklist and, while it awaits approval, the approvers to mention.
    pub fn with_governance(
        mut self,
        checklist: Vec<ChecklistLine>,
        approvers: Vec<Identity>,
    ) -> Card {
        let awaiting = self.state == PromotionState::AwaitingApproval;
        self.checklist_open = awaiting && checklist.iter().any(|line| line.ticked_by.is_none());
        self.checklist = checklist;
        if awaiting {
            self.approvers = approvers;
        }
        self
    }

    /// The card of a promotion whose rollout stands at `stand`: its line, and Pause/Resume and
    /// Abort instead of the state's buttons.
    pub fn with_rollout(mut self, stand: Option<RolloutStand>) -> Card {
        if let Some(stand) = stand {
            self.rollout = stand.line;
            self.paused_by = stand.paused_by;
            self.actions = CardAction::offered_while_rolling(stand.pausable, stand.paused);
        }
        self
    }

    /// `line` (the rollout line, as the adapter escaped it) with who paused the rollout shown as
    /// the platform's `mention`.
    pub fn mention_pauser(&self, line: String, mention: impl Fn(&Identity) -> String) -> String {
        match &self.paused_by {
            Some(who) => line.replace(who.as_str(), &mention(who)),
            None => line,
        }
    }

    /// `#42 api 1.4.2 → production` (with `rollback` when it is one).
    pub fn title(&self) -> String {
        let kind = if self.rollback { " (rollback)" } else { "" };
        format!(
            "#{} {} {} → {}{kind}",
            self.promotion_id, self.service, self.version, self.environment
        )
    }

    /// `1/2` plus who approved, rendered by the adapter with its own mention syntax.
    pub fn approval_count(&self) -> Option<String> {
        (self.required_approvals > 0)
            .then(|| format!("{}/{}", self.approvals.len(), self.required_approvals))
    }
}

#[cfg(test)]
mod stand_tests {
    use super::*;
    use crate::domain::rollout::Strategy;
    use std::time::Duration;

    fn calling(status: Option<&str>) -> RolloutRecord {
        RolloutRecord {
            position: 0,
            calling: true,
            call_remote: true,
            call_status: status.map(str::to_string),
            ..RolloutRecord::default()
        }
    }

    #[test]
    fn a_remote_call_shows_what_its_backend_says() {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        let direct = Plan::new(&Strategy::Direct, false, false);
        let status = "GitHub run 7 waiting for a GitHub environment approval: https://github.com/acme/api/actions/runs/7";
        let stand = RolloutStand::of(&direct, &calling(Some(status)), &[], now);
        assert_eq!(stand.line.as_deref(), Some(status));
        assert_eq!(
            RolloutStand::of(&direct, &calling(None), &[], now).line,
            None
        );

        let canary = Strategy::Canary {
            steps: vec![25, 100],
            pause: Duration::from_secs(60),
        };
        let canary = Plan::new(&canary, false, false);
        let stand = RolloutStand::of(
            &canary,
            &calling(Some("3 of 4 replicas available")),
            &[],
            now,
        );
        assert_eq!(
            stand.line.as_deref(),
            Some("canary 1/2 · 25% · deploying · 3 of 4 replicas available")
        );
        let mut ended = calling(Some("stale"));
        ended.calling = false;
        assert_eq!(RolloutStand::of(&direct, &ended, &[], now).line, None);
    }
}
