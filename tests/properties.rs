//! Property tests of the promotion lifecycle (`domain::promotion`) and the vote rules
//! (`domain::approval`), SPEC §2: random event sequences never reach an inconsistent stage, a
//! final state never moves again (except succeeded → rolled_back), one environment never holds
//! two active promotions, and no person's approval is ever counted twice.
//!
//! Run with `cargo test --test properties` (256 cases per property, a few seconds);
//! `PROPTEST_CASES=10000` searches harder.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;

use shipmate::domain::approval::{
    approval_deadline, decide_vote, Approval, ApprovalPolicy, Ballot, Vote, VoteOutcome,
    VoteRefusal,
};
use shipmate::domain::identity::Identity;
use shipmate::domain::promotion::{
    transition, Promotion, PromotionEvent as E, PromotionState as S, Stage, StageColumns,
    TransitionError,
};

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap()
}

fn person(n: usize) -> Identity {
    Identity::new("slack", &format!("U{n}"))
}

/// A promotion just created (not yet stored): `Stage::Requested`.
fn requested(id: i64, at: DateTime<Utc>) -> Promotion {
    Promotion {
        id,
        service: "api".into(),
        version: format!("1.{id}.0").parse().unwrap(),
        environment: "production".into(),
        requested_by: person(0),
        rollback: false,
        previous_version: None,
        required_approvals: 2,
        force_reason: None,
        hotfix_reason: None,
        retry_of: None,
        created_at: at,
        updated_at: at,
        expires_at: None,
        stage: Stage::Requested,
    }
}

// ---- what a consistent stage is (derived from SPEC §2 and `Stage`) ----

/// States whose deploy has started: they carry `started_at`.
fn has_started(state: S) -> bool {
    matches!(
        state,
        S::Deploying | S::Verifying | S::Succeeded | S::Failed | S::Interrupted | S::RolledBack
    )
}

/// States that wait or stopped short: they say why.
fn has_reason(state: S) -> bool {
    matches!(
        state,
        S::Queued
            | S::Failed
            | S::Interrupted
            | S::RolledBack
            | S::Rejected
            | S::Cancelled
            | S::Expired
    )
}

/// The fields a stage has are exactly the ones its state calls for, in time order, and the stage
/// survives a trip through its database columns.
fn assert_consistent(stage: &Stage) {
    let state = stage.state();
    assert_eq!(
        stage.started_at().is_some(),
        has_started(state),
        "{stage:?}"
    );
    assert_eq!(
        stage.finished_at().is_some(),
        state.is_terminal(),
        "{stage:?}"
    );
    assert_eq!(stage.reason().is_some(), has_reason(state), "{stage:?}");
    if let (Some(started), Some(finished)) = (stage.started_at(), stage.finished_at()) {
        assert!(started <= finished, "finished before it started: {stage:?}");
    }
    assert_eq!(
        Stage::from_columns(stage.columns()),
        Ok(stage.clone()),
        "columns round trip"
    );
}

/// A step of a random run: which event (either among those the state allows, so runs go deep,
/// or any event at all, so refusals are exercised), how many minutes pass, and a note.
#[derive(Debug, Clone)]
struct Step {
    pick: usize,
    allowed_only: bool,
    minutes: i64,
    note: String,
}

fn step() -> impl Strategy<Value = Step> {
    (any::<usize>(), any::<bool>(), 0i64..180, "[a-z ]{0,12}").prop_map(
        |(pick, allowed_only, minutes, note)| Step {
            pick,
            allowed_only,
            minutes,
            note,
        },
    )
}

/// The event a step means in `state`.
fn event_for(state: S, step: &Step) -> E {
    let allowed: Vec<E> = E::ALL
        .into_iter()
        .filter(|event| transition(state, *event).is_ok())
        .collect();
    if step.allowed_only && !allowed.is_empty() {
        allowed[step.pick % allowed.len()]
    } else {
        E::ALL[step.pick % E::ALL.len()]
    }
}

