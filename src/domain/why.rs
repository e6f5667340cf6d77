//! Why a promotion waits, or what stopped it (SPEC §10): each reason with what would unblock it.
//!
//! `/release why` lists these; the refusals of the same rules (an approval while checklist items
//! are open, a promote while another promotion holds the environment, a digest that was not the
//! one tested, a hotfix in a freeze) are these reasons' own words, so the two cannot disagree.

use std::fmt;

use super::identity::Identity;
use super::promotion::PromotionState;

/// One thing a promotion waits for, or the thing that stopped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// Not enough approvals yet.
    Approvals {
        have: usize,
        need: u32,
        /// The role whose members may approve, and who they are (as configured).
        role: String,
        approvers: Vec<Identity>,
        /// The requester, when the policy does not let them approve their own promotion.
        not_by: Option<Identity>,
    },
    /// Checklist items nobody has ticked: (number, text), numbered from 1.
    Checklist { open: Vec<(usize, String)> },
    /// Outside the environment's release windows. `next_opening`: e.g. `prod-window opens Tue
    /// 2026-11-24 14:00 CET (13:00 UTC)`; `None` when none opens again.
    Window { next_opening: Option<String> },
    /// A freeze covers the environment. `until` is written for people; `set_by` names where each
    /// covering freeze came from (a person, or bot.toml).
    Freeze {
        environment: String,
        until: String,
        reason: Option<String>,
        set_by: Vec<String>,
    },
    /// Another promotion holds the environment (one at a time).
    Busy {
        service: String,
        environment: String,
        /// `#41 api 1.4.1 → production, deploying, by slack:U1, 3m ago`
        active: String,
        active_id: i64,
    },
    /// The release's digest is not the one that succeeded in the environment before.
    Digest {
        service: String,
        version: String,
        previous_environment: String,
        digest: String,
        /// What succeeded there; `None`: it succeeded before the release had a digest.
        tested: Option<String>,
    },
    /// A post-deploy check failed: which, and what it saw.
    CheckFailed { check: String, seen: String },
    /// The promotion ended without success (rejected, cancelled, expired, failed, interrupted).
    Ended {
        state: PromotionState,
        reason: Option<String>,
    },
}

