//! The commands that change state. Each is one transaction: read, ask `domain`, write state, audit
//! and outbox jobs, commit.

use crate::config::EnvironmentConfig;
use crate::domain::approval::{
    approval_deadline, decide_vote, Ballot, Vote, VoteOutcome, VoteRefusal,
};
use crate::domain::duration::format_duration;
use crate::domain::identity::{Actor, ADMINS, DEPLOYERS};
use crate::domain::pipeline::{self, Pipeline, PipelineRefusal};
use crate::domain::platform::ChatPlatform;
use crate::domain::promotion::{transition, PromotionEvent, PromotionState};
use crate::domain::version::{Version, VersionSpec};
use crate::metrics::ServiceLabels;
use crate::store::{
    JobKind, NewPromotion, NewRelease, PromotionRecord, PromotionView, ReleaseRecord, StoreError,
    Tx,
};

use super::chat::ChatOrigin;
use super::reply::Reply;
use super::{describe, environment_of, unknown_promotion, Engine, EngineError};

pub(super) enum VoteKind {
    Approve,
    Reject(Option<String>),
    Withdraw,
}

/// How a new promotion gets its approvals.
enum ApprovalSource {
    /// As the environment's policy says.
    Policy,
    /// A retry keeps the approvals of the promotion it retries.
    CarriedFrom(i64),
}

/// What a new promotion is; the engine fills in the rest.
struct Request<'a> {
    service: &'a str,
    version: &'a Version,
    environment: &'a EnvironmentConfig,
    rollback: bool,
    previous_version: Option<&'a Version>,
    force_reason: Option<&'a str>,
    retry_of: Option<i64>,
    approvals: ApprovalSource,
    origin: Option<&'a ChatOrigin>,
}

impl From<PipelineRefusal> for EngineError {
    fn from(refusal: PipelineRefusal) -> Self {
        match refusal {
            PipelineRefusal::UnknownEnvironment { .. } => {
                EngineError::not_found(refusal.to_string())
            }
            other => EngineError::refused(other.to_string()),
        }
    }
}

impl Engine {
    fn require_deployer(&self, actor: &Actor, action: &str) -> Result<(), EngineError> {
        if self.config().roles.may_deploy(actor) {
            Ok(())
        } else {
            Err(EngineError::forbidden(format!(
                "you need the `{DEPLOYERS}` role to {action}; ask an admin to add {} to [roles].{DEPLOYERS} in bot.toml",
                actor.identity
            )))
        }
    }

    pub(super) async fn create_release(
        &self,
        actor: &Actor,
        service: &str,
        version: &Version,
        commit: Option<&str>,
        notes: Option<&str>,
    ) -> Result<ReleaseRecord, EngineError> {
        self.service(service)?;
        self.require_deployer(actor, "create releases")?;
        let mut tx = self.store().begin().await?;
        let inserted = self
            .insert_release(&mut tx, actor, service, version, commit, notes)
            .await?;
        let Some(release) = inserted else {
            return Err(EngineError::conflict(format!(
                "{service} {version} already exists; promote it with /release promote {service} {version}, or create a new version"
            )));
        };
        tx.commit().await?;
        Ok(release)
    }

    /// Inserts a release with its audit event; `None` when it exists already.
    async fn insert_release(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        service: &str,
        version: &Version,
        commit: Option<&str>,
        notes: Option<&str>,
    ) -> Result<Option<ReleaseRecord>, EngineError> {
        let now = self.now();
        let inserted = tx
            .insert_release(NewRelease {
                service,
                version,
                commit,
                notes,
                created_by: &actor.identity,
                at: now,
            })
            .await?;
        let Some(release) = inserted else {
            return Ok(None);
        };
        let detail = format!("{service} {version}");
        tx.audit(None, &actor.identity, "release_created", &detail, now)
            .await?;
        self.metrics()
            .releases_created
            .get_or_create(&ServiceLabels {
                service: service.to_string(),
            })
            .inc();
        Ok(Some(release))
    }