/// Checks one accepted move from `before` to `after` at `now` with `note`.
fn assert_move(before: &Promotion, event: E, after: &Promotion, now: DateTime<Utc>, note: &str) {
    let (from, to) = (before.state(), after.state());
    assert_eq!(
        Ok(to),
        transition(from, event),
        "apply agrees with the table"
    );
    assert_consistent(&after.stage);
    // A final state never moves again, except a success that a later rollback replaces.
    if from.is_terminal() {
        assert_eq!((from, to), (S::Succeeded, S::RolledBack), "{event:?}");
    }
    assert_ne!(to, S::Requested, "nothing goes back to requested");
    assert_eq!(after.updated_at, now);
    // What was asked for never changes; only the stage and its time do.
    let same_request = Promotion {
        stage: before.stage.clone(),
        updated_at: before.updated_at,
        ..after.clone()
    };
    assert_eq!(&same_request, before, "only stage and updated_at move");
    // A deploy starts once; an end happens once.
    match before.started_at() {
        Some(started) => assert_eq!(after.started_at(), Some(started), "start time kept"),
        None if to == S::Deploying => assert_eq!(after.started_at(), Some(now)),
        None => assert_eq!(after.started_at(), None),
    }
    match before.finished_at() {
        Some(finished) => assert_eq!(after.finished_at(), Some(finished), "end time kept"),
        None if to.is_terminal() => assert_eq!(after.finished_at(), Some(now)),
        None => assert_eq!(after.finished_at(), None),
    }
    if has_reason(to) {
        assert_eq!(after.reason(), Some(note), "the note is why");
    }
}

proptest! {
    /// Any sequence of events, accepted or refused, keeps a promotion consistent; refusals change
    /// nothing and say where the event would apply; the lifecycle has no cycles.
    #[test]
    fn random_events_never_reach_an_inconsistent_stage(steps in prop::collection::vec(step(), 0..40)) {
        let mut now = start();
        let mut promotion = requested(1, now);
        let mut visited = vec![promotion.state()];
        for step in &steps {
            now += chrono::Duration::minutes(step.minutes);
            let event = event_for(promotion.state(), step);
            match promotion.apply(event, now, &step.note) {
                Ok(next) => {
                    assert_move(&promotion, event, &next, now, &step.note);
                    prop_assert!(!visited.contains(&next.state()), "cycle through {}", next.state());
                    visited.push(next.state());
                    promotion = next;
                }
                Err(refused) => {
                    prop_assert_eq!(&refused, &TransitionError { from: promotion.state(), event });
                    prop_assert!(transition(promotion.state(), event).is_err());
                    prop_assert!(refused.to_string().contains("can't be"), "{}", refused);
                }
            }
        }
        // requested → awaiting → approved → queued → deploying → verifying → succeeded → rolled back
        prop_assert!(visited.len() <= 8);
    }

    /// Stored columns decode only into a consistent stage, and then into exactly those columns:
    /// a row can't smuggle in a deploying promotion without a start time, a finished one without
    /// its end, or a reason where none belongs.
    #[test]
    fn any_stored_columns_decode_to_a_consistent_stage_or_are_refused(
        state in prop::sample::select(S::ALL.to_vec()),
        reason in prop::option::of("[a-z]{0,5}"),
        started in prop::option::of(0i64..1000),
        finished in prop::option::of(0i64..1000),
    ) {
        let at = |minutes: i64| start() + chrono::Duration::minutes(minutes);
        let columns = StageColumns {
            state,
            reason,
            started_at: started.map(at),
            finished_at: finished.map(at),
        };
        match Stage::from_columns(columns.clone()) {
            Ok(stage) => {
                prop_assert_eq!(stage.columns(), columns);
                // Time order is the writer's business (one clock); the shape is the decoder's.
                let state = stage.state();
                prop_assert_eq!(stage.started_at().is_some(), has_started(state));
                prop_assert_eq!(stage.finished_at().is_some(), state.is_terminal());
                prop_assert_eq!(stage.reason().is_some(), has_reason(state));
            }
            Err(error) => prop_assert!(error.to_string().starts_with(state.as_str())),
        }
    }
}