impl Blocker {
    /// A short machine name, for the API.
    pub fn kind(&self) -> &'static str {
        match self {
            Blocker::Approvals { .. } => "approvals",
            Blocker::Checklist { .. } => "checklist",
            Blocker::Window { .. } => "window",
            Blocker::Freeze { .. } => "freeze",
            Blocker::Busy { .. } => "busy",
            Blocker::Digest { .. } => "digest",
            Blocker::CheckFailed { .. } => "check_failed",
            Blocker::Ended { .. } => "ended",
        }
    }

    /// What is in the way.
    pub fn problem(&self) -> String {
        match self {
            Blocker::Approvals { have, need, .. } => {
                let missing = (*need as usize).saturating_sub(*have);
                let plural = if missing == 1 { "" } else { "s" };
                format!("needs {missing} more approval{plural} ({have}/{need})")
            }
            Blocker::Checklist { open } => {
                let items: Vec<String> = open
                    .iter()
                    .map(|(number, text)| format!("{number}. {text}"))
                    .collect();
                let plural = if open.len() == 1 { "" } else { "s" };
                format!(
                    "checklist item{plural} not ticked yet: {}",
                    items.join("; ")
                )
            }
            Blocker::Window {
                next_opening: Some(next),
            } => format!("waiting for the release window: {next}"),
            Blocker::Window { next_opening: None } => {
                "waiting for a release window, but none of its windows opens again".to_string()
            }
            Blocker::Freeze {
                environment,
                until,
                reason,
                set_by,
            } => {
                let reason = reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
                let by = if set_by.is_empty() {
                    String::new()
                } else {
                    format!(", set by {}", set_by.join(" and "))
                };
                format!("{environment} is frozen until {until}{reason}{by}")
            }
            Blocker::Busy {
                service,
                environment,
                active,
                ..
            } => format!("{service} {environment} already has a promotion in progress: {active}"),
            Blocker::Digest {
                service,
                version,
                previous_environment,
                digest,
                tested: Some(tested),
            } => format!(
                "{service} {version} is now {} but {previous_environment} tested {}",
                short(digest),
                short(tested)
            ),
            Blocker::Digest {
                service,
                version,
                previous_environment,
                digest,
                tested: None,
            } => format!(
                "{service} {version} succeeded in {previous_environment} before it had a digest; its digest is now {}",
                short(digest)
            ),
            Blocker::CheckFailed { check, seen } => format!("the check {check} failed: {seen}"),
            Blocker::Ended { state, reason } => match reason {
                Some(reason) => format!("it is {}: {reason}", state.label()),
                None => format!("it is {}", state.label()),
            },
        }
    }

    /// What would unblock it.
    pub fn remedy(&self) -> String {
        match self {
            Blocker::Approvals {
                role,
                approvers,
                not_by,
                ..
            } => {
                let who = if approvers.is_empty() {
                    format!("a member of `{role}`")
                } else {
                    let names: Vec<&str> = approvers.iter().map(Identity::as_str).collect();
                    format!("a member of `{role}` ({})", names.join(", "))
                };
                let not_by = not_by
                    .as_ref()
                    .map(|requester| format!(", not the requester {requester}"))
                    .unwrap_or_default();
                format!("approval from {who}{not_by}")
            }
            Blocker::Checklist { open } => {
                let first = open.first().map_or(1, |(number, _)| *number);
                format!("tick them on the card or with /release check <#id> {first}; approvals are taken once every item is ticked")
            }
            Blocker::Window {
                next_opening: Some(_),
            } => "it starts by itself then".to_string(),
            Blocker::Window { next_opening: None } => {
                "an admin can promote with --force".to_string()
            }
            Blocker::Freeze { .. } => {
                "it starts by itself once the freeze ends and a window is open; an admin can lift the freeze with /release unfreeze, or promote with --force".to_string()
            }
            Blocker::Busy { active_id, .. } => format!(
                "Wait for it to finish or cancel it with /release cancel {active_id}"
            ),
            Blocker::Digest { service, .. } => format!(
                "what ships must be what was tested: release the new artifact as a new version (/release create {service} <version> digest …) and promote that from the start, or an admin can promote with --force"
            ),
            Blocker::CheckFailed { .. } => {
                "fix what the check saw, then /release retry <#id>, or roll back with /release rollback".to_string()
            }
            Blocker::Ended { state, .. } if state.is_retryable() => {
                "retry it with /release retry <#id> once the cause is fixed".to_string()
            }
            Blocker::Ended { .. } => "promote again to ask anew".to_string(),
        }
    }
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The one-environment rule's message reads as two sentences; the others as one.
        let separator = if matches!(self, Blocker::Busy { .. }) {
            ". "
        } else {
            "; "
        };
        write!(f, "{}{separator}{}", self.problem(), self.remedy())
    }
}

/// `sha256:1234567` for a digest or anything shorter.
fn short(digest: &str) -> &str {
    digest.get(..14).unwrap_or(digest)
}

/// The checklist items not yet ticked (`ticked` holds item numbers from 1), as a blocker;
/// `None` when every item is ticked (or there is no checklist).
pub fn open_checklist(items: &[String], ticked: &[usize]) -> Option<Blocker> {
    let open: Vec<(usize, String)> = items
        .iter()
        .enumerate()
        .map(|(index, text)| (index + 1, text.clone()))
        .filter(|(number, _)| !ticked.contains(number))
        .collect();
    (!open.is_empty()).then_some(Blocker::Checklist { open })
}

