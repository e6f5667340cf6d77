//! The promotion card as Block Kit.

use slack_morphism::prelude::*;

use crate::domain::duration::format_duration;
use crate::domain::identity::Identity;
use crate::domain::promotion::PromotionState;
use crate::engine::card::Card;

/// Buttons carry `shipmate:<action>` ids and the promotion id as value.
pub const ACTION_PREFIX: &str = "shipmate:";

/// Slack's control characters in text we did not write.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `<@U123>` for Slack users, the identity as text for everyone else (CI tokens, schedules).
pub fn mention(identity: &Identity) -> String {
    match identity.as_str().strip_prefix("slack:") {
        Some(user) => format!("<@{user}>"),
        None => format!("`{}`", escape(identity.as_str())),
    }
}

fn state_badge(state: PromotionState) -> &'static str {
    match state {
        PromotionState::Requested | PromotionState::AwaitingApproval => ":hourglass_flowing_sand:",
        PromotionState::Approved | PromotionState::Queued => ":clock3:",
        PromotionState::Deploying | PromotionState::Verifying => ":rocket:",
        PromotionState::Succeeded => ":white_check_mark:",
        PromotionState::Failed | PromotionState::Interrupted => ":x:",
        PromotionState::Rejected | PromotionState::Cancelled | PromotionState::Expired => {
            ":no_entry_sign:"
        }
        PromotionState::RolledBack => ":leftwards_arrow_with_hook:",
    }
}

/// The notification text (what shows in alerts and where blocks cannot be drawn).
pub fn fallback_text(card: &Card) -> String {
    format!("{}: {}", card.title(), card.state.label())
}

pub fn card_blocks(card: &Card) -> Vec<SlackBlock> {
    let mut blocks: Vec<SlackBlock> = vec![SlackSectionBlock::new()
        .with_text(md!(
            "{} *{}*\n*{}*",
            state_badge(card.state),
            escape(&card.title()),
            card.state.label()
        ))
        .with_fields(fields(card))
        .into()];
    if let Some(notes) = &card.notes {
        blocks.push(
            SlackSectionBlock::new()
                .with_text(md!("*Notes*\n{}", escape(notes)))
                .into(),
        );
    }
    let context = context_lines(card);
    if !context.is_empty() {
        let elements = context
            .into_iter()
            .map(|line| SlackContextBlockElement::MarkDown(SlackBlockMarkDownText::new(line)))
            .collect();
        blocks.push(SlackContextBlock::new(elements).into());
    }
    if !card.actions.is_empty() {
        let buttons = card
            .actions
            .iter()
            .map(|action| {
                let mut button = SlackBlockButtonElement::new(pt!(action.label()))
                    .with_action_id(format!("{ACTION_PREFIX}{}", action.id()).into())
                    .with_value(card.promotion_id.to_string());
                if let Some(style) = button_style(action.id()) {
                    button = button.with_style(style);
                }
                SlackActionBlockElement::Button(button)
            })
            .collect();
        blocks.push(
            SlackActionsBlock::new(buttons)
                .with_block_id(format!("promotion-{}", card.promotion_id).into())
                .into(),
        );
    }
    blocks
}

fn button_style(action: &str) -> Option<SlackBlockButtonStyle> {
    match action {
        "approve" | "retry" => Some(SlackBlockButtonStyle::Primary),
        "reject" | "rollback" => Some(SlackBlockButtonStyle::Danger),
        _ => None,
    }
}

fn fields(card: &Card) -> Vec<SlackBlockText> {
    let mut fields = vec![
        md!(
            "*From → to*\n{} → {}",
            card.from_environment
                .as_deref()
                .map_or("—".to_string(), escape),
            escape(&card.environment)
        ),
        md!("*Requested by*\n{}", mention(&card.requested_by)),
    ];
    if let Some(count) = card.approval_count() {
        let who: Vec<String> = card.approvals.iter().map(mention).collect();
        let who = if who.is_empty() {
            String::new()
        } else {
            format!(" ({})", who.join(", "))
        };
        fields.push(md!("*Approvals*\n{}{}", count, who));
    }
    if let Some(commit) = &card.commit {
        fields.push(md!("*Commit*\n`{}`", escape(commit)));
    }
    if let Some(duration) = card.duration {
        let shown = if duration.as_secs() == 0 {
            "<1s".to_string()
        } else {
            format_duration(duration)
        };
        fields.push(md!("*Duration*\n{}", escape(&shown)));
    }
    fields
}

fn context_lines(card: &Card) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(reason) = &card.reason {
        lines.push(format!("*Why:* {}", escape(reason)));
    }
    if let Some(progress) = &card.progress {
        lines.push(format!("`{}`", escape(progress).replace('`', "'")));
    }
    if let Some(link) = &card.link {
        lines.push(format!("<{link}|audit trail>"));
    }
    lines
}

/// Deploy output for the card's thread, as one code block.
pub fn thread_text(lines: &[String]) -> String {
    let body: Vec<String> = lines
        .iter()
        .map(|l| escape(l).replace("```", "'''"))
        .collect();
    format!("```\n{}\n```", body.join("\n"))
}