// ---- votes ----

/// One vote in a random run: who (person 0 requested it), what, whether they hold the role at
/// that moment (roles change), and how many minutes pass first.
#[derive(Debug, Clone)]
struct Cast {
    voter: usize,
    vote: Vote,
    eligible: bool,
    minutes: i64,
}

fn cast(people: usize) -> impl Strategy<Value = Cast> {
    let vote = prop::sample::select(vec![Vote::Approve, Vote::Reject, Vote::Withdraw]);
    (0..people, vote, prop::bool::weighted(0.85), 0i64..90).prop_map(
        |(voter, vote, eligible, minutes)| Cast {
            voter,
            vote,
            eligible,
            minutes,
        },
    )
}

fn policy() -> impl Strategy<Value = ApprovalPolicy> {
    (1u32..4, any::<bool>(), 1u64..12).prop_map(|(required, self_approval, hours)| ApprovalPolicy {
        required,
        from_role: "leads".into(),
        self_approval,
        expires: Duration::from_secs(hours * 3600),
        major: None,
    })
}

/// A promotion awaiting approval and its approvals, voted on the way the engine does
/// (`engine/votes.rs`): the policy decides, the approval list changes by the outcome, and the
/// promotion moves when it is enough or rejected.
struct Ballots {
    policy: ApprovalPolicy,
    promotion: Promotion,
    approvals: Vec<Approval>,
    /// Who the votes so far say has approved: added by an accepted approve, removed by an
    /// accepted withdraw. The approval list must always be exactly this set.
    approvers: BTreeSet<Identity>,
}

impl Ballots {
    fn new(policy: ApprovalPolicy, now: DateTime<Utc>) -> Self {
        let mut promotion = requested(1, now).apply(E::NeedsApproval, now, "").unwrap();
        promotion.required_approvals = policy.required;
        promotion.expires_at = Some(approval_deadline(&policy, now));
        Ballots {
            policy,
            promotion,
            approvals: Vec::new(),
            approvers: BTreeSet::new(),
        }
    }

    /// Casts one vote at `now` and checks what it did.
    fn vote(&mut self, voter: &Identity, cast: &Cast, now: DateTime<Utc>) {
        if self.promotion.state() != S::AwaitingApproval {
            // The engine refuses votes on anything not awaiting approval (the transition fails).
            assert!(transition(self.promotion.state(), E::EnoughApprovals).is_err());
            return;
        }
        let ballot = Ballot {
            policy: &self.policy,
            required: self.policy.required,
            requester: &self.promotion.requested_by,
            voter,
            voter_eligible: cast.eligible,
            approvals: &self.approvals,
            expires_at: self.promotion.expires_at,
            now,
        };
        let had_approved = self.approvers.contains(voter);
        let before = self.approvals.len();
        match decide_vote(ballot, cast.vote) {
            Ok(outcome) => self.record(voter, cast, outcome, had_approved, before, now),
            Err(refusal) => self.check_refusal(voter, cast, &refusal, had_approved, now),
        }
        self.assert_counted_once();
    }