/// What stands between an awaiting promotion and enough approvals, in the order people meet
/// them: the checklist (no approval is taken before it is done), then the approvals.
pub fn approval_blockers(
    checklist: Option<Blocker>,
    approvals: Option<Blocker>,
) -> impl Iterator<Item = Blocker> {
    checklist.into_iter().chain(approvals)
}

/// The approvals still missing; `None` when there are enough.
pub fn missing_approvals(
    have: usize,
    need: u32,
    role: &str,
    approvers: Vec<Identity>,
    not_by: Option<Identity>,
) -> Option<Blocker> {
    (have < need as usize).then(|| Blocker::Approvals {
        have,
        need,
        role: role.to_string(),
        approvers,
        not_by,
    })
}

/// Why a promotion in `state` stopped, when it ended short of success.
pub fn ended(state: PromotionState, reason: Option<&str>) -> Option<Blocker> {
    let stopped = matches!(
        state,
        PromotionState::Rejected
            | PromotionState::Cancelled
            | PromotionState::Expired
            | PromotionState::Failed
            | PromotionState::Interrupted
    );
    stopped.then(|| Blocker::Ended {
        state,
        reason: reason.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Vec<String> {
        vec!["Changelog reviewed".into(), "Migrations compatible".into()]
    }

    #[test]
    fn open_checklist_items_are_numbered_from_one_and_ticked_ones_drop_out() {
        let open = open_checklist(&items(), &[1]).map(|b| b.to_string());
        assert_eq!(
            open.as_deref(),
            Some("checklist item not ticked yet: 2. Migrations compatible; tick them on the card or with /release check <#id> 2; approvals are taken once every item is ticked")
        );
        assert_eq!(open_checklist(&items(), &[1, 2]), None);
        assert_eq!(open_checklist(&[], &[]), None);
    }

    #[test]
    fn missing_approvals_name_the_role_its_members_and_the_excluded_requester() {
        let blocker = missing_approvals(
            1,
            2,
            "leads",
            vec![Identity::new("slack", "U0LEAD1")],
            Some(Identity::new("slack", "U0ALICE")),
        );
        assert_eq!(
            blocker.map(|b| b.to_string()).as_deref(),
            Some("needs 1 more approval (1/2); approval from a member of `leads` (slack:U0LEAD1), not the requester slack:U0ALICE")
        );
        assert_eq!(missing_approvals(2, 2, "leads", vec![], None), None);
    }

    #[test]
    fn the_busy_and_digest_reasons_read_as_the_refusals_always_did() {
        let busy = Blocker::Busy {
            service: "web".into(),
            environment: "staging".into(),
            active: "#1 web 1.0.0 → staging, deploying, by api:ci, 3m ago".into(),
            active_id: 1,
        };
        assert_eq!(busy.to_string(), "web staging already has a promotion in progress: #1 web 1.0.0 → staging, deploying, by api:ci, 3m ago. Wait for it to finish or cancel it with /release cancel 1");
        let digest = Blocker::Digest {
            service: "api".into(),
            version: "1.0.0".into(),
            previous_environment: "dev".into(),
            digest: format!("sha256:{}", "b".repeat(64)),
            tested: Some(format!("sha256:{}", "a".repeat(64))),
        };
        assert!(digest
            .to_string()
            .starts_with("api 1.0.0 is now sha256:bbbbbbb but dev tested sha256:aaaaaaa; what ships must be what was tested"));
    }

    #[test]
    fn only_promotions_that_stopped_short_have_ended() {
        assert_eq!(ended(PromotionState::Succeeded, None), None);
        assert_eq!(ended(PromotionState::Deploying, None), None);
        let rejected = ended(
            PromotionState::Rejected,
            Some("rejected by slack:U1: flaky"),
        );
        assert_eq!(
            rejected.map(|b| b.problem()).as_deref(),
            Some("it is rejected: rejected by slack:U1: flaky")
        );
    }
}
