//! Promotions as a use case: create a release, promote, cancel, retry, roll back, and expire
//! unanswered approval requests (votes are in `votes.rs`). Each command is one transaction: read,
//! ask `domain`, write the state with its audit events and outbox jobs, commit.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::calendar::Calendar;
use super::chat::ChatOrigin;
use super::clock::Time;
use super::ledger::Ledger;
use super::view::{view_of, PromotionView};
use super::{bot_identity, environment_of, known_service, unknown_promotion, EngineError};
use crate::config::{Config, EnvironmentConfig, ServiceConfig};
use crate::domain::approval::{approval_deadline, carried_approvals, Approval, ApprovalPolicy};
use crate::domain::audit::AuditKind;
use crate::domain::duration::format_duration;
use crate::domain::identity::Actor;
use crate::domain::manifest::{self, Digest, Manifest, ReleaseType};
use crate::domain::permission::{authorize, Action, Denied};
use crate::domain::pipeline::{self, Pipeline, PipelineRefusal};
use crate::domain::platform::ChatPlatform;
use crate::domain::promotion::{Promotion, PromotionEvent, PromotionState, Stage};
use crate::domain::release::Release;
use crate::domain::version::{Version, VersionSpec};
use crate::domain::why::Blocker;
use crate::domain::window::Gate;
use crate::git;
use crate::metrics::{Metrics, RollbackLabels, ServiceLabels};
use crate::store::{JobKind, NewPromotion, NewRelease, Store, StoreError, Tx};

/// What the promotion commands need.
pub(super) struct Promotions {
    pub config: Arc<Config>,
    pub store: Store,
    pub time: Time,
    pub metrics: Arc<Metrics>,
    pub ledger: Ledger,
    pub calendar: Arc<Calendar>,
    /// The chat platforms that keep cards.
    pub platforms: Arc<HashSet<ChatPlatform>>,
}

/// How a new promotion gets its approvals.
enum ApprovalSource {
    /// As the environment's policy says.
    Policy,
    /// A retry keeps those approvals of the promotion it retries that still count
    /// (`approval::carried_approvals`); it awaits more when they are not enough today.
    Carried { from: i64, approvals: Vec<Approval> },
    /// None: shipmate rolls back a failed or aborted deploy at once (the failed version is live).
    Automatic,
}

impl ApprovalSource {
    /// Whether a promotion under `policy`, needing `required` approvals, opened with these
    /// approvals must wait for (more) votes.
    fn needs_approval(&self, policy: Option<&ApprovalPolicy>, required: u32) -> bool {
        match (policy, self) {
            (None, _) | (_, ApprovalSource::Automatic) => false,
            (Some(_), ApprovalSource::Policy) => true,
            (Some(_), ApprovalSource::Carried { approvals, .. }) => {
                approvals.len() < required as usize
            }
        }
    }
}

/// How a promote asks past the usual gates: an admin's `--force`, or the environment's hotfix
/// path (`--hotfix`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Overrides<'a> {
    pub force: Option<&'a str>,
    pub hotfix: Option<&'a str>,
}

/// What a new promotion is; the engine fills in the rest.
struct Opening<'a> {
    service: &'a str,
    version: &'a Version,
    environment: &'a EnvironmentConfig,
    rollback: bool,
    previous_version: Option<&'a Version>,
    force_reason: Option<&'a str>,
    hotfix_reason: Option<&'a str>,
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

/// A permission refusal, as the engine answers it.
pub(super) fn forbidden(denied: Denied) -> EngineError {
    EngineError::forbidden(denied.to_string())
}

impl Promotions {
    fn authorize(&self, actor: &Actor, action: Action<'_>) -> Result<(), EngineError> {
        authorize(&self.config.roles, actor, action).map_err(forbidden)
    }

    pub(super) fn service(&self, name: &str) -> Result<&ServiceConfig, EngineError> {
        known_service(&self.config, name)
    }

