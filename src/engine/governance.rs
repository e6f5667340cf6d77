//! Release governance on one promotion (SPEC §10): checklist ticks, `why`, and telling the
//! approvers (the card's mention, one reminder at 80 % of the approval time). The reasons
//! themselves are `domain::why`'s, shared with the refusals.

use super::promotions::{busy, Promotions};
use super::reply::Reply;
use super::view::view_of;
use super::{environment_of, unknown_promotion, EngineError};
use crate::config::{Config, EnvironmentConfig};
use crate::domain::approval::ApprovalPolicy;
use crate::domain::audit::AuditKind;
use crate::domain::identity::{Actor, Identity};
use crate::domain::permission::{authorize, Action};
use crate::domain::promotion::{Promotion, PromotionState};
use crate::domain::why::{self, Blocker};
use crate::store::{Store, Tick, Tx};

/// What a promotion waits for, or what stopped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Why {
    pub promotion: Promotion,
    /// Empty: nothing holds it (it deploys, or it is done).
    pub blockers: Vec<Blocker>,
}

impl Why {
    /// `#42 api 1.4.2 → production is awaiting approval:` and one line per reason.
    pub fn to_text(&self) -> String {
        let head = format!(
            "{} is {}",
            self.promotion.describe(),
            self.promotion.state().label()
        );
        if self.blockers.is_empty() {
            return format!("{head}: nothing holds it up");
        }
        let lines: Vec<String> = self
            .blockers
            .iter()
            .map(|blocker| format!("• {blocker}"))
            .collect();
        format!("{head}:\n{}", lines.join("\n"))
    }
}

/// One checklist item as a card shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecklistLine {
    /// From 1.
    pub number: usize,
    pub text: String,
    pub ticked_by: Option<String>,
}

/// The environment's checklist with who ticked what.
fn checklist_lines(items: &[String], ticks: &[Tick]) -> Vec<ChecklistLine> {
    items
        .iter()
        .enumerate()
        .map(|(index, text)| ChecklistLine {
            number: index + 1,
            text: text.clone(),
            ticked_by: ticks
                .iter()
                .find(|tick| tick.item == index + 1)
                .map(|tick| tick.by.clone()),
        })
        .collect()
}

/// What a promotion asks of people, for its card and page: the checklist of its environment with
/// who ticked what, and who may approve it.
pub(super) async fn asked_of(
    config: &Config,
    store: &Store,
    promotion: &Promotion,
) -> Result<(Vec<ChecklistLine>, Vec<Identity>), EngineError> {
    let Some(environment) = config
        .service(&promotion.service)
        .and_then(|s| s.environment(&promotion.environment))
    else {
        return Ok((Vec::new(), Vec::new()));
    };
    let ticks = if environment.checklist.is_empty() {
        Vec::new()
    } else {
        store.checklist_ticks(promotion.id).await?
    };
    let approvers = environment
        .approval_policy(promotion.hotfix_reason.is_some())
        .map(|policy| config.roles.members_of(&policy.from_role))
        .unwrap_or_default();
    Ok((checklist_lines(&environment.checklist, &ticks), approvers))
}

fn ticked(ticks: &[Tick]) -> Vec<usize> {
    ticks.iter().map(|tick| tick.item).collect()
}

/// Approvals a promotion still lacks under `policy`, naming who may give them.
pub(super) fn approvals_blocker(
    promotion: &Promotion,
    policy: &ApprovalPolicy,
    approvers: Vec<Identity>,
    have: usize,
) -> Option<Blocker> {
    why::missing_approvals(
        have,
        promotion.required_approvals,
        &policy.from_role,
        approvers,
        (!policy.self_approval).then(|| promotion.requested_by.clone()),
    )
}

impl Promotions {
    fn environment(&self, promotion: &Promotion) -> Result<&EnvironmentConfig, EngineError> {
        environment_of(self.service(&promotion.service)?, &promotion.environment)
    }

    /// The open checklist items of `promotion`, as the blocker that refuses approvals.
    pub(super) async fn open_checklist(
        &self,
        tx: &mut Tx,
        promotion: &Promotion,
        environment: &EnvironmentConfig,
    ) -> Result<Option<Blocker>, EngineError> {
        if environment.checklist.is_empty() {
            return Ok(None);
        }
        let ticks = tx.checklist_ticks(promotion.id).await?;
        Ok(why::open_checklist(&environment.checklist, &ticked(&ticks)))
    }

