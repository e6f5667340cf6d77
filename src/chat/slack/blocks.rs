//! The promotion card as Block Kit.

use slack_morphism::prelude::*;

use crate::chat::limits::{code_block_messages, cut, cut_mapped, full_text_pointer};
use crate::domain::duration::format_duration;
use crate::domain::identity::Identity;
use crate::domain::promotion::{CardAction, PromotionState};
use crate::engine::card::Card;

/// Buttons carry `shipmate:<action>` ids and the promotion id as value.
pub const ACTION_PREFIX: &str = "shipmate:";
/// Slack's limits (docs.slack.dev/reference/block-kit): a section's text, a section field, a
/// context element, and a message's `text` (above it: `msg_too_long`).
pub const MAX_SECTION_TEXT: usize = 3_000;
pub const MAX_FIELD_TEXT: usize = 2_000;
pub const MAX_CONTEXT_TEXT: usize = 3_000;
pub const MAX_TEXT: usize = 40_000;
/// One change on a card: a commit subject, cut so ten of them stay readable.
const MAX_CHANGE_ON_CARD: usize = 200;

/// `shipmate:approve`: the `action_id` of a card's button (the promotion id is its value).
pub fn action_id(action: CardAction) -> String {
    format!("{ACTION_PREFIX}{}", action.id())
}

/// The action and promotion a clicked button stands for; `None` for buttons the bot did not
/// make (another app's, or a value that is not a promotion id).
pub fn parse_action(action_id: &str, value: Option<&str>) -> Option<(CardAction, i64)> {
    let action = CardAction::parse(action_id.strip_prefix(ACTION_PREFIX)?)?;
    Some((action, value?.parse().ok()?))
}

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