    /// Creates a release; for one that exists, a manifest that adds something (a new digest,
    /// changes, a commit time) updates it, and a changed digest clears the approvals of its
    /// promotions awaiting approval: what was approved is not what would ship. Answers the
    /// release and whether it is new.
    pub async fn create_release(
        &self,
        actor: &Actor,
        service: &str,
        version: &Version,
        commit: Option<&str>,
        notes: Option<&str>,
        manifest: &Manifest,
    ) -> Result<(Release, bool), EngineError> {
        let service_config = self.service(service)?;
        self.authorize(actor, Action::CreateRelease)?;
        let manifest = self
            .with_git_changes(service_config, version, manifest)
            .await?;
        let mut tx = self.store.begin().await?;
        let inserted = self
            .insert_release(&mut tx, actor, service, version, (commit, notes), &manifest)
            .await?;
        let created = inserted.is_some();
        let release = match inserted {
            Some(release) => release,
            None => {
                self.update_manifest(&mut tx, actor, service, version, &manifest)
                    .await?
            }
        };
        tx.commit().await?;
        Ok((release, created))
    }

    /// A new release of a service with `git = { path, tag }` and no changes given gets them from
    /// its tags (SPEC §10); what git cannot answer becomes a note on the card.
    async fn with_git_changes(
        &self,
        service: &ServiceConfig,
        version: &Version,
        given: &Manifest,
    ) -> Result<Manifest, EngineError> {
        let Some(source) = &service.git else {
            return Ok(given.clone());
        };
        if !given.changes.is_empty() || self.store.release(&service.name, version).await?.is_some()
        {
            return Ok(given.clone());
        }
        let versions = self.store.release_versions(&service.name).await?;
        let previous = manifest::previous_release(&versions, version);
        let read = git::read_changes(source, previous, version).await;
        Ok(Manifest {
            changes: read.changes,
            changes_note: read.note,
            ..given.clone()
        })
    }

    async fn update_manifest(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        service: &str,
        version: &Version,
        update: &Manifest,
    ) -> Result<Release, EngineError> {
        let exists = || {
            EngineError::conflict(format!(
                "{service} {version} already exists; promote it with /release promote {service} {version}, or create a new version"
            ))
        };
        let mut release = tx.release(service, version).await?.ok_or_else(exists)?;
        let Some(updated) = release.manifest.updated_by(update) else {
            return Err(exists());
        };
        tx.set_manifest(release.id, &updated).await?;
        let now = self.time.now();
        let digest_changed = updated.digest != release.manifest.digest;
        let shown = |digest: &Option<Digest>| {
            digest
                .as_ref()
                .map_or("none".to_string(), |d| d.short().to_string())
        };
        let detail = if digest_changed {
            format!(
                "{service} {version}: digest {} → {}",
                shown(&release.manifest.digest),
                shown(&updated.digest)
            )
        } else {
            format!("{service} {version}: manifest updated")
        };
        tx.audit(
            None,
            &actor.identity,
            AuditKind::ReleaseUpdated,
            &detail,
            now,
        )
        .await?;
        if digest_changed {
            self.clear_approvals_of(tx, actor, service, version, &updated)
                .await?;
        }
        release.manifest = updated;
        Ok(release)
    }

    /// The release's digest changed: its promotions awaiting approval start their approvals over,
    /// and deploy the new digest.
    async fn clear_approvals_of(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        service: &str,
        version: &Version,
        manifest: &Manifest,
    ) -> Result<(), EngineError> {
        let now = self.time.now();
        let digest = manifest.digest.as_ref().map(Digest::as_str);
        for id in tx.awaiting_of_release(service, version).await? {
            let cleared = tx.clear_approvals(id).await?;
            tx.set_promotion_digest(id, digest).await?;
            let detail = format!(
                "{cleared} approval(s) cleared: the digest of {service} {version} changed to {}; approve again",
                manifest.digest.as_ref().map_or("none", Digest::short)
            );
            tx.audit(
                Some(id),
                &actor.identity,
                AuditKind::ApprovalsCleared,
                &detail,
                now,
            )
            .await?;
            tx.add_thread_note(id, &detail, true, now).await?;
            self.ledger.touch_cards(tx, id).await?;
        }
        Ok(())
    }