    /// What refuses an approval that would count: open checklist items, or a digest that is not
    /// the one tested before (unless an admin forced the promotion).
    pub(super) async fn approval_blocker(
        &self,
        tx: &mut Tx,
        promotion: &Promotion,
        environment: &EnvironmentConfig,
    ) -> Result<Option<Blocker>, EngineError> {
        if let Some(open) = self.open_checklist(tx, promotion, environment).await? {
            return Ok(Some(open));
        }
        self.digest_blocker(tx, promotion).await
    }

    async fn digest_blocker(
        &self,
        tx: &mut Tx,
        promotion: &Promotion,
    ) -> Result<Option<Blocker>, EngineError> {
        if promotion.force_reason.is_some() || promotion.rollback {
            return Ok(None);
        }
        self.untested_digest(
            tx,
            &promotion.service,
            &promotion.environment,
            &promotion.version,
        )
        .await
    }

    /// `/release check <#id> <n>`: ticks item `n`, audited with who; the card shows it.
    pub async fn tick(&self, actor: &Actor, id: i64, item: u32) -> Result<Reply, EngineError> {
        let mut tx = self.store.begin().await?;
        let promotion = tx
            .lock_promotion(id)
            .await?
            .ok_or_else(|| unknown_promotion(id))?;
        let environment = self.environment(&promotion)?;
        let policy = environment.approval_policy(promotion.hotfix_reason.is_some());
        authorize(
            &self.config.roles,
            actor,
            Action::TickChecklist {
                requested_by: &promotion.requested_by,
                approvers: policy.map(|p| p.from_role.as_str()),
            },
        )
        .map_err(super::promotions::forbidden)?;
        let text = checklist_item(&promotion, environment, item)?;
        if promotion.state() != PromotionState::AwaitingApproval {
            return Err(EngineError::conflict(format!(
                "{} is {}; its checklist is ticked while it awaits approval",
                promotion.describe(),
                promotion.state().label()
            )));
        }
        let now = self.time.now();
        let number = item as usize;
        if !tx.tick(id, number, &actor.identity, now).await? {
            let ticks = tx.checklist_ticks(id).await?;
            let by = ticks
                .iter()
                .find(|tick| tick.item == number)
                .map_or("someone", |tick| tick.by.as_str())
                .to_string();
            drop(tx);
            let view = view_of(&self.store, promotion).await?;
            return Ok(Reply::promotion(
                view,
                &format!("item {number} ({text}) was already ticked by {by}"),
            ));
        }
        let ticks = tx.checklist_ticks(id).await?;
        let open = why::open_checklist(&environment.checklist, &ticked(&ticks));
        let done = environment.checklist.len() - open.as_ref().map_or(0, open_count);
        let note = format!(
            "checklist {done}/{} ticked: {number}. {text}",
            environment.checklist.len()
        );
        tx.audit(
            Some(id),
            &actor.identity,
            AuditKind::ChecklistTicked,
            &note,
            now,
        )
        .await?;
        self.ledger.touch_cards(&mut tx, id).await?;
        let view = self.finish(tx, promotion).await?;
        Ok(Reply::promotion(view, &note))
    }

    /// `/release why <#id>`: every reason it waits or was stopped, each with its remedy.
    pub async fn why(&self, id: i64) -> Result<Why, EngineError> {
        let mut tx = self.store.begin().await?;
        let promotion = tx
            .promotion(id)
            .await?
            .ok_or_else(|| unknown_promotion(id))?;
        let blockers = self.blockers(&mut tx, &promotion).await?;
        drop(tx);
        Ok(Why {
            promotion,
            blockers,
        })
    }

