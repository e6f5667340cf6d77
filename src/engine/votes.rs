//! Votes on a promotion awaiting approval: approve, reject, withdraw. The approval policy
//! (`domain::approval`) decides; this records the vote and moves the promotion when it is enough.

use super::promotions::Promotions;
use super::reply::Reply;
use super::view::view_of;
use super::{environment_of, unknown_promotion, EngineError};
use crate::domain::approval::{decide_vote, Ballot, ReactionVote, Vote, VoteOutcome, VoteRefusal};
use crate::domain::audit::AuditKind;
use crate::domain::identity::Actor;
use crate::domain::promotion::{transition, Promotion, PromotionEvent, PromotionState};
use crate::store::Tx;

/// A vote, with the reason a rejection gives.
pub(super) enum VoteKind {
    Approve,
    Reject(Option<String>),
    Withdraw,
}

impl Promotions {
    /// A reaction on a promotion's card, as the vote it stands for.
    pub async fn react(
        &self,
        actor: &Actor,
        id: i64,
        reaction: ReactionVote,
    ) -> Result<Reply, EngineError> {
        let kind = match reaction {
            ReactionVote::Approve => VoteKind::Approve,
            ReactionVote::Reject => VoteKind::Reject(None),
            ReactionVote::Withdraw => VoteKind::Withdraw,
        };
        self.vote(actor, id, kind).await
    }

    pub async fn vote(&self, actor: &Actor, id: i64, kind: VoteKind) -> Result<Reply, EngineError> {
        let mut tx = self.store.begin().await?;
        let promotion = tx
            .lock_promotion(id)
            .await?
            .ok_or_else(|| unknown_promotion(id))?;
        let approvals = tx.approvals(id).await?;
        let already_approved = approvals.iter().any(|a| a.by == actor.identity);
        if matches!(kind, VoteKind::Approve) && already_approved {
            drop(tx);
            let view = view_of(&self.store, promotion).await?;
            return Ok(Reply::promotion(view, "your approval was already counted"));
        }
        // Taking away a reaction that never counted needs no answer (an ineligible person's
        // reaction was answered when it was added; a replayed removal has nothing left to do).
        if matches!(kind, VoteKind::Withdraw) && !already_approved {
            return Ok(Reply::Nothing);
        }
        let (vote, event) = match &kind {
            VoteKind::Approve => (Vote::Approve, PromotionEvent::EnoughApprovals),
            VoteKind::Reject(_) => (Vote::Reject, PromotionEvent::Reject),
            VoteKind::Withdraw => (Vote::Withdraw, PromotionEvent::EnoughApprovals),
        };
        let not_open = promotion.state() != PromotionState::AwaitingApproval;
        let environment = self
            .service(&promotion.service)
            .and_then(|s| environment_of(s, &promotion.environment))?;
        let hotfix = promotion.hotfix_reason.is_some();
        let policy = match (environment.approval_policy(hotfix), not_open) {
            (Some(policy), false) => policy,
            _ => {
                let error = transition(promotion.state(), event).err();
                let why =
                    error.map_or_else(|| "it needs no approval".to_string(), |e| e.to_string());
                return Err(EngineError::conflict(format!(
                    "{}: {why}",
                    promotion.describe()
                )));
            }
        };
        let ballot = Ballot {
            policy,
            required: promotion.required_approvals,
            requester: &promotion.requested_by,
            voter: &actor.identity,
            voter_eligible: self.config.roles.holds(actor, &policy.from_role),
            approvals: &approvals,
            expires_at: promotion.expires_at,
            now: self.time.now(),
        };
        let outcome =
            decide_vote(ballot, vote).map_err(|refusal| vote_refused(&promotion, refusal))?;
        // An approval that would count waits for the checklist, and is refused for an artifact
        // that is not the one tested before (SPEC §10).
        if matches!(outcome, VoteOutcome::Counted { .. }) {
            if let Some(blocker) = self
                .approval_blocker(&mut tx, &promotion, environment)
                .await?
            {
                return Err(EngineError::refused(format!(
                    "{}: not approved yet: {blocker}",
                    promotion.describe()
                )));
            }
        }
        let (promotion, note) = self
            .record_vote(&mut tx, actor, &promotion, outcome, kind)
            .await?;
        let view = self.finish(tx, promotion).await?;
        Ok(Reply::promotion(view, &note))
    }

    async fn record_vote(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        promotion: &Promotion,
        outcome: VoteOutcome,
        kind: VoteKind,
    ) -> Result<(Promotion, String), EngineError> {
        let now = self.time.now();
        let who = &actor.identity;
        let required = promotion.required_approvals;
        match outcome {
            VoteOutcome::Counted {
                approvals,
                complete,
            } => {
                tx.add_approval(promotion.id, who, now).await?;
                let note = format!("approval {approvals}/{required}");
                tx.audit(Some(promotion.id), who, AuditKind::Approval, &note, now)
                    .await?;
                if !complete {
                    self.ledger.touch_cards(tx, promotion.id).await?;
                    return Ok((promotion.clone(), note));
                }
                let approved = self
                    .ledger
                    .apply(tx, promotion, PromotionEvent::EnoughApprovals, who, &note)
                    .await?;
                let started = self.start_or_queue(tx, approved).await?;
                let next = match started.state() {
                    PromotionState::Queued => "approved, queued",
                    _ => "approved, deploying",
                };
                Ok((started, format!("{note}: {next}")))
            }
            VoteOutcome::AlreadyCounted { approvals } => Ok((
                promotion.clone(),
                format!("your approval was already counted ({approvals}/{required})"),
            )),
            VoteOutcome::Withdrawn { approvals } => {
                tx.remove_approval(promotion.id, who).await?;
                let note = format!("approval withdrawn ({approvals}/{required})");
                tx.audit(
                    Some(promotion.id),
                    who,
                    AuditKind::ApprovalWithdrawn,
                    &note,
                    now,
                )
                .await?;
                self.ledger.touch_cards(tx, promotion.id).await?;
                Ok((promotion.clone(), note))
            }
            VoteOutcome::Rejects => {
                let reason = match kind {
                    VoteKind::Reject(Some(reason)) => format!("rejected by {who}: {reason}"),
                    _ => format!("rejected by {who}"),
                };
                let rejected = self
                    .ledger
                    .apply(tx, promotion, PromotionEvent::Reject, who, &reason)
                    .await?;
                Ok((rejected, "rejected".to_string()))
            }
        }
    }
}

fn vote_refused(promotion: &Promotion, refusal: VoteRefusal) -> EngineError {
    let message = format!("{}: {refusal}", promotion.describe());
    match refusal {
        VoteRefusal::NotEligible { .. } => EngineError::forbidden(message),
        VoteRefusal::SelfApproval { .. } | VoteRefusal::Expired => EngineError::refused(message),
        VoteRefusal::NothingToWithdraw => EngineError::conflict(message),
    }
}