/// A mention that pings on Slack: `<@U…>` for a user, `<!subteam^S…>` for a user group; `None`
/// for identities of other platforms.
pub fn ping(identity: &Identity) -> Option<String> {
    let text = identity.as_str();
    if let Some(user) = text.strip_prefix("slack:") {
        return Some(format!("<@{user}>"));
    }
    text.strip_prefix("slack-group:")
        .map(|group| format!("<!subteam^{group}>"))
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
    full_text_pointer(card, |url| format!("<{}|details>", escape(url)))
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
    blocks.extend(changes_block(card));
    let context = context_lines(card);
    if !context.is_empty() {
        let elements = context
            .into_iter()
            .map(|line| SlackContextBlockElement::MarkDown(SlackBlockMarkDownText::new(line)))
            .collect();
        blocks.push(SlackContextBlock::new(elements).into());
    }
    blocks.extend(approvers_block(card));
    blocks.extend(checklist_blocks(card));
    if !card.actions.is_empty() {
        let buttons = card
            .actions
            .iter()
            .map(|action| {
                let mut button = SlackBlockButtonElement::new(pt!(action.label()))
                    .with_action_id(action_id(*action).into())
                    .with_value(card.promotion_id.to_string());
                if let Some(style) = button_style(*action) {
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

/// The release's changes grouped (SPEC §10), or why git could not give them.
fn changes_block(card: &Card) -> Option<SlackBlock> {
    const HEAD: &str = "*Changes*\n";
    let room = MAX_SECTION_TEXT - HEAD.chars().count();
    let text = match card.changes_text(
        |title| format!("*{title}*"),
        |change| cut_mapped(change, MAX_CHANGE_ON_CARD, "", escape),
    ) {
        Some(list) => cut(&list, room, &pointer(card)),
        None => format!(
            "_{}_",
            cut_mapped(card.changes_note.as_ref()?, room - 2, "", escape)
        ),
    };
    Some(
        SlackSectionBlock::new()
            .with_text(md!("{}{}", HEAD, text))
            .into(),
    )
}

/// `shipmate:check:42`: the `action_id` of a card's checklist checkboxes; each option's value
/// is `<promotion id>:<item number>`.
pub fn checklist_action_id(promotion_id: i64) -> String {
    format!("{ACTION_PREFIX}check:{promotion_id}")
}

/// The (promotion, item) ticks a checkboxes action selects; empty for actions not ours.
pub fn parse_checklist(action_id: &str, selected: &[String]) -> Vec<(i64, u32)> {
    let Some(id) = action_id
        .strip_prefix(ACTION_PREFIX)
        .and_then(|rest| rest.strip_prefix("check:"))
        .and_then(|id| id.parse::<i64>().ok())
    else {
        return Vec::new();
    };
    selected
        .iter()
        .filter_map(|value| {
            let (promotion, item) = value.split_once(':')?;
            let promotion = promotion.parse::<i64>().ok().filter(|p| *p == id)?;
            Some((promotion, item.parse::<u32>().ok()?))
        })
        .collect()
}

/// Who is asked to approve, pinged (SPEC §10), while the card awaits approval.
fn approvers_block(card: &Card) -> Option<SlackBlock> {
    let pings: Vec<String> = card.approvers.iter().filter_map(ping).collect();
    (!pings.is_empty()).then(|| {
        SlackSectionBlock::new()
            .with_text(md!("Approval asked from {}", pings.join(" ")))
            .into()
    })
}

/// The checklist: checkboxes while it can be ticked, else the ticks as text.
fn checklist_blocks(card: &Card) -> Vec<SlackBlock> {
    if card.checklist.is_empty() {
        return Vec::new();
    }
    let ticked = card
        .checklist
        .iter()
        .filter(|l| l.ticked_by.is_some())
        .count();
    let head = format!("*Checklist* {ticked}/{}", card.checklist.len());
    if !card.checklist_open {
        let lines: Vec<String> = card
            .checklist
            .iter()
            .map(|line| match &line.ticked_by {
                Some(by) => format!("☑ {}. {} — {}", line.number, escape(&line.text), escape(by)),
                None => format!("☐ {}. {}", line.number, escape(&line.text)),
            })
            .collect();
        let text = cut(
            &format!("{head}\n{}", lines.join("\n")),
            MAX_SECTION_TEXT,
            "…",
        );
        return vec![SlackSectionBlock::new().with_text(md!("{}", text)).into()];
    }
    let option = |line: &crate::engine::governance::ChecklistLine| {
        let mut item = SlackBlockChoiceItem::new(
            SlackBlockText::Plain(pt!(cut(&line.text, 75, "…"))),
            format!("{}:{}", card.promotion_id, line.number),
        );
        if let Some(by) = &line.ticked_by {
            item = item.with_description(pt!(cut(&format!("ticked by {by}"), 75, "…")));
        }
        item
    };
    let options: Vec<_> = card.checklist.iter().map(option).collect();
    let initial: Vec<_> = card
        .checklist
        .iter()
        .filter(|line| line.ticked_by.is_some())
        .map(option)
        .collect();
    let mut checkboxes = SlackBlockCheckboxesElement::new(options)
        .with_action_id(checklist_action_id(card.promotion_id).into());
    if !initial.is_empty() {
        checkboxes = checkboxes.with_initial_options(initial);
    }
    vec![
        SlackSectionBlock::new().with_text(md!("{}", head)).into(),
        SlackActionsBlock::new(vec![SlackActionBlockElement::Checkboxes(checkboxes)])
            .with_block_id(format!("checklist-{}", card.promotion_id).into())
            .into(),
    ]
}

/// Slack has primary, danger and the default (a plain, secondary-looking button).
fn button_style(action: CardAction) -> Option<SlackBlockButtonStyle> {
    match action {
        CardAction::Approve | CardAction::Retry => Some(SlackBlockButtonStyle::Primary),
        CardAction::Reject | CardAction::Rollback | CardAction::Abort => {
            Some(SlackBlockButtonStyle::Danger)
        }
        CardAction::Cancel | CardAction::Pause | CardAction::Resume => None,
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
    if let Some(kind) = card.release_type {
        fields.push(field(format!("*Release*\n{kind}")));
    }
    if let Some(commit) = &card.commit {
        fields.push(field(format!("*Commit*\n`{}`", escape(commit))));
    }
    if let Some(digest) = &card.digest {
        fields.push(field(format!("*Digest*\n`{}`", escape(digest))));
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
    if let Some(hotfix) = &card.hotfix {
        const HEAD: &str = "*Hotfix:* ";
        let room = MAX_CONTEXT_TEXT - HEAD.chars().count();
        lines.push(format!("{HEAD}{}", cut_mapped(hotfix, room, "", escape)));
    }
    if let Some(reason) = &card.reason {
        const HEAD: &str = "*Why:* ";
        let room = MAX_CONTEXT_TEXT - HEAD.chars().count();
        let reason = cut_mapped(reason, room, &pointer(card), escape);
        lines.push(format!("{HEAD}{reason}"));
    }
    if let Some(rollout) = &card.rollout {
        let line = cut_mapped(rollout, MAX_CONTEXT_TEXT, "", escape);
        lines.push(card.mention_pauser(line, mention));
    }
    if let Some(progress) = &card.progress {
        let progress = cut_mapped(progress, MAX_CONTEXT_TEXT - 2, "", |piece| {
            escape(piece).replace('`', "'")
        });
        lines.push(format!("`{progress}`"));
    }
    if let Some(link) = &card.link {
        lines.push(format!("<{}|details>", escape(link)));
    }
    lines
}

/// Deploy output for the card's thread, as code-block messages within Slack's text limit: long
/// output is split over several messages, never cut (only a line longer than a whole message is).
pub fn thread_messages(lines: &[String]) -> Vec<String> {
    code_block_messages(lines, MAX_TEXT, escape)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;

    use super::*;

    /// A canary rollout in flight, offering `actions`.
    fn deploying(actions: &'static [CardAction]) -> Card {
        Card {
            promotion_id: 42,
            service: "api".into(),
            version: "1.4.2".into(),
            from_environment: Some("staging".into()),
            environment: "production".into(),
            rollback: false,
            requested_by: Identity::new("slack", "U0DEV"),
            notes: None,
            commit: None,
            approvals: Vec::new(),
            required_approvals: 0,
            state: PromotionState::Deploying,
            reason: None,
            rollout: Some("canary 2/3 · 50% · next step at 14:05 UTC (in 4m)".into()),
            paused_by: None,
            progress: Some("calling step 2 of 3".into()),
            duration: Some(Duration::from_secs(90)),
            link: None,
            actions,
            checklist: Vec::new(),
            checklist_open: false,
            approvers: Vec::new(),
            hotfix: None,
            release_type: None,
            digest: None,
            changes: Default::default(),
            changes_note: None,
        }
    }

    /// The buttons of the card's actions block as (action_id, value, style).
    fn buttons(card: &Card) -> Vec<(String, String, Option<String>)> {
        let blocks = serde_json::to_value(card_blocks(card)).unwrap_or_default();
        let text = |value: &Value| value.as_str().map(str::to_string);
        blocks
            .as_array()
            .into_iter()
            .flatten()
            .filter(|block| block["type"] == "actions")
            .flat_map(|block| block["elements"].as_array().cloned().unwrap_or_default())
            .map(|button| {
                (
                    text(&button["action_id"]).unwrap_or_default(),
                    text(&button["value"]).unwrap_or_default(),
                    text(&button["style"]),
                )
            })
            .collect()
    }

    #[test]
    fn a_running_rollout_offers_pause_and_abort_and_the_clicks_read_back() {
        let card = deploying(&[CardAction::Pause, CardAction::Abort]);
        let shown = buttons(&card);
        assert_eq!(
            shown,
            [
                ("shipmate:pause".to_string(), "42".to_string(), None),
                (
                    "shipmate:abort".to_string(),
                    "42".to_string(),
                    Some("danger".to_string())
                ),
            ]
        );
        let clicked: Vec<_> = shown
            .iter()
            .map(|(id, value, _)| parse_action(id, Some(value)))
            .collect();
        assert_eq!(
            clicked,
            [Some((CardAction::Pause, 42)), Some((CardAction::Abort, 42))]
        );
        let labels = serde_json::to_string(&card_blocks(&card)).unwrap_or_default();
        assert!(
            labels.contains("\"Pause\"") && labels.contains("\"Abort\""),
            "{labels}"
        );
    }

    #[test]
    fn every_action_has_a_button_that_reads_back() {
        let card = deploying(&CardAction::ALL);
        let shown = buttons(&card);
        assert_eq!(shown.len(), CardAction::ALL.len());
        for ((id, value, style), action) in shown.iter().zip(CardAction::ALL) {
            assert_eq!(parse_action(id, Some(value)), Some((action, 42)), "{id}");
            let expected = match action {
                CardAction::Approve | CardAction::Retry => Some("primary"),
                CardAction::Reject | CardAction::Rollback | CardAction::Abort => Some("danger"),
                CardAction::Cancel | CardAction::Pause | CardAction::Resume => None,
            };
            assert_eq!(style.as_deref(), expected, "{id}");
        }
    }

    #[test]
    fn foreign_buttons_are_not_ours() {
        for (id, value) in [
            ("pause", Some("42")),
            ("shipmate:launch", Some("42")),
            ("shipmate:pause", Some("x")),
            ("shipmate:pause", None),
            ("other_app:abort", Some("42")),
        ] {
            assert_eq!(parse_action(id, value), None, "{id} {value:?}");
        }
    }
}