    /// Inserts a release with its manifest and audit event; `None` when it exists already.
    async fn insert_release(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        service: &str,
        version: &Version,
        (commit, notes): (Option<&str>, Option<&str>),
        manifest: &Manifest,
    ) -> Result<Option<Release>, EngineError> {
        let now = self.time.now();
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
        let Some(mut release) = inserted else {
            return Ok(None);
        };
        if !manifest.is_empty() {
            tx.set_manifest(release.id, manifest).await?;
            release.manifest = manifest.clone();
        }
        let detail = format!("{service} {version}");
        tx.audit(
            None,
            &actor.identity,
            AuditKind::ReleaseCreated,
            &detail,
            now,
        )
        .await?;
        self.metrics
            .releases_created
            .get_or_create(&ServiceLabels {
                service: service.to_string(),
            })
            .inc();
        Ok(Some(release))
    }

    pub async fn promote(
        &self,
        actor: &Actor,
        service: &str,
        version: &VersionSpec,
        to: Option<&str>,
        overrides: Overrides<'_>,
        origin: Option<&ChatOrigin>,
    ) -> Result<PromotionView, EngineError> {
        let service_config = self.service(service)?;
        self.authorize(actor, Action::Promote)?;
        let force_reason = overrides.force;
        if force_reason.is_some() {
            self.authorize(actor, Action::Force)?;
        }
        let environments = service_config.pipeline();
        let pipeline = Pipeline::new(service, &environments);
        let new_manifest = match version {
            VersionSpec::Exact(version) => {
                self.with_git_changes(service_config, version, &Manifest::default())
                    .await?
            }
            VersionSpec::Latest => Manifest::default(),
        };
        let mut tx = self.store.begin().await?;
        let version = match version {
            VersionSpec::Exact(version) => version.clone(),
            VersionSpec::Latest => self.resolve_latest(&mut tx, &pipeline, to).await?,
        };
        let succeeded = tx.succeeded_environments(service, &version).await?;
        let target = pipeline.target(&version, to, |env| succeeded.iter().any(|s| s == env))?;
        let environment = environment_of(service_config, target)?;
        if overrides.hotfix.is_some() {
            self.check_hotfix_path(&mut tx, service, environment)
                .await?;
        }
        self.refuse_if_active(&mut tx, service, target).await?;
        let current = tx.current(service, target).await?.map(|p| p.version);
        pipeline::check_newer(service, target, current.as_ref(), &version)?;
        if force_reason.is_none() {
            if let Some(untested) = self
                .untested_digest(&mut tx, service, target, &version)
                .await?
            {
                return Err(EngineError::refused(untested.to_string()));
            }
        }
        // Promoting a version nobody created creates it (SPEC §1); a concurrent creator wins quietly.
        self.insert_release(
            &mut tx,
            actor,
            service,
            &version,
            (None, None),
            &new_manifest,
        )
        .await?;
        let promotion = self
            .open_promotion(
                &mut tx,
                actor,
                Opening {
                    service,
                    version: &version,
                    environment,
                    rollback: false,
                    previous_version: current.as_ref(),
                    force_reason,
                    hotfix_reason: overrides.hotfix,
                    retry_of: None,
                    approvals: ApprovalSource::Policy,
                    origin,
                },
            )
            .await?;
        self.finish(tx, promotion).await
    }

    /// A hotfix needs the environment's hotfix path, and never starts in a freeze (SPEC §10).
    async fn check_hotfix_path(
        &self,
        tx: &mut Tx,
        service: &str,
        environment: &EnvironmentConfig,
    ) -> Result<(), EngineError> {
        if environment.hotfix.is_none() {
            return Err(EngineError::refused(format!(
                "{service} {} has no hotfix path; add hotfix = {{ from = \"oncall\", required = 1 }} to that environment in bot.toml, or promote without --hotfix",
                environment.name
            )));
        }
        let now = self.time.now();
        let adhoc = tx.active_freezes(now).await?;
        let gate = self
            .calendar
            .gate_of(service, &environment.name, &adhoc, now);
        if !matches!(gate, Gate::Frozen { .. }) {
            return Ok(());
        }
        match self
            .calendar
            .gate_blocker((service, &environment.name), &gate, &adhoc, now)
        {
            Some(blocker) => Err(EngineError::refused(format!(
                "a hotfix never starts in a freeze: {blocker}"
            ))),
            _ => Ok(()),
        }
    }

