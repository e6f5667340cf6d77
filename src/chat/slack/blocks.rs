//! The promotion card as Block Kit.

use slack_morphism::prelude::*;

use crate::chat::limits::{code_block_messages, cut, cut_mapped, full_text_pointer};
use crate::domain::duration::format_duration;
use crate::domain::identity::Identity;
use crate::domain::promotion::PromotionState;
use crate::engine::card::Card;

/// Buttons carry `shipmate:<action>` ids and the promotion id as value.
pub const ACTION_PREFIX: &str = "shipmate:";
/// Slack's limits (docs.slack.dev/reference/block-kit): a section's text, a section field, a
/// context element, and a message's `text` (above it: `msg_too_long`).
pub const MAX_SECTION_TEXT: usize = 3_000;
pub const MAX_FIELD_TEXT: usize = 2_000;
pub const MAX_CONTEXT_TEXT: usize = 3_000;
pub const MAX_TEXT: usize = 40_000;

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

/// Text the bot did not write, escaped and cut to `max` characters (marked, without a pointer).
pub fn escaped_within(text: &str, max: usize) -> String {
    cut_mapped(text, max, "", escape)
}

/// The notification text (what shows in alerts and where blocks cannot be drawn).
pub fn fallback_text(card: &Card) -> String {
    let label = format!(": {}", card.state.label());
    let title = cut(&card.title(), MAX_TEXT - label.chars().count(), "");
    format!("{title}{label}")
}

/// Where to read what a cut left out, as a Slack link when there is one.
fn pointer(card: &Card) -> String {
    full_text_pointer(card, |url| format!("<{url}|details>"))
}

pub fn card_blocks(card: &Card) -> Vec<SlackBlock> {
    let head = format!("{} *", state_badge(card.state));
    let foot = format!("*\n*{}*", card.state.label());
    let room = MAX_SECTION_TEXT - head.chars().count() - foot.chars().count();
    let title = escaped_within(&card.title(), room);
    let mut blocks: Vec<SlackBlock> = vec![SlackSectionBlock::new()
        .with_text(md!("{}{}{}", head, title, foot))
        .with_fields(fields(card))
        .into()];
    if let Some(notes) = &card.notes {
        const HEAD: &str = "*Notes*\n";
        let room = MAX_SECTION_TEXT - HEAD.chars().count();
        let notes = cut_mapped(notes, room, &pointer(card), escape);
        blocks.push(
            SlackSectionBlock::new()
                .with_text(md!("{}{}", HEAD, notes))
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
        field(format!(
            "*From → to*\n{} → {}",
            card.from_environment
                .as_deref()
                .map_or("—".to_string(), escape),
            escape(&card.environment)
        )),
        field(format!("*Requested by*\n{}", mention(&card.requested_by))),
    ];
    if let Some(count) = card.approval_count() {
        let who: Vec<String> = card.approvals.iter().map(mention).collect();
        let who = if who.is_empty() {
            String::new()
        } else {
            format!(" ({})", who.join(", "))
        };
        fields.push(field(format!("*Approvals*\n{count}{who}")));
    }
    if let Some(commit) = &card.commit {
        fields.push(field(format!("*Commit*\n`{}`", escape(commit))));
    }
    if let Some(duration) = card.duration {
        let shown = if duration.as_secs() == 0 {
            "<1s".to_string()
        } else {
            format_duration(duration)
        };
        fields.push(field(format!("*Duration*\n{}", escape(&shown))));
    }
    fields
}

/// A field of the card's first section. Every field is short but the list of approvers, which is
/// cut when hundreds approved (the count comes first, so it always shows).
fn field(text: String) -> SlackBlockText {
    md!("{}", cut(&text, MAX_FIELD_TEXT, ""))
}

fn context_lines(card: &Card) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(reason) = &card.reason {
        const HEAD: &str = "*Why:* ";
        let room = MAX_CONTEXT_TEXT - HEAD.chars().count();
        let reason = cut_mapped(reason, room, &pointer(card), escape);
        lines.push(format!("{HEAD}{reason}"));
    }
    if let Some(rollout) = &card.rollout {
        lines.push(cut_mapped(rollout, MAX_CONTEXT_TEXT, "", escape));
    }
    if let Some(progress) = &card.progress {
        let progress = cut_mapped(progress, MAX_CONTEXT_TEXT - 2, "", |piece| {
            escape(piece).replace('`', "'")
        });
        lines.push(format!("`{progress}`"));
    }
    if let Some(link) = &card.link {
        lines.push(format!("<{link}|audit trail>"));
    }
    lines
}

/// Deploy output for the card's thread, as code-block messages within Slack's text limit: long
/// output is split over several messages, never cut (only a line longer than a whole message is).
pub fn thread_messages(lines: &[String]) -> Vec<String> {
    code_block_messages(lines, MAX_TEXT, escape)
}