    async fn blockers(
        &self,
        tx: &mut Tx,
        promotion: &Promotion,
    ) -> Result<Vec<Blocker>, EngineError> {
        let state = promotion.state();
        let mut blockers = Vec::new();
        let Ok(environment) = self.environment(promotion) else {
            blockers.extend(why::ended(state, promotion.reason()));
            return Ok(blockers);
        };
        if let Some(ended) = why::ended(state, promotion.reason()) {
            if state == PromotionState::Failed {
                blockers.extend(self.failed_checks(promotion, environment).await?);
            }
            blockers.push(ended);
            return Ok(blockers);
        }
        if state == PromotionState::AwaitingApproval {
            blockers.extend(self.open_checklist(tx, promotion, environment).await?);
            if let Some(policy) = environment.approval_policy(promotion.hotfix_reason.is_some()) {
                let have = tx.approvals(promotion.id).await?.len();
                let approvers = self.config.roles.members_of(&policy.from_role);
                blockers.extend(approvals_blocker(promotion, policy, approvers, have));
            }
        }
        if matches!(
            state,
            PromotionState::AwaitingApproval | PromotionState::Approved | PromotionState::Queued
        ) {
            blockers.extend(self.digest_blocker(tx, promotion).await?);
            let now = self.time.now();
            let adhoc = tx.active_freezes(now).await?;
            blockers.extend(self.calendar.must_wait(promotion, &adhoc, now));
            // One at a time: an older deploy (say, an interrupted one) may still hold it.
            if let Some(other) = tx
                .other_leased_deploy(&promotion.service, &promotion.environment, promotion.id)
                .await?
            {
                if let Some(other) = tx.promotion(other).await? {
                    blockers.push(busy(&other, now));
                }
            }
        }
        Ok(blockers)
    }

    /// The checks that failed a promotion's verification: which, and what each saw.
    async fn failed_checks(
        &self,
        promotion: &Promotion,
        environment: &EnvironmentConfig,
    ) -> Result<Vec<Blocker>, EngineError> {
        let tallies = self.store.all_tallies(promotion.id).await?;
        Ok(tallies
            .into_iter()
            .filter_map(|record| {
                let seen = record.tally.failure?;
                let check = environment.verify.get(record.check_index).map_or_else(
                    || format!("check {}", record.check_index + 1),
                    |c| c.name.clone(),
                );
                Some(Blocker::CheckFailed { check, seen })
            })
            .collect())
    }

    /// Reminds the approvers of promotions that have spent 80 % of their approval time, once
    /// each, in the cards' threads. Answers how many were reminded.
    pub async fn remind_approvers(&self) -> Result<usize, EngineError> {
        let now = self.time.now();
        let mut reminded = 0;
        for id in self.store.due_reminders(now).await? {
            let mut tx = self.store.begin().await?;
            let Some(promotion) = tx.lock_promotion(id).await? else {
                continue;
            };
            if promotion.state() != PromotionState::AwaitingApproval
                || !tx.mark_reminded(id, now).await?
            {
                continue;
            }
            let note = self.reminder(&mut tx, &promotion).await?;
            tx.add_thread_note(id, &note, true, now).await?;
            tx.audit(
                Some(id),
                &super::bot_identity(),
                AuditKind::Reminded,
                &note,
                now,
            )
            .await?;
            self.ledger.touch_cards(&mut tx, id).await?;
            tx.commit().await?;
            reminded += 1;
        }
        Ok(reminded)
    }

    /// `⏰ #42 api 1.4.2 → production still needs 1 more approval (0/1) from leads; the request
    /// expires Tue 2026-11-24 14:00 UTC.`
    async fn reminder(&self, tx: &mut Tx, promotion: &Promotion) -> Result<String, EngineError> {
        let expires = promotion
            .expires_at
            .map(|at| format!("; the request expires {}", super::calendar::utc(at)))
            .unwrap_or_default();
        let waiting = self.blockers(tx, promotion).await?;
        let reasons: Vec<String> = waiting.iter().map(Blocker::problem).collect();
        Ok(format!(
            "⏰ reminder: {} still waits: {}{expires}",
            promotion.describe(),
            reasons.join("; ")
        ))
    }
}

fn open_count(blocker: &Blocker) -> usize {
    match blocker {
        Blocker::Checklist { open } => open.len(),
        _ => 0,
    }
}

/// The text of checklist item `item` of the promotion's environment, or why there is none.
fn checklist_item(
    promotion: &Promotion,
    environment: &EnvironmentConfig,
    item: u32,
) -> Result<String, EngineError> {
    let count = environment.checklist.len();
    if count == 0 {
        return Err(EngineError::not_found(format!(
            "{} has no checklist: {} {} asks for none",
            promotion.describe(),
            promotion.service,
            promotion.environment
        )));
    }
    environment
        .checklist
        .get((item as usize).wrapping_sub(1))
        .cloned()
        .ok_or_else(|| {
            EngineError::not_found(format!(
                "{} has no checklist item {item}; its items are numbered 1 to {count}",
                promotion.describe()
            ))
        })
}