    pub(super) async fn promote(
        &self,
        actor: &Actor,
        service: &str,
        version: &VersionSpec,
        to: Option<&str>,
        force_reason: Option<&str>,
        origin: Option<&ChatOrigin>,
    ) -> Result<PromotionView, EngineError> {
        let service_config = self.service(service)?;
        self.require_deployer(actor, "promote")?;
        if force_reason.is_some() && !self.config().roles.holds(actor, ADMINS) {
            return Err(EngineError::forbidden(format!(
                "only `{ADMINS}` may use --force; promote without it, or ask an admin"
            )));
        }
        let environments = service_config.pipeline();
        let pipeline = Pipeline::new(service, &environments);
        let mut tx = self.store().begin().await?;
        let version = match version {
            VersionSpec::Exact(version) => version.clone(),
            VersionSpec::Latest => self.resolve_latest(&mut tx, &pipeline, to).await?,
        };
        let succeeded = tx.succeeded_environments(service, &version).await?;
        let target = pipeline.target(&version, to, |env| succeeded.iter().any(|s| s == env))?;
        let environment = environment_of(service_config, target)?;
        self.refuse_if_active(&mut tx, service, target).await?;
        let current = tx.current(service, target).await?.map(|p| p.version);
        pipeline::check_newer(service, target, current.as_ref(), &version)?;
        // Promoting a version nobody created creates it (SPEC §1); a concurrent creator wins quietly.
        self.insert_release(&mut tx, actor, service, &version, None, None)
            .await?;
        let promotion = self
            .open_promotion(
                &mut tx,
                actor,
                Request {
                    service,
                    version: &version,
                    environment,
                    rollback: false,
                    previous_version: current.as_ref(),
                    force_reason,
                    retry_of: None,
                    approvals: ApprovalSource::Policy,
                    origin,
                },
            )
            .await?;
        self.finish(tx, promotion).await
    }

    async fn resolve_latest(
        &self,
        tx: &mut Tx,
        pipeline: &Pipeline<'_>,
        to: Option<&str>,
    ) -> Result<Version, EngineError> {
        let service = pipeline.service;
        let target = match to {
            Some(env) => env,
            None => pipeline
                .environments
                .first()
                .map(String::as_str)
                .unwrap_or_default(),
        };
        let current = tx.current(service, target).await?.map(|p| p.version);
        match pipeline.previous(target)? {
            None => {
                let created = tx.release_versions(service).await?;
                Ok(pipeline::latest_created(
                    service,
                    target,
                    &created,
                    current.as_ref(),
                )?)
            }
            Some(previous) => {
                let succeeded = tx.succeeded_versions(service, previous).await?;
                Ok(pipeline::latest_succeeded(
                    service,
                    target,
                    previous,
                    &succeeded,
                    current.as_ref(),
                )?)
            }
        }
    }

    async fn refuse_if_active(
        &self,
        tx: &mut Tx,
        service: &str,
        environment: &str,
    ) -> Result<(), EngineError> {
        match tx.active_promotion(service, environment).await? {
            Some(active) => Err(self.active_conflict(&active)),
            None => Ok(()),
        }
    }

    fn active_conflict(&self, active: &PromotionRecord) -> EngineError {
        let age = (self.now() - active.created_at)
            .to_std()
            .unwrap_or_default();
        let age = std::time::Duration::from_secs(age.as_secs() / 60 * 60);
        let age = if age.is_zero() {
            "just now".to_string()
        } else {
            format!("{} ago", format_duration(age))
        };
        EngineError::conflict(format!(
            "{} {} already has a promotion in progress: {}, {}, by {}, {age}. Wait for it to finish or cancel it with /release cancel {}",
            active.service,
            active.environment,
            describe(active),
            active.state.label(),
            active.requested_by,
            active.id
        ))
    }