    fn record(
        &mut self,
        voter: &Identity,
        cast: &Cast,
        outcome: VoteOutcome,
        had_approved: bool,
        before: usize,
        now: DateTime<Utc>,
    ) {
        let expired = self.promotion.expires_at.is_some_and(|at| now >= at);
        assert!(!expired, "a vote after the deadline was taken: {outcome:?}");
        match outcome {
            VoteOutcome::Counted {
                approvals,
                complete,
            } => {
                assert_eq!(cast.vote, Vote::Approve);
                assert!(cast.eligible, "counted an approval from outside the role");
                assert!(!had_approved, "counted {voter} twice");
                assert!(
                    voter != &self.promotion.requested_by || self.policy.self_approval,
                    "the requester approved their own promotion"
                );
                assert_eq!(approvals, before + 1);
                assert_eq!(complete, approvals >= self.policy.required as usize);
                self.approvals.push(Approval {
                    by: voter.clone(),
                    at: now,
                });
                self.approvers.insert(voter.clone());
                if complete {
                    self.promotion = self
                        .promotion
                        .apply(E::EnoughApprovals, now, "enough")
                        .unwrap();
                }
            }
            VoteOutcome::AlreadyCounted { approvals } => {
                assert_eq!(cast.vote, Vote::Approve);
                assert!(had_approved, "'already counted' for someone never counted");
                assert_eq!(approvals, before);
            }
            VoteOutcome::Withdrawn { approvals } => {
                assert_eq!(cast.vote, Vote::Withdraw);
                assert!(had_approved, "withdrew an approval that was never given");
                assert_eq!(approvals, before - 1);
                self.approvals.retain(|a| &a.by != voter);
                self.approvers.remove(voter);
            }
            VoteOutcome::Rejects => {
                assert_eq!(cast.vote, Vote::Reject);
                assert!(cast.eligible, "a reject from outside the role counted");
                self.promotion = self.promotion.apply(E::Reject, now, "no").unwrap();
            }
        }
    }

    fn check_refusal(
        &self,
        voter: &Identity,
        cast: &Cast,
        refusal: &VoteRefusal,
        had_approved: bool,
        now: DateTime<Utc>,
    ) {
        assert!(!refusal.to_string().is_empty());
        let expired = self.promotion.expires_at.is_some_and(|at| now >= at);
        let withdrawing_own = cast.vote == Vote::Withdraw && had_approved;
        match refusal {
            VoteRefusal::NotEligible { .. } => assert!(!cast.eligible && !withdrawing_own),
            VoteRefusal::Expired => assert!(expired),
            VoteRefusal::SelfApproval { .. } => {
                assert!(voter == &self.promotion.requested_by && !self.policy.self_approval)
            }
            VoteRefusal::NothingToWithdraw => {
                assert!(cast.vote == Vote::Withdraw && !had_approved)
            }
        }
        // Before the deadline, an eligible voter's approve is never refused except to the
        // requester: a refusal that loses a vote would be as wrong as counting one twice.
        if cast.vote == Vote::Approve && cast.eligible && !expired {
            assert!(
                matches!(refusal, VoteRefusal::SelfApproval { .. }),
                "{refusal:?}"
            );
        }
    }

    /// One approval per person, and the list is exactly who the votes say approved.
    fn assert_counted_once(&self) {
        let listed: BTreeSet<Identity> = self.approvals.iter().map(|a| a.by.clone()).collect();
        assert_eq!(
            listed.len(),
            self.approvals.len(),
            "an approval counted twice"
        );
        assert_eq!(listed, self.approvers);
        if self.promotion.state() == S::Approved {
            assert!(self.approvals.len() >= self.policy.required as usize);
        }
        if self.promotion.state() == S::AwaitingApproval {
            assert!(self.approvals.len() < self.policy.required as usize);
        }
    }
}

proptest! {
    /// Double approvals, approve after withdraw, withdraw without approving, votes from people
    /// who left the role, votes after the deadline: no approval is ever counted twice, none is
    /// lost, and the promotion is approved exactly when enough distinct people approved.
    #[test]
    fn no_vote_is_ever_counted_twice(
        policy in policy(),
        casts in prop::collection::vec(cast(5), 0..40),
    ) {
        let mut now = start();
        let mut ballots = Ballots::new(policy, now);
        for cast in &casts {
            now += chrono::Duration::minutes(cast.minutes);
            ballots.vote(&person(cast.voter), cast, now);
        }
    }
}

// ---- one environment ----

/// What happens in one (service, environment) in a random run.
#[derive(Debug, Clone)]
enum Happening {
    /// Someone promotes (or retries, or rolls back: all open a new promotion the same way).
    Open { needs_approval: bool },
    /// An event reaches one of the promotions (`which` picks it), allowed or not.
    Event { which: usize, event: E },
    /// An approve vote by person `voter` on one of the promotions.
    Approve { which: usize, voter: usize },
}

