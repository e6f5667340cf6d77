//! The approval policy: who may approve, how many are needed, and what a vote does.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::identity::Identity;
use super::manifest::ReleaseType;

/// `approvals = { required, from, self_approval, expires }` of one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalPolicy {
    pub required: u32,
    pub from_role: String,
    pub self_approval: bool,
    pub expires: Duration,
    /// Approvals a major release needs instead (SPEC §10: `major = 2`).
    pub major: Option<u32>,
}

impl ApprovalPolicy {
    /// The approvals a release of this type needs.
    pub fn required_for(&self, release: ReleaseType) -> u32 {
        match (release, self.major) {
            (ReleaseType::Major, Some(major)) => major,
            _ => self.required,
        }
    }
}

/// The default approval lifetime (SPEC §2).
pub const DEFAULT_APPROVAL_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    pub by: Identity,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vote {
    Approve,
    Reject,
    /// A removed approve reaction: takes the voter's approval back.
    Withdraw,
}

/// What a vote does to an awaiting-approval promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteOutcome {
    /// The approval was added; `complete` when the count reached `required`.
    Counted {
        approvals: usize,
        complete: bool,
    },
    /// The voter had approved already (a double click counts once).
    AlreadyCounted {
        approvals: usize,
    },
    Rejects,
    Withdrawn {
        approvals: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteRefusal {
    #[error("only members of `{role}` may approve or reject here; ask one of them")]
    NotEligible { role: String },
    #[error("you requested this promotion, so you can't approve it yourself; ask another member of `{role}`")]
    SelfApproval { role: String },
    #[error("the approval request expired; promote again to ask anew")]
    Expired,
    #[error("you have no approval on it to withdraw")]
    NothingToWithdraw,
}

/// What a reaction on a card means (adapters map their configured emoji sets to these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReactionVote {
    Approve,
    Reject,
    /// An approve reaction was removed.
    Withdraw,
}

impl ReactionVote {
    /// SPEC §3: an approve reaction approves and its removal withdraws; a reject reaction rejects
    /// (removing it undoes nothing); other emoji mean nothing.
    pub fn from_reaction(approve_emoji: bool, reject_emoji: bool, added: bool) -> Option<Self> {
        match (approve_emoji, reject_emoji, added) {
            (true, _, true) => Some(ReactionVote::Approve),
            (true, _, false) => Some(ReactionVote::Withdraw),
            (false, true, true) => Some(ReactionVote::Reject),
            _ => None,
        }
    }

    /// An approve reaction's add or removal, judged by what the card holds now: `still_approves`
    /// is whether the person still has an approve emoji on it (`None`: unknown, go by the
    /// event). Events may arrive late, twice or swapped; the card's state is the truth. A reject
    /// stands as it came.
    pub fn reconcile(self, still_approves: Option<bool>) -> Self {
        match (self, still_approves) {
            (ReactionVote::Reject, _) | (_, None) => self,
            (_, Some(true)) => ReactionVote::Approve,
            (_, Some(false)) => ReactionVote::Withdraw,
        }
    }

    pub fn vote(self) -> Vote {
        match self {
            ReactionVote::Approve => Vote::Approve,
            ReactionVote::Reject => Vote::Reject,
            ReactionVote::Withdraw => Vote::Withdraw,
        }
    }
}

/// The facts a vote is judged on. `voter_eligible` is whether the voter holds `from_role`.
#[derive(Debug, Clone, Copy)]
pub struct Ballot<'a> {
    pub policy: &'a ApprovalPolicy,
    /// The approvals this promotion needs (set when it opened: more for a major release).
    pub required: u32,
    pub requester: &'a Identity,
    pub voter: &'a Identity,
    pub voter_eligible: bool,
    pub approvals: &'a [Approval],
    pub expires_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

