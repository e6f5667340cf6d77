//! The platform-neutral promotion card: everything a Slack or Discord card shows, built from the
//! store's view of a promotion. Adapters only render it.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::view::PromotionView;
use crate::domain::identity::Identity;
use crate::domain::promotion::{CardAction, PromotionState};

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
    /// The newest deploy output line.
    pub progress: Option<String>,
    /// How long the deploy ran (or has been running).
    pub duration: Option<Duration>,
    /// `<public_url>/api/v1/promotions/<id>` when a public URL is configured.
    pub link: Option<String>,
    pub actions: &'static [CardAction],
}

impl Card {
    pub fn build(
        view: &PromotionView,
        from_environment: Option<String>,
        progress: Option<String>,
        public_url: Option<&str>,
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
            progress,
            duration,
            link: public_url.map(|url| format!("{url}/api/v1/promotions/{}", p.id)),
            actions: CardAction::offered(p.state()),
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