    /// Inserts a promotion in the state the approval policy gives it, with its audit events and,
    /// when it needs no (more) approval, its deploy job.
    async fn open_promotion(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        request: Request<'_>,
    ) -> Result<PromotionRecord, EngineError> {
        let now = self.now();
        let policy = request.environment.approvals.as_ref();
        let needs_approval =
            policy.is_some() && matches!(request.approvals, ApprovalSource::Policy);
        let event = if needs_approval {
            PromotionEvent::NeedsApproval
        } else {
            PromotionEvent::NoApprovalNeeded
        };
        let state = transition(PromotionState::Requested, event)
            .map_err(|e| EngineError::conflict(e.to_string()))?;
        let inserted = tx
            .insert_promotion(NewPromotion {
                service: request.service,
                version: request.version,
                environment: &request.environment.name,
                state,
                requested_by: &actor.identity,
                rollback: request.rollback,
                previous_version: request.previous_version,
                required_approvals: policy.map_or(0, |p| p.required),
                force_reason: request.force_reason,
                retry_of: request.retry_of,
                expires_at: policy
                    .filter(|_| needs_approval)
                    .map(|p| approval_deadline(p, now)),
                at: now,
            })
            .await;
        let promotion = match inserted {
            Err(StoreError::ActiveExists) => {
                let active = self
                    .store()
                    .active_promotion(request.service, &request.environment.name)
                    .await?;
                return Err(match active {
                    Some(active) => self.active_conflict(&active),
                    None => StoreError::ActiveExists.into(),
                });
            }
            other => other?,
        };
        let mut detail = format!(
            "{} {} → {}",
            request.service, request.version, request.environment.name
        );
        if request.rollback {
            detail.push_str(" (rollback)");
        }
        if let Some(original) = request.retry_of {
            detail.push_str(&format!(" (retry of #{original})"));
        }
        if let Some(reason) = request.force_reason {
            detail.push_str(&format!(" (forced: {reason})"));
        }
        tx.audit(
            Some(promotion.id),
            &actor.identity,
            "requested",
            &detail,
            now,
        )
        .await?;
        match request.approvals {
            ApprovalSource::CarriedFrom(original) => {
                for approval in tx.approvals(original).await? {
                    tx.add_approval(promotion.id, &approval.by, approval.at)
                        .await?;
                }
                let note = format!("approvals carried over from #{original}");
                tx.audit(Some(promotion.id), &actor.identity, "approved", &note, now)
                    .await?;
            }
            ApprovalSource::Policy if !needs_approval => {
                tx.audit(
                    Some(promotion.id),
                    &actor.identity,
                    "approved",
                    "no approval needed",
                    now,
                )
                .await?;
            }
            ApprovalSource::Policy => {}
        }
        self.open_cards(tx, &promotion, request.origin).await?;
        if promotion.state == PromotionState::Approved {
            return self.start_or_queue(tx, promotion).await;
        }
        Ok(promotion)
    }

    /// One card per chat platform: in the service's channel there, else where it was asked for.
    async fn open_cards(
        &self,
        tx: &mut Tx,
        promotion: &PromotionRecord,
        origin: Option<&ChatOrigin>,
    ) -> Result<(), EngineError> {
        let Ok(service) = self.service(&promotion.service) else {
            return Ok(());
        };
        for platform in self.inner.chats.keys() {
            let configured = match platform {
                ChatPlatform::Slack => service.channels.slack.as_deref(),
                ChatPlatform::Discord => service.channels.discord.as_deref(),
            };
            let asked_here = origin
                .filter(|o| o.platform == *platform)
                .map(|o| o.channel.as_str());
            if let Some(channel) = configured.or(asked_here) {
                tx.add_chat_card(promotion.id, *platform, channel).await?;
            }
        }
        self.touch_cards(tx, promotion.id).await?;
        Ok(())
    }

    /// Commits, wakes the workers, and answers the promotion as it now stands.
    async fn finish(
        &self,
        tx: Tx,
        promotion: PromotionRecord,
    ) -> Result<PromotionView, EngineError> {
        tx.commit().await?;
        if promotion.state == PromotionState::Approved {
            self.notify_workers();
        }
        Ok(self.store().view(promotion).await?)
    }