/// Decides one vote on a promotion that is awaiting approval.
pub fn decide_vote(ballot: Ballot<'_>, vote: Vote) -> Result<VoteOutcome, VoteRefusal> {
    let role = || ballot.policy.from_role.clone();
    let already = ballot.approvals.iter().any(|a| &a.by == ballot.voter);
    // Taking back one's own approval needs no role: a Discord reaction removal carries no member
    // roles, and someone who left the role should still be able to undo their vote.
    let withdrawing_own = matches!(vote, Vote::Withdraw) && already;
    if !ballot.voter_eligible && !withdrawing_own {
        return Err(VoteRefusal::NotEligible { role: role() });
    }
    if ballot.expires_at.is_some_and(|at| ballot.now >= at) {
        return Err(VoteRefusal::Expired);
    }
    let count = ballot.approvals.len();
    match vote {
        Vote::Reject => Ok(VoteOutcome::Rejects),
        Vote::Withdraw if already => Ok(VoteOutcome::Withdrawn {
            approvals: count - 1,
        }),
        Vote::Withdraw => Err(VoteRefusal::NothingToWithdraw),
        Vote::Approve if ballot.voter == ballot.requester && !ballot.policy.self_approval => {
            Err(VoteRefusal::SelfApproval { role: role() })
        }
        Vote::Approve if already => Ok(VoteOutcome::AlreadyCounted { approvals: count }),
        Vote::Approve => Ok(VoteOutcome::Counted {
            approvals: count + 1,
            complete: count + 1 >= ballot.required as usize,
        }),
    }
}

/// The approvals of an earlier promotion that still count for a retry of it requested by
/// `requester`: unexpired under today's policy, and not the requester's own unless the policy
/// allows self-approval. Whether they are enough is judged against today's `required`.
pub fn carried_approvals(
    policy: &ApprovalPolicy,
    requester: &Identity,
    earlier: &[Approval],
    now: DateTime<Utc>,
) -> Vec<Approval> {
    earlier
        .iter()
        .filter(|a| approval_deadline(policy, a.at) > now)
        .filter(|a| policy.self_approval || &a.by != requester)
        .cloned()
        .collect()
}