fn happening() -> impl Strategy<Value = Happening> {
    prop_oneof![
        1 => any::<bool>().prop_map(|needs_approval| Happening::Open { needs_approval }),
        3 => (any::<usize>(), prop::sample::select(E::ALL.to_vec()))
            .prop_map(|(which, event)| Happening::Event { which, event }),
        1 => (any::<usize>(), 1usize..4).prop_map(|(which, voter)| Happening::Approve { which, voter }),
    ]
}

/// The promotions of one environment, with the database's rule as the engine meets it: a new
/// promotion is inserted only when none is active (`refuse_if_active`, then the partial unique
/// index). State changes of stored promotions are not checked by anything but the lifecycle.
struct Environment {
    promotions: Vec<Promotion>,
    approvals: Vec<Vec<Approval>>,
    policy: ApprovalPolicy,
}

impl Environment {
    fn active(&self) -> usize {
        self.promotions
            .iter()
            .filter(|p| p.state().is_active())
            .count()
    }

    fn open(&mut self, needs_approval: bool, now: DateTime<Utc>) {
        if self.active() > 0 {
            return; // refused, naming the active one
        }
        let id = self.promotions.len() as i64 + 1;
        let event = match needs_approval {
            true => E::NeedsApproval,
            false => E::NoApprovalNeeded,
        };
        let mut opened = requested(id, now).apply(event, now, "").unwrap();
        opened.expires_at = needs_approval.then(|| approval_deadline(&self.policy, now));
        assert!(
            opened.state().is_active(),
            "a new promotion holds the environment"
        );
        self.promotions.push(opened);
        self.approvals.push(Vec::new());
    }

    fn event(&mut self, which: usize, event: E, now: DateTime<Utc>) {
        if self.promotions.is_empty() {
            return;
        }
        let index = which % self.promotions.len();
        if let Ok(next) = self.promotions[index].apply(event, now, "event") {
            self.promotions[index] = next;
        }
    }

    fn approve(&mut self, which: usize, voter: usize, now: DateTime<Utc>) {
        if self.promotions.is_empty() {
            return;
        }
        let index = which % self.promotions.len();
        let promotion = &self.promotions[index];
        if promotion.state() != S::AwaitingApproval {
            return;
        }
        let ballot = Ballot {
            policy: &self.policy,
            required: self.policy.required,
            requester: &promotion.requested_by,
            voter: &person(voter),
            voter_eligible: true,
            approvals: &self.approvals[index],
            expires_at: promotion.expires_at,
            now,
        };
        if let Ok(VoteOutcome::Counted { complete, .. }) = decide_vote(ballot, Vote::Approve) {
            self.approvals[index].push(Approval {
                by: person(voter),
                at: now,
            });
            if complete {
                self.event(index, E::EnoughApprovals, now);
            }
        }
    }
}

proptest! {
    /// However promotions are opened, voted on and moved, one environment never has two active
    /// promotions: nothing moves a stored promotion that is done back into an active state.
    #[test]
    fn an_environment_never_has_two_active_promotions(
        happenings in prop::collection::vec(happening(), 0..60),
        minutes in prop::collection::vec(0i64..120, 60),
    ) {
        let mut env = Environment {
            promotions: Vec::new(),
            approvals: Vec::new(),
            policy: ApprovalPolicy {
                required: 2,
                from_role: "leads".into(),
                self_approval: false,
                expires: Duration::from_secs(6 * 3600),
                major: None,
            },
        };
        let mut now = start();
        for (happening, minutes) in happenings.iter().zip(&minutes) {
            now += chrono::Duration::minutes(*minutes);
            match happening {
                Happening::Open { needs_approval } => env.open(*needs_approval, now),
                Happening::Event { which, event } => env.event(*which, *event, now),
                Happening::Approve { which, voter } => env.approve(*which, *voter, now),
            }
            prop_assert!(env.active() <= 1, "two active: {:?}", env.promotions.iter().map(Promotion::describe).collect::<Vec<_>>());
            for promotion in &env.promotions {
                assert_consistent(&promotion.stage);
            }
        }
    }
}