    /// "What was tested is what ships" (SPEC §10): past the first environment, the release's
    /// digest must be the one that succeeded in the environment before; the blocker when not.
    /// Asked when promoting, and again when an approval would count (a new digest may have come
    /// since).
    pub(super) async fn untested_digest(
        &self,
        tx: &mut Tx,
        service: &str,
        target: &str,
        version: &Version,
    ) -> Result<Option<Blocker>, EngineError> {
        let environments = self.service(service)?.pipeline();
        let Some(previous) = Pipeline::new(service, &environments).previous(target)? else {
            return Ok(None);
        };
        let Some(release) = tx.release(service, version).await? else {
            return Ok(None);
        };
        let tested = tx.succeeded_digest(service, version, previous).await?;
        Ok(manifest::check_tested_digest(
            service,
            version,
            previous,
            release.manifest.digest.as_ref(),
            tested.as_ref().map(Option::as_deref),
        )
        .err())
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

    fn active_conflict(&self, active: &Promotion) -> EngineError {
        EngineError::conflict(busy(active, self.time.now()).to_string())
    }

    /// Inserts a promotion in the state the approval policy gives it, with its audit events and,
    /// when it needs no (more) approval, its deploy job.
    async fn open_promotion(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        request: Opening<'_>,
    ) -> Result<Promotion, EngineError> {
        let now = self.time.now();
        let policy = request
            .environment
            .approval_policy(request.hotfix_reason.is_some());
        let release_type = ReleaseType::between(request.previous_version, request.version);
        let required = policy.map_or(0, |p| p.required_for(release_type));
        let needs_approval = request.approvals.needs_approval(policy, required);
        let event = if needs_approval {
            PromotionEvent::NeedsApproval
        } else {
            PromotionEvent::NoApprovalNeeded
        };
        let opened = Stage::Requested
            .apply(event, now, "")
            .map_err(|e| EngineError::conflict(e.to_string()))?;
        let digest = tx
            .release(request.service, request.version)
            .await?
            .and_then(|release| release.manifest.digest);
        let inserted = tx
            .insert_promotion(NewPromotion {
                service: request.service,
                version: request.version,
                environment: &request.environment.name,
                stage: opened,
                requested_by: &actor.identity,
                rollback: request.rollback,
                previous_version: request.previous_version,
                required_approvals: match request.approvals {
                    ApprovalSource::Automatic => 0,
                    _ => required,
                },
                force_reason: request.force_reason,
                hotfix_reason: request.hotfix_reason,
                retry_of: request.retry_of,
                expires_at: policy
                    .filter(|_| needs_approval)
                    .map(|p| approval_deadline(p, now)),
                at: now,
                digest: digest.as_ref().map(Digest::as_str),
            })
            .await;
        let promotion = match inserted {
            Err(StoreError::ActiveExists) => {
                let active = self
                    .store
                    .active_promotion(request.service, &request.environment.name)
                    .await?;
                return Err(match active {
                    Some(active) => self.active_conflict(&active),
                    None => StoreError::ActiveExists.into(),
                });
            }
            other => other?,
        };
        self.record_opening(tx, actor, &promotion, &request, needs_approval)
            .await?;
        self.open_cards(tx, &promotion, request.origin).await?;
        if promotion.state() == PromotionState::Approved {
            return self.start_or_queue(tx, promotion).await;
        }
        Ok(promotion)
    }

    /// The audit events of a new promotion, and the approvals a retry carries over.
    async fn record_opening(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        promotion: &Promotion,
        request: &Opening<'_>,
        needs_approval: bool,
    ) -> Result<(), EngineError> {
        let now = self.time.now();
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
        if let Some(reason) = request.hotfix_reason {
            detail.push_str(&format!(" (hotfix: {reason})"));
        }
        tx.audit(
            Some(promotion.id),
            &actor.identity,
            AuditKind::Requested,
            &detail,
            now,
        )
        .await?;
        let approved = AuditKind::entered(PromotionState::Approved);
        match &request.approvals {
            ApprovalSource::Carried { from, approvals } => {
                for approval in approvals {
                    tx.add_approval(promotion.id, &approval.by, approval.at)
                        .await?;
                }
                let note = format!(
                    "{}/{} approvals carried over from #{from}",
                    approvals.len(),
                    promotion.required_approvals
                );
                let kind = if needs_approval {
                    AuditKind::Approval
                } else {
                    approved
                };
                tx.audit(Some(promotion.id), &actor.identity, kind, &note, now)
                    .await?;
            }
            ApprovalSource::Policy if !needs_approval => {
                tx.audit(
                    Some(promotion.id),
                    &actor.identity,
                    approved,
                    "no approval needed",
                    now,
                )
                .await?;
            }
            ApprovalSource::Automatic => {
                let note = request.force_reason.unwrap_or("automatic rollback");
                tx.audit(Some(promotion.id), &actor.identity, approved, note, now)
                    .await?;
            }
            ApprovalSource::Policy => {}
        }
        Ok(())
    }

    /// One card per chat platform: in the service's channel there, else where it was asked for.
    async fn open_cards(
        &self,
        tx: &mut Tx,
        promotion: &Promotion,
        origin: Option<&ChatOrigin>,
    ) -> Result<(), EngineError> {
        let Some(service) = self.config.service(&promotion.service) else {
            return Ok(());
        };
        for platform in self.platforms.iter() {
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
        self.ledger.touch_cards(tx, promotion.id).await?;
        Ok(())
    }

    /// Commits, wakes the workers, and answers the promotion as it now stands.
    pub(super) async fn finish(
        &self,
        tx: Tx,
        promotion: Promotion,
    ) -> Result<PromotionView, EngineError> {
        tx.commit().await?;
        if promotion.state() == PromotionState::Approved {
            self.ledger.wake_workers();
        }
        Ok(view_of(&self.store, promotion).await?)
    }

    pub async fn cancel(&self, actor: &Actor, id: i64) -> Result<PromotionView, EngineError> {
        let mut tx = self.store.begin().await?;
        let promotion = tx
            .promotion(id)
            .await?
            .ok_or_else(|| unknown_promotion(id))?;
        self.authorize(
            actor,
            Action::Cancel {
                requested_by: &promotion.requested_by,
            },
        )?;
        let reason = format!("cancelled by {}", actor.identity);
        let cancelled = self
            .ledger
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

    pub async fn retry(
        &self,
        actor: &Actor,
        id: i64,
        origin: Option<&ChatOrigin>,
    ) -> Result<PromotionView, EngineError> {
        self.authorize(actor, Action::Retry)?;
        let mut tx = self.store.begin().await?;
        let original = tx
            .promotion(id)
            .await?
            .ok_or_else(|| unknown_promotion(id))?;
        if !original.state().is_retryable() {
            return Err(EngineError::conflict(format!(
                "{} is {}; only failed or interrupted promotions can be retried",
                original.describe(),
                original.state().label()
            )));
        }
        let service = self.service(&original.service)?;
        let environment = environment_of(service, &original.environment)?;
        self.refuse_if_active(&mut tx, &original.service, &original.environment)
            .await?;
        let current = self.check_retry_target(&mut tx, &original).await?;
        let approvals = self
            .approvals_for_retry(&mut tx, actor, &original, environment)
            .await?;
        let promotion = self
            .open_promotion(
                &mut tx,
                actor,
                Opening {
                    service: &original.service,
                    version: &original.version,
                    environment,
                    rollback: original.rollback,
                    previous_version: current.as_ref(),
                    // An override is an admin's: a retry by anyone else goes through the gate.
                    force_reason: original
                        .force_reason
                        .as_deref()
                        .filter(|_| self.authorize(actor, Action::KeepForceOnRetry).is_ok()),
                    hotfix_reason: original.hotfix_reason.as_deref(),
                    retry_of: Some(original.id),
                    approvals,
                    origin,
                },
            )
            .await?;
        self.finish(tx, promotion).await
    }

    /// A retry passes the pipeline rules a new promotion would: the version must still stand
    /// succeeded in the previous environment and be newer than what runs (a rollback: still a
    /// version that ran there before). Answers what the environment runs now.
    async fn check_retry_target(
        &self,
        tx: &mut Tx,
        original: &Promotion,
    ) -> Result<Option<Version>, EngineError> {
        let (service, environment) = (&original.service, &original.environment);
        let current = tx.current(service, environment).await?.map(|p| p.version);
        if original.rollback {
            let ran_before = ran_before(tx, service, environment, current.as_ref()).await?;
            pipeline::rollback_target(
                service,
                environment,
                current.as_ref(),
                &ran_before,
                Some(&original.version),
            )?;
        } else {
            let environments = self.service(service)?.pipeline();
            let succeeded = tx
                .succeeded_environments(service, &original.version)
                .await?;
            Pipeline::new(service, &environments).target(
                &original.version,
                Some(environment),
                |env| succeeded.iter().any(|s| s == env),
            )?;
            pipeline::check_newer(service, environment, current.as_ref(), &original.version)?;
        }
        Ok(current)
    }

    /// The approvals of `original` that still count for a retry by `actor`.
    async fn approvals_for_retry(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        original: &Promotion,
        environment: &EnvironmentConfig,
    ) -> Result<ApprovalSource, EngineError> {
        let Some(policy) = environment.approval_policy(original.hotfix_reason.is_some()) else {
            return Ok(ApprovalSource::Policy);
        };
        let earlier = tx.approvals(original.id).await?;
        let approvals = carried_approvals(policy, &actor.identity, &earlier, self.time.now());
        Ok(ApprovalSource::Carried {
            from: original.id,
            approvals,
        })
    }

    pub async fn rollback(
        &self,
        actor: &Actor,
        service: &str,
        environment: &str,
        to: Option<&Version>,
        origin: Option<&ChatOrigin>,
    ) -> Result<PromotionView, EngineError> {
        let service_config = self.service(service)?;
        let environment_config = environment_of(service_config, environment)?;
        self.authorize(actor, Action::Rollback)?;
        let mut tx = self.store.begin().await?;
        self.refuse_if_active(&mut tx, service, environment).await?;
        let current_version = tx.current(service, environment).await?.map(|p| p.version);
        let ran_before =
            ran_before(&mut tx, service, environment, current_version.as_ref()).await?;
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
                Opening {
                    service,
                    version: &version,
                    environment: environment_config,
                    rollback: true,
                    previous_version: current_version.as_ref(),
                    force_reason: None,
                    hotfix_reason: None,
                    retry_of: None,
                    approvals: ApprovalSource::Policy,
                    origin,
                },
            )
            .await?;
        self.count_rollback(&promotion, false);
        self.finish(tx, promotion).await
    }

    /// Opens the rollback of `failed` (its environment back to the version it replaced), inside
    /// the caller's transaction: requested by shipmate, needing no approval, past windows and
    /// freezes (`why` is its override reason). `None` when there is nothing to roll back to (a
    /// first deploy) or the failed promotion was a rollback itself.
    pub(super) async fn open_automatic_rollback(
        &self,
        tx: &mut Tx,
        failed: &Promotion,
        why: &str,
    ) -> Result<Option<Promotion>, EngineError> {
        let Some(target) = failed
            .previous_version
            .as_ref()
            .filter(|_| !failed.rollback)
        else {
            return Ok(None);
        };
        let service_config = self.service(&failed.service)?;
        let environment_config = environment_of(service_config, &failed.environment)?;
        let promotion = self
            .open_promotion(
                tx,
                &Actor::new(bot_identity()),
                Opening {
                    service: &failed.service,
                    version: target,
                    environment: environment_config,
                    rollback: true,
                    previous_version: Some(&failed.version),
                    force_reason: Some(why),
                    hotfix_reason: None,
                    retry_of: None,
                    approvals: ApprovalSource::Automatic,
                    origin: None,
                },
            )
            .await?;
        self.cards_beside(tx, &promotion, failed).await?;
        self.count_rollback(&promotion, true);
        Ok(Some(promotion))
    }

    /// Cards for `promotion` wherever `beside` has one and the service names no channel (a
    /// promotion asked for in a chat channel is rolled back in view of it).
    async fn cards_beside(
        &self,
        tx: &mut Tx,
        promotion: &Promotion,
        beside: &Promotion,
    ) -> Result<(), EngineError> {
        for platform in self.platforms.iter() {
            if let Some(card) = self.store.chat_card(beside.id, *platform).await? {
                tx.add_chat_card(promotion.id, *platform, &card.channel)
                    .await?;
            }
        }
        self.ledger.touch_cards(tx, promotion.id).await?;
        Ok(())
    }

    fn count_rollback(&self, promotion: &Promotion, automatic: bool) {
        self.metrics
            .rollbacks
            .get_or_create(&RollbackLabels {
                service: promotion.service.clone(),
                environment: promotion.environment.clone(),
                automatic: automatic.to_string(),
            })
            .inc();
    }

    /// Expires awaiting-approval promotions whose deadline passed.
    pub async fn expire_approvals(&self) -> Result<usize, EngineError> {
        let now = self.time.now();
        let due = self.store.expired_approvals(now).await?;
        for id in &due {
            let mut tx = self.store.begin().await?;
            let still_due = tx.lock_promotion(*id).await?.filter(|p| {
                p.state() == PromotionState::AwaitingApproval
                    && p.expires_at.is_some_and(|at| at <= now)
            });
            if let Some(promotion) = still_due {
                let reason = "no decision before the approval deadline; promote again to ask anew";
                self.ledger
                    .apply(
                        &mut tx,
                        &promotion,
                        PromotionEvent::ApprovalExpired,
                        &bot_identity(),
                        reason,
                    )
                    .await?;
            }
            tx.commit().await?;
        }
        Ok(due.len())
    }

    /// An approved promotion starts now (a deploy job) or waits in `queued` with the reason on its
    /// card. `--force` skips windows and freezes.
    pub(super) async fn start_or_queue(
        &self,
        tx: &mut Tx,
        promotion: Promotion,
    ) -> Result<Promotion, EngineError> {
        let now = self.time.now();
        let adhoc = tx.active_freezes(now).await?;
        if let Some(blocker) = self.calendar.must_wait(&promotion, &adhoc, now) {
            return self
                .ledger
                .apply(
                    tx,
                    &promotion,
                    PromotionEvent::WaitForWindow,
                    &bot_identity(),
                    &blocker.to_string(),
                )
                .await;
        }
        tx.enqueue_deploy(promotion.id, self.time.real_now())
            .await?;
        Ok(promotion)
    }
}

/// `active` holds its environment: what `why` says and a second promote is refused with.
pub(super) fn busy(active: &Promotion, now: DateTime<Utc>) -> Blocker {
    let age = (now - active.created_at).to_std().unwrap_or_default();
    let age = std::time::Duration::from_secs(age.as_secs() / 60 * 60);
    let age = if age.is_zero() {
        "just now".to_string()
    } else {
        format!("{} ago", format_duration(age))
    };
    Blocker::Busy {
        service: active.service.clone(),
        environment: active.environment.clone(),
        active: format!(
            "{}, {}, by {}, {age}",
            active.describe(),
            active.state().label(),
            active.requested_by
        ),
        active_id: active.id,
    }
}

/// The versions that succeeded in an environment before the one it runs now, most recent first:
/// what a rollback may go to.
async fn ran_before(
    tx: &mut Tx,
    service: &str,
    environment: &str,
    current: Option<&Version>,
) -> Result<Vec<Version>, EngineError> {
    let mut versions = tx.succeeded_versions(service, environment).await?;
    versions.retain(|v| Some(v) != current);
    Ok(versions)
}