/// When an approval request made at `requested_at` stops accepting votes.
pub fn approval_deadline(policy: &ApprovalPolicy, requested_at: DateTime<Utc>) -> DateTime<Utc> {
    let ttl = chrono::Duration::from_std(policy.expires).unwrap_or(chrono::Duration::MAX);
    requested_at
        .checked_add_signed(ttl)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_reaction_counts_as_the_card_holds_it_now() {
        use ReactionVote::*;
        for (event, held, counted) in [
            (Approve, Some(false), Withdraw),
            (Withdraw, Some(true), Approve),
            (Approve, Some(true), Approve),
            (Withdraw, Some(false), Withdraw),
            (Approve, None, Approve),
            (Withdraw, None, Withdraw),
            (Reject, Some(false), Reject),
            (Reject, Some(true), Reject),
        ] {
            assert_eq!(event.reconcile(held), counted, "{event:?} {held:?}");
        }
    }

    #[test]
    fn a_retry_carries_only_unexpired_approvals_of_others() {
        let at = |hour| Utc.with_ymd_and_hms(2026, 11, 17, hour, 0, 0).unwrap();
        let policy = ApprovalPolicy {
            required: 2,
            from_role: "leads".into(),
            self_approval: false,
            expires: Duration::from_secs(4 * 3600),
            major: None,
        };
        let lead = Identity::new("slack", "U1");
        let lead2 = Identity::new("slack", "U2");
        let earlier = [
            Approval {
                by: lead.clone(),
                at: at(8),
            },
            Approval {
                by: lead2.clone(),
                at: at(11),
            },
        ];
        let kept = |requester: &Identity, now, policy: &ApprovalPolicy| -> Vec<String> {
            carried_approvals(policy, requester, &earlier, now)
                .into_iter()
                .map(|a| a.by.to_string())
                .collect()
        };
        let ci = Identity::new("api", "ci");
        assert_eq!(kept(&ci, at(11), &policy), ["slack:U1", "slack:U2"]);
        // 12:00 is the first one's deadline: it no longer counts.
        assert_eq!(kept(&ci, at(12), &policy), ["slack:U2"]);
        assert!(kept(&ci, at(15), &policy).is_empty());
        // The person retrying does not approve their own retry...
        assert_eq!(kept(&lead, at(11), &policy), ["slack:U2"]);
        // ...unless the policy allows self-approval.
        let lenient = ApprovalPolicy {
            self_approval: true,
            ..policy.clone()
        };
        assert_eq!(kept(&lead, at(11), &lenient), ["slack:U1", "slack:U2"]);
    }

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 10, minute, 0).unwrap()
    }

    fn who(name: &str) -> Identity {
        Identity::new("slack", name)
    }

    fn policy(required: u32, self_approval: bool) -> ApprovalPolicy {
        ApprovalPolicy {
            required,
            from_role: "leads".into(),
            self_approval,
            expires: Duration::from_secs(3600),
            major: None,
        }
    }

    #[test]
    fn a_major_release_needs_the_major_count_when_one_is_set() {
        let strict = ApprovalPolicy {
            major: Some(3),
            ..policy(1, false)
        };
        assert_eq!(strict.required_for(ReleaseType::Major), 3);
        assert_eq!(strict.required_for(ReleaseType::Minor), 1);
        assert_eq!(strict.required_for(ReleaseType::First), 1);
        assert_eq!(policy(2, false).required_for(ReleaseType::Major), 2);
    }

    #[test]
    fn vote_table() {
        let alice = who("alice");
        let bob = who("bob");
        let carol = who("carol");
        let bob_approved = [Approval {
            by: bob.clone(),
            at: at(1),
        }];
        type Case<'a> = (
            &'a str,
            ApprovalPolicy,
            &'a Identity,
            bool,
            &'a [Approval],
            Vote,
            Result<VoteOutcome, VoteRefusal>,
        );
        let cases: Vec<Case> = vec![
            (
                "first of two",
                policy(2, false),
                &bob,
                true,
                &[],
                Vote::Approve,
                Ok(VoteOutcome::Counted {
                    approvals: 1,
                    complete: false,
                }),
            ),
            (
                "second completes",
                policy(2, false),
                &carol,
                true,
                &bob_approved,
                Vote::Approve,
                Ok(VoteOutcome::Counted {
                    approvals: 2,
                    complete: true,
                }),
            ),
            (
                "double click counts once",
                policy(2, false),
                &bob,
                true,
                &bob_approved,
                Vote::Approve,
                Ok(VoteOutcome::AlreadyCounted { approvals: 1 }),
            ),
            (
                "requester may not approve",
                policy(1, false),
                &alice,
                true,
                &[],
                Vote::Approve,
                Err(VoteRefusal::SelfApproval {
                    role: "leads".into(),
                }),
            ),
            (
                "unless self approval is on",
                policy(1, true),
                &alice,
                true,
                &[],
                Vote::Approve,
                Ok(VoteOutcome::Counted {
                    approvals: 1,
                    complete: true,
                }),
            ),
            (
                "not in the role",
                policy(1, false),
                &carol,
                false,
                &[],
                Vote::Approve,
                Err(VoteRefusal::NotEligible {
                    role: "leads".into(),
                }),
            ),
            (
                "ineligible reject changes nothing",
                policy(1, false),
                &carol,
                false,
                &[],
                Vote::Reject,
                Err(VoteRefusal::NotEligible {
                    role: "leads".into(),
                }),
            ),
            (
                "one reject rejects",
                policy(2, false),
                &carol,
                true,
                &bob_approved,
                Vote::Reject,
                Ok(VoteOutcome::Rejects),
            ),
            (
                "requester may reject",
                policy(2, false),
                &alice,
                true,
                &[],
                Vote::Reject,
                Ok(VoteOutcome::Rejects),
            ),
            (
                "withdraw own approval",
                policy(2, false),
                &bob,
                true,
                &bob_approved,
                Vote::Withdraw,
                Ok(VoteOutcome::Withdrawn { approvals: 0 }),
            ),
            (
                "nothing to withdraw",
                policy(2, false),
                &carol,
                true,
                &bob_approved,
                Vote::Withdraw,
                Err(VoteRefusal::NothingToWithdraw),
            ),
        ];
        for (name, policy, voter, eligible, approvals, vote, expected) in cases {
            let ballot = Ballot {
                policy: &policy,
                required: policy.required,
                requester: &alice,
                voter,
                voter_eligible: eligible,
                approvals,
                expires_at: Some(at(30)),
                now: at(5),
            };
            assert_eq!(decide_vote(ballot, vote), expected, "{name}");
        }
    }

    #[test]
    fn votes_after_the_deadline_are_refused() {
        let policy = policy(1, false);
        let ballot = Ballot {
            policy: &policy,
            required: policy.required,
            requester: &who("alice"),
            voter: &who("bob"),
            voter_eligible: true,
            approvals: &[],
            expires_at: Some(at(30)),
            now: at(30),
        };
        assert_eq!(
            decide_vote(ballot, Vote::Approve),
            Err(VoteRefusal::Expired)
        );
    }

    #[test]
    fn deadline_is_request_time_plus_ttl() {
        assert_eq!(
            approval_deadline(&policy(1, false), at(0)),
            at(0) + chrono::Duration::hours(1)
        );
    }
}