    pub(super) async fn vote(
        &self,
        actor: &Actor,
        id: i64,
        kind: VoteKind,
    ) -> Result<Reply, EngineError> {
        let mut tx = self.store().begin().await?;
        let promotion = tx
            .lock_promotion(id)
            .await?
            .ok_or_else(|| unknown_promotion(id))?;
        let approvals = tx.approvals(id).await?;
        let already_approved = approvals.iter().any(|a| a.by == actor.identity);
        if matches!(kind, VoteKind::Approve) && already_approved {
            drop(tx);
            let view = self.store().view(promotion).await?;
            return Ok(Reply::promotion(view, "your approval was already counted"));
        }
        let (vote, event) = match &kind {
            VoteKind::Approve => (Vote::Approve, PromotionEvent::EnoughApprovals),
            VoteKind::Reject(_) => (Vote::Reject, PromotionEvent::Reject),
            VoteKind::Withdraw => (Vote::Withdraw, PromotionEvent::EnoughApprovals),
        };
        let not_open = promotion.state != PromotionState::AwaitingApproval;
        let environment = self
            .service(&promotion.service)
            .and_then(|s| environment_of(s, &promotion.environment))?;
        let policy = match (&environment.approvals, not_open) {
            (Some(policy), false) => policy,
            _ => {
                let error = transition(promotion.state, event).err();
                let why =
                    error.map_or_else(|| "it needs no approval".to_string(), |e| e.to_string());
                return Err(EngineError::conflict(format!(
                    "{}: {why}",
                    describe(&promotion)
                )));
            }
        };
        let ballot = Ballot {
            policy,
            requester: &promotion.requested_by,
            voter: &actor.identity,
            voter_eligible: self.config().roles.holds(actor, &policy.from_role),
            approvals: &approvals,
            expires_at: promotion.expires_at,
            now: self.now(),
        };
        let outcome =
            decide_vote(ballot, vote).map_err(|refusal| vote_refused(&promotion, refusal))?;
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
        promotion: &PromotionRecord,
        outcome: VoteOutcome,
        kind: VoteKind,
    ) -> Result<(PromotionRecord, String), EngineError> {
        let now = self.now();
        let who = &actor.identity;
        let required = promotion.required_approvals;
        match outcome {
            VoteOutcome::Counted {
                approvals,
                complete,
            } => {
                tx.add_approval(promotion.id, who, now).await?;
                let note = format!("approval {approvals}/{required}");
                tx.audit(Some(promotion.id), who, "approval", &note, now)
                    .await?;
                if !complete {
                    self.touch_cards(tx, promotion.id).await?;
                    return Ok((promotion.clone(), note));
                }
                let approved = self
                    .apply(tx, promotion, PromotionEvent::EnoughApprovals, who, &note)
                    .await?;
                let started = self.start_or_queue(tx, approved).await?;
                let next = match started.state {
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
                tx.audit(Some(promotion.id), who, "approval_withdrawn", &note, now)
                    .await?;
                self.touch_cards(tx, promotion.id).await?;
                Ok((promotion.clone(), note))
            }
            VoteOutcome::Rejects => {
                let reason = match kind {
                    VoteKind::Reject(Some(reason)) => format!("rejected by {who}: {reason}"),
                    _ => format!("rejected by {who}"),
                };
                let rejected = self
                    .apply(tx, promotion, PromotionEvent::Reject, who, &reason)
                    .await?;
                Ok((rejected, "rejected".to_string()))
            }
        }
    }

    pub(super) async fn cancel(
        &self,
        actor: &Actor,
        id: i64,
    ) -> Result<PromotionView, EngineError> {
        let mut tx = self.store().begin().await?;
        let promotion = tx
            .promotion(id)
            .await?
            .ok_or_else(|| unknown_promotion(id))?;
        if promotion.requested_by != actor.identity {
            self.require_deployer(actor, "cancel someone else's promotion")?;
        }
        let reason = format!("cancelled by {}", actor.identity);
        let cancelled = self
            .apply(
                &mut tx,
                &promotion,
                PromotionEvent::Cancel,
                &actor.identity,
                &reason,
            )
            .await?;
        tx.delete_jobs(JobKind::Deploy, id).await?;
        self.finish(tx, cancelled).await
    }

    pub(super) async fn retry(
        &self,
        actor: &Actor,
        id: i64,
        origin: Option<&ChatOrigin>,
    ) -> Result<PromotionView, EngineError> {
        self.require_deployer(actor, "retry")?;
        let mut tx = self.store().begin().await?;
        let original = tx
            .promotion(id)
            .await?
            .ok_or_else(|| unknown_promotion(id))?;
        if !original.state.is_retryable() {
            return Err(EngineError::conflict(format!(
                "{} is {}; only failed or interrupted promotions can be retried",
                describe(&original),
                original.state.label()
            )));
        }
        let service = self.service(&original.service)?;
        let environment = environment_of(service, &original.environment)?;
        self.refuse_if_active(&mut tx, &original.service, &original.environment)
            .await?;
        let current = tx
            .current(&original.service, &original.environment)
            .await?
            .map(|p| p.version);
        if !original.rollback {
            pipeline::check_newer(
                &original.service,
                &original.environment,
                current.as_ref(),
                &original.version,
            )?;
        }
        let promotion = self
            .open_promotion(
                &mut tx,
                actor,
                Request {
                    service: &original.service,
                    version: &original.version,
                    environment,
                    rollback: original.rollback,
                    previous_version: current.as_ref(),
                    // An override is an admin's: a retry by anyone else goes through the gate.
                    force_reason: original
                        .force_reason
                        .as_deref()
                        .filter(|_| self.config().roles.holds(actor, ADMINS)),
                    retry_of: Some(original.id),
                    approvals: ApprovalSource::CarriedFrom(original.id),
                    origin,
                },
            )
            .await?;
        self.finish(tx, promotion).await
    }

    pub(super) async fn rollback(
        &self,
        actor: &Actor,
        service: &str,
        environment: &str,
        to: Option<&Version>,
        origin: Option<&ChatOrigin>,
    ) -> Result<PromotionView, EngineError> {
        let service_config = self.service(service)?;
        let environment_config = environment_of(service_config, environment)?;
        self.require_deployer(actor, "roll back")?;
        let mut tx = self.store().begin().await?;
        self.refuse_if_active(&mut tx, service, environment).await?;
        let current = tx.current(service, environment).await?;
        let mut ran_before = tx.succeeded_versions(service, environment).await?;
        if let Some(current) = &current {
            ran_before.retain(|v| v != &current.version);
        }
        let current_version = current.map(|p| p.version);
        let version = pipeline::rollback_target(
            service,
            environment,
            current_version.as_ref(),
            &ran_before,
            to,
        )?;
        let promotion = self
            .open_promotion(
                &mut tx,
                actor,
                Request {
                    service,
                    version: &version,
                    environment: environment_config,
                    rollback: true,
                    previous_version: current_version.as_ref(),
                    force_reason: None,
                    retry_of: None,
                    approvals: ApprovalSource::Policy,
                    origin,
                },
            )
            .await?;
        self.finish(tx, promotion).await
    }

    /// Expires awaiting-approval promotions whose deadline passed.
    pub async fn expire_approvals(&self) -> Result<usize, EngineError> {
        let now = self.now();
        let due = self.store().expired_approvals(now).await?;
        for id in &due {
            self.with_promotion(*id, |engine, tx, promotion| {
                Box::pin(async move {
                    if promotion.state != PromotionState::AwaitingApproval
                        || promotion.expires_at.is_none_or(|at| at > now)
                    {
                        return Ok(());
                    }
                    let reason =
                        "no decision before the approval deadline; promote again to ask anew";
                    engine
                        .apply(
                            tx,
                            &promotion,
                            PromotionEvent::ApprovalExpired,
                            &super::bot_identity(),
                            reason,
                        )
                        .await?;
                    Ok(())
                })
            })
            .await?;
        }
        Ok(due.len())
    }

    /// Runs `change` on one promotion in its own transaction.
    pub(super) async fn with_promotion<F>(&self, id: i64, change: F) -> Result<(), EngineError>
    where
        F: for<'t> FnOnce(
            &'t Engine,
            &'t mut Tx,
            PromotionRecord,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(), EngineError>> + Send + 't>,
        >,
    {
        let mut tx = self.store().begin().await?;
        if let Some(promotion) = tx.lock_promotion(id).await? {
            change(self, &mut tx, promotion).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

fn vote_refused(promotion: &PromotionRecord, refusal: VoteRefusal) -> EngineError {
    let message = format!("{}: {refusal}", describe(promotion));
    match refusal {
        VoteRefusal::NotEligible { .. } => EngineError::forbidden(message),
        VoteRefusal::SelfApproval { .. } | VoteRefusal::Expired => EngineError::refused(message),
        VoteRefusal::NothingToWithdraw => EngineError::conflict(message),
    }
}
