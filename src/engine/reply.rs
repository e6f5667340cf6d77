//! What the engine answers, and its plain-text rendering (the HTTP `commands` endpoint; chat
//! adapters render the same data as cards).

use crate::config::Config;
use crate::domain::promotion::Promotion;
use crate::domain::release::Release;
use crate::domain::version::Version;
use crate::store::StatusRow;

use super::view::PromotionView;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Help(String),
    /// A ready-made answer (windows, freezes).
    Text(String),
    /// A release created, or (`created` false) one whose manifest was updated.
    Release {
        release: Box<Release>,
        created: bool,
    },
    /// A promotion after a change, with a short note on what just happened.
    Promotion {
        view: Box<PromotionView>,
        note: String,
    },
    Status(Vec<ServiceStatus>),
    History {
        service: String,
        promotions: Vec<Promotion>,
    },
    /// A platform delivery seen before: nothing was done, and nothing is to be said.
    Duplicate,
    /// Nothing to do and nothing to say (a reaction on a message that is no card; a refusal the
    /// person was already told).
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    pub service: String,
    pub environments: Vec<EnvironmentStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentStatus {
    pub name: String,
    /// What runs there now.
    pub version: Option<Version>,
    /// The promotion that put it there: since when (`finished_at`) and by whom.
    pub deployed: Option<Promotion>,
    pub active: Option<Promotion>,
    pub active_approvals: i64,
}

impl Reply {
    pub fn promotion(view: PromotionView, note: &str) -> Self {
        Reply::Promotion {
            view: Box::new(view),
            note: note.to_string(),
        }
    }

    pub fn to_text(&self) -> String {
        match self {
            Reply::Help(text) | Reply::Text(text) => text.clone(),
            Reply::Release {
                release,
                created: false,
            } => format!(
                "updated the manifest of {} {}. Promote it with /release promote {} {}",
                release.service, release.version, release.service, release.version
            ),
            Reply::Release { release, .. } => format!(
                "created {} {}{}. Promote it with /release promote {} {}",
                release.service,
                release.version,
                release
                    .commit
                    .as_deref()
                    .map(|c| format!(" (commit {c})"))
                    .unwrap_or_default(),
                release.service,
                release.version
            ),
            Reply::Promotion { view, note } => format!("{note}: {}", promotion_line(view)),
            Reply::Status(services) => status_text(services),
            Reply::History {
                service,
                promotions,
            } => history_text(service, promotions),
            Reply::Duplicate | Reply::Nothing => String::new(),
        }
    }
}

/// `#42 api 1.4.2 → production: awaiting approval (1/2: slack:U0LEAD1)`
pub fn promotion_line(view: &PromotionView) -> String {
    let p = &view.promotion;
    let mut line = format!("{}: {}", p.describe(), p.state().label());
    if p.required_approvals > 0 {
        let voters: Vec<String> = view.approvals.iter().map(|a| a.by.to_string()).collect();
        let who = if voters.is_empty() {
            String::new()
        } else {
            format!(": {}", voters.join(", "))
        };
        line.push_str(&format!(
            " (approvals {}/{}{who})",
            view.approvals.len(),
            p.required_approvals
        ));
    }
    if let Some(reason) = p.reason() {
        line.push_str(&format!(" — {reason}"));
    }
    line
}

fn status_text(services: &[ServiceStatus]) -> String {
    let mut out = Vec::new();
    for service in services {
        out.push(format!("{}:", service.service));
        for env in &service.environments {
            let version = env
                .version
                .as_ref()
                .map_or_else(|| "nothing deployed".to_string(), ToString::to_string);
            let active = env.active.as_ref().map_or_else(String::new, |p| {
                let approvals = if p.required_approvals > 0 {
                    format!(" ({}/{})", env.active_approvals, p.required_approvals)
                } else {
                    String::new()
                };
                format!(
                    " — #{} {} {}{approvals}",
                    p.id,
                    p.version,
                    p.state().label()
                )
            });
            out.push(format!("  {}: {version}{active}", env.name));
        }
    }
    out.join("\n")
}

fn history_text(service: &str, promotions: &[Promotion]) -> String {
    if promotions.is_empty() {
        return format!("{service} has no promotions yet");
    }
    promotions
        .iter()
        .map(|p| {
            format!(
                "{} {} by {} at {}",
                p.describe(),
                p.state().label(),
                p.requested_by,
                p.created_at.format("%Y-%m-%d %H:%M UTC")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Arranges status rows by the configured services and pipelines.
pub(super) fn status_from_rows(
    config: &Config,
    only: Option<&str>,
    rows: &[StatusRow],
) -> Vec<ServiceStatus> {
    config
        .services
        .iter()
        .filter(|s| only.is_none_or(|name| s.name == name))
        .map(|service| ServiceStatus {
            service: service.name.clone(),
            environments: service
                .environments
                .iter()
                .map(|env| {
                    let here = |row: &&StatusRow| {
                        row.promotion.service == service.name
                            && row.promotion.environment == env.name
                    };
                    let current = rows.iter().filter(here).find(|r| r.current);
                    let active = rows.iter().filter(here).find(|r| !r.current);
                    EnvironmentStatus {
                        name: env.name.clone(),
                        version: current.map(|r| r.promotion.version.clone()),
                        deployed: current.map(|r| r.promotion.clone()),
                        active: active.map(|r| r.promotion.clone()),
                        active_approvals: active.map_or(0, |r| r.approval_count),
                    }
                })
                .collect(),
        })
        .collect()
}
