//! The promotion card as a Discord embed with a row of buttons, and the text limits Discord
//! enforces on everything the bot sends.

use serenity::all::{ButtonStyle, CreateActionRow, CreateButton, CreateEmbed, CreateEmbedFooter};

use crate::chat::limits::{self, chars, full_text_pointer};
use crate::domain::duration::format_duration;
use crate::domain::identity::Identity;
use crate::domain::promotion::{CardAction, PromotionState};
use crate::engine::card::Card;

/// Buttons carry `shipmate:<action>:<promotion id>` as their custom id.
pub const CUSTOM_ID_PREFIX: &str = "shipmate:";
/// Discord refuses message content above 2,000 characters.
pub const MAX_CONTENT: usize = 2_000;
const MAX_EMBED_TITLE: usize = 256;
const MAX_EMBED_DESCRIPTION: usize = 4_096;
const MAX_FIELD_VALUE: usize = 1_024;
/// Title, description, field names and values and footer together (embed limits).
const MAX_EMBED_TOTAL: usize = 6_000;
/// What the description keeps at least when the fields are long: the state and a start of notes.
const MIN_DESCRIPTION: usize = 500;
/// One change on a card: a commit subject, cut so ten of them stay readable within a field.
const MAX_CHANGE_ON_CARD: usize = 90;
/// Discord refuses an action row of more than five buttons.
pub const MAX_BUTTONS_PER_ROW: usize = 5;

/// `shipmate:approve:42`.
pub fn custom_id(action: CardAction, promotion_id: i64) -> String {
    format!("{CUSTOM_ID_PREFIX}{}:{promotion_id}", action.id())
}

/// The action and promotion a button stands for; `None` for ids the bot did not mint.
pub fn parse_custom_id(custom_id: &str) -> Option<(CardAction, i64)> {
    let (action, id) = custom_id.strip_prefix(CUSTOM_ID_PREFIX)?.split_once(':')?;
    Some((CardAction::parse(action)?, id.parse().ok()?))
}

/// `<@123>` for Discord users, the identity in code style for everyone else (Slack users, CI
/// tokens, schedules).
pub fn mention(identity: &Identity) -> String {
    match identity.as_str().strip_prefix("discord:") {
        Some(user) => format!("<@{user}>"),
        None => format!("`{}`", identity.as_str().replace('`', "'")),
    }
}

/// A mention that pings on Discord: `<@…>` for a user, `<@&…>` for a role; `None` for
/// identities of other platforms.
pub fn ping(identity: &Identity) -> Option<String> {
    let text = identity.as_str();
    if let Some(user) = text.strip_prefix("discord:") {
        return Some(format!("<@{user}>"));
    }
    text.strip_prefix("discord-role:")
        .map(|role| format!("<@&{role}>"))
}

/// Cuts `text` to at most `max` characters, marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    limits::cut(text, max, "")
}

fn state_badge(state: PromotionState) -> &'static str {
    match state {
        PromotionState::Requested | PromotionState::AwaitingApproval => "⏳",
        PromotionState::Approved | PromotionState::Queued => "🕒",
        PromotionState::Deploying | PromotionState::Verifying => "🚀",
        PromotionState::Succeeded => "✅",
        PromotionState::Failed | PromotionState::Interrupted => "❌",
        PromotionState::Rejected | PromotionState::Cancelled | PromotionState::Expired => "🚫",
        PromotionState::RolledBack => "↩️",
    }
}

/// Green for success, red for failure, amber while waiting, blue while deploying, grey when over.
fn state_colour(state: PromotionState) -> u32 {
    match state {
        PromotionState::Succeeded => 0x2E_B8_86,
        PromotionState::Failed | PromotionState::Interrupted => 0xE0_1E_5A,
        PromotionState::Requested
        | PromotionState::AwaitingApproval
        | PromotionState::Approved
        | PromotionState::Queued => 0xEC_B2_2E,
        PromotionState::Deploying | PromotionState::Verifying => 0x36_C5_F0,
        PromotionState::Rejected
        | PromotionState::Cancelled
        | PromotionState::Expired
        | PromotionState::RolledBack => 0x61_6A_75,
    }
}

/// The card as an embed within Discord's limits: each part cut to its own limit, then the longest
/// fields and the notes cut further until the whole fits in 6,000 characters. Cut notes and
/// reasons say where the full text is.
pub fn card_embed(card: &Card) -> CreateEmbed {
    let title = truncate(
        &format!("{} {}", state_badge(card.state), card.title()),
        MAX_EMBED_TITLE,
    );
    let footer = format!("shipmate · promotion #{}", card.promotion_id);
    let pointer = full_text_pointer(card, |url| format!("[details]({url})"));
    let mut fields: Vec<(&str, String, bool)> = fields(card)
        .into_iter()
        .map(|(name, value, inline)| {
            let value = match name {
                "Why" | "Changes" => limits::cut(&value, MAX_FIELD_VALUE, &pointer),
                _ => truncate(&value, MAX_FIELD_VALUE),
            };
            (name, value, inline)
        })
        .collect();
    let fixed = chars(&title) + chars(&footer);
    shrink_fields(
        &mut fields,
        MAX_EMBED_TOTAL.saturating_sub(fixed + MIN_DESCRIPTION),
    );
    let used = fixed + fields_len(&fields);
    let room = MAX_EMBED_TOTAL
        .saturating_sub(used)
        .min(MAX_EMBED_DESCRIPTION);
    let mut embed = CreateEmbed::new()
        .title(title)
        .description(description(card, room, &pointer))
        .colour(state_colour(card.state))
        .fields(fields)
        .footer(CreateEmbedFooter::new(footer));
    if let Some(link) = &card.link {
        embed = embed.url(link);
    }
    embed
}

/// The state in bold, then the notes, cut to `room` characters.
fn description(card: &Card, room: usize, pointer: &str) -> String {
    let state = format!("**{}**", card.state.label());
    match &card.notes {
        Some(notes) => {
            let head = format!("{state}\n\n");
            let notes = limits::cut(notes, room.saturating_sub(chars(&head)), pointer);
            format!("{head}{notes}")
        }
        None => truncate(&state, room),
    }
}

fn fields_len(fields: &[(&str, String, bool)]) -> usize {
    fields
        .iter()
        .map(|(name, value, _)| chars(name) + chars(value))
        .sum()
}

/// Halves the longest field value until all fields fit in `budget` characters.
fn shrink_fields(fields: &mut [(&str, String, bool)], budget: usize) {
    while fields_len(fields) > budget {
        let Some((_, value, _)) = fields.iter_mut().max_by_key(|(_, value, _)| chars(value)) else {
            return;
        };
        let len = chars(value);
        if len <= 1 {
            return;
        }
        *value = truncate(value, len / 2);
    }
}

fn fields(card: &Card) -> Vec<(&'static str, String, bool)> {
    let mut fields = vec![
        (
            "From → to",
            format!(
                "{} → {}",
                card.from_environment.as_deref().unwrap_or("—"),
                card.environment
            ),
            true,
        ),
        ("Requested by", mention(&card.requested_by), true),
    ];
    if let Some(count) = card.approval_count() {
        let who: Vec<String> = card.approvals.iter().map(mention).collect();
        let who = if who.is_empty() {
            String::new()
        } else {
            format!(" ({})", who.join(", "))
        };
        fields.push(("Approvals", format!("{count}{who}"), true));
    }
    if let Some(kind) = card.release_type {
        fields.push(("Release", kind.to_string(), true));
    }
    if let Some(commit) = &card.commit {
        fields.push(("Commit", format!("`{}`", commit.replace('`', "'")), true));
    }
    if let Some(digest) = &card.digest {
        fields.push(("Digest", format!("`{digest}`"), true));
    }
    if let Some(duration) = card.duration {
        let shown = if duration.as_secs() == 0 {
            "<1s".to_string()
        } else {
            format_duration(duration)
        };
        fields.push(("Duration", shown, true));
    }
    if let Some(reason) = &card.hotfix {
        fields.push(("Hotfix", reason.clone(), false));
    }
    if let Some(changes) = card.changes_text(
        |title| format!("**{title}**"),
        |change| truncate(change, MAX_CHANGE_ON_CARD),
    ) {
        fields.push(("Changes", changes, false));
    } else if let Some(note) = &card.changes_note {
        fields.push(("Changes", format!("*{note}*"), false));
    }
    if !card.checklist.is_empty() {
        fields.push(("Checklist", checklist_text(card), false));
    }
    if let Some(reason) = &card.reason {
        fields.push(("Why", reason.clone(), false));
    }
    if let Some(rollout) = &card.rollout {
        fields.push((
            "Rollout",
            card.mention_pauser(rollout.clone(), mention),
            false,
        ));
    }
    if let Some(progress) = &card.progress {
        fields.push((
            "Progress",
            format!("`{}`", progress.replace('`', "'")),
            false,
        ));
    }
    fields
}

/// `☑ 1. Changelog reviewed — <@…>` per item.
fn checklist_text(card: &Card) -> String {
    let lines: Vec<String> = card
        .checklist
        .iter()
        .map(|line| match &line.ticked_by {
            Some(by) => format!(
                "☑ {}. {} — {}",
                line.number,
                line.text,
                Identity::parse(by).map_or_else(|| by.clone(), |who| mention(&who))
            ),
            None => format!("☐ {}. {}", line.number, line.text),
        })
        .collect();
    lines.join("\n")
}

/// The message text above the card: pings for the approvers while it awaits approval (an
/// embed's mentions notify nobody), nothing otherwise.
pub fn card_content(card: &Card) -> String {
    let pings: Vec<String> = card.approvers.iter().filter_map(ping).collect();
    if pings.is_empty() {
        return String::new();
    }
    truncate(
        &format!("Approval asked from {}", pings.join(" ")),
        MAX_CONTENT,
    )
}

/// `shipmate:check:42:1`: a checklist item's button.
pub fn checklist_custom_id(promotion_id: i64, item: usize) -> String {
    format!("{CUSTOM_ID_PREFIX}check:{promotion_id}:{item}")
}

/// The (promotion, item) a checklist button ticks; `None` for other ids.
pub fn parse_checklist_id(custom_id: &str) -> Option<(i64, u32)> {
    let rest = custom_id
        .strip_prefix(CUSTOM_ID_PREFIX)?
        .strip_prefix("check:")?;
    let (promotion, item) = rest.split_once(':')?;
    Some((promotion.parse().ok()?, item.parse().ok()?))
}

/// Discord refuses a button label above 80 characters.
const MAX_BUTTON_LABEL: usize = 80;

/// The card's checklist buttons while it can be ticked (ticked ones green and disabled), then
/// its action buttons, in rows of at most five; none when nothing can be done.
pub fn card_components(card: &Card) -> Vec<CreateActionRow> {
    let mut rows = Vec::new();
    if card.checklist_open {
        for chunk in card.checklist.chunks(MAX_BUTTONS_PER_ROW) {
            let buttons = chunk
                .iter()
                .map(|line| {
                    let (mark, style) = match line.ticked_by {
                        Some(_) => ("☑", ButtonStyle::Success),
                        None => ("☐", ButtonStyle::Secondary),
                    };
                    let label = format!("{mark} {}. {}", line.number, line.text);
                    CreateButton::new(checklist_custom_id(card.promotion_id, line.number))
                        .label(truncate(&label, MAX_BUTTON_LABEL))
                        .style(style)
                        .disabled(line.ticked_by.is_some())
                })
                .collect();
            rows.push(CreateActionRow::Buttons(buttons));
        }
    }
    rows.extend(card.actions.chunks(MAX_BUTTONS_PER_ROW).map(|row| {
        let buttons = row
            .iter()
            .map(|action| button(*action, card.promotion_id))
            .collect();
        CreateActionRow::Buttons(buttons)
    }));
    rows
}

fn button(action: CardAction, promotion_id: i64) -> CreateButton {
    CreateButton::new(custom_id(action, promotion_id))
        .label(action.label())
        .style(button_style(action))
}

fn button_style(action: CardAction) -> ButtonStyle {
    match action {
        CardAction::Approve => ButtonStyle::Success,
        CardAction::Retry => ButtonStyle::Primary,
        CardAction::Reject | CardAction::Rollback | CardAction::Abort => ButtonStyle::Danger,
        CardAction::Cancel | CardAction::Pause | CardAction::Resume => ButtonStyle::Secondary,
    }
}

/// Deploy output as code-block messages, each within Discord's 2,000 characters.
pub fn thread_messages(lines: &[String]) -> Vec<String> {
    limits::code_block_messages(lines, MAX_CONTENT, str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_ids_round_trip_and_refuse_foreign_ids() {
        for action in CardAction::ALL {
            assert_eq!(parse_custom_id(&custom_id(action, 42)), Some((action, 42)));
        }
        assert_eq!(
            parse_custom_id("shipmate:abort:42"),
            Some((CardAction::Abort, 42))
        );
        for foreign in [
            "approve:42",
            "shipmate:approve",
            "shipmate:launch:42",
            "shipmate:approve:x",
        ] {
            assert_eq!(parse_custom_id(foreign), None, "{foreign}");
        }
    }

    /// A canary rollout in flight, offering `actions`.
    fn deploying(actions: &'static [CardAction]) -> Card {
        Card {
            promotion_id: 42,
            service: "api".into(),
            version: "1.4.2".into(),
            from_environment: Some("staging".into()),
            environment: "production".into(),
            rollback: false,
            requested_by: Identity::new("discord", "123"),
            notes: None,
            commit: None,
            approvals: Vec::new(),
            required_approvals: 0,
            state: PromotionState::Deploying,
            reason: None,
            rollout: Some("canary 2/3 · 50% · next step at 14:05 UTC (in 4m)".into()),
            paused_by: None,
            progress: Some("calling step 2 of 3".into()),
            duration: Some(std::time::Duration::from_secs(90)),
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

    #[test]
    fn the_embed_shows_release_type_digest_and_grouped_changes_within_a_field() {
        use crate::domain::manifest::{group_changes, ReleaseType};
        let mut changes: Vec<String> = (1..=30)
            .map(|n| format!("fix: {n} {}", "x".repeat(200)))
            .collect();
        changes.insert(0, "feat!: drop v1".to_string());
        let card = Card {
            release_type: Some(ReleaseType::Major),
            digest: Some("sha256:9f86d08".into()),
            changes: group_changes(&changes, 10),
            ..deploying(&[])
        };
        let embed = serde_json::to_value(card_embed(&card)).unwrap_or_default();
        let field = |name: &str| {
            embed["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|f| f["name"] == name)
                .and_then(|f| f["value"].as_str())
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(field("Release"), "major");
        assert_eq!(field("Digest"), "`sha256:9f86d08`");
        let listed = field("Changes");
        assert!(
            listed.starts_with("**Breaking**\n• feat!: drop v1\n**Fixes**\n• fix: 1 x"),
            "{listed}"
        );
        assert!(chars(&listed) <= MAX_FIELD_VALUE, "{}", chars(&listed));
        assert!(
            listed.ends_with("\nand 21 more"),
            "long subjects are cut so ten fit, with the count of the rest: {listed}"
        );
    }

    /// Each action row's buttons as (custom_id, label, style number).
    fn rows(card: &Card) -> Vec<Vec<(String, String, i64)>> {
        let rows = serde_json::to_value(card_components(card)).unwrap_or_default();
        rows.as_array()
            .into_iter()
            .flatten()
            .map(|row| {
                row["components"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        let text = |key: &str| b[key].as_str().unwrap_or_default().to_string();
                        (
                            text("custom_id"),
                            text("label"),
                            b["style"].as_i64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .collect()
    }

    // Discord's button styles: 1 primary, 2 secondary, 3 success, 4 danger.

    #[test]
    fn a_running_rollout_offers_pause_and_abort_and_the_clicks_read_back() {
        let card = deploying(&[CardAction::Pause, CardAction::Abort]);
        let rows = rows(&card);
        assert_eq!(
            rows,
            [[
                ("shipmate:pause:42".to_string(), "Pause".to_string(), 2),
                ("shipmate:abort:42".to_string(), "Abort".to_string(), 4),
            ]]
        );
        let clicked: Vec<_> = rows[0]
            .iter()
            .map(|(id, _, _)| parse_custom_id(id))
            .collect();
        assert_eq!(
            clicked,
            [Some((CardAction::Pause, 42)), Some((CardAction::Abort, 42))]
        );
        let resume = self::rows(&deploying(&[CardAction::Resume, CardAction::Abort]));
        assert_eq!(resume[0][0].2, 2, "Resume is secondary: {resume:?}");
    }

    #[test]
    fn no_row_holds_more_than_five_buttons() {
        let card = deploying(&CardAction::ALL);
        let rows = rows(&card);
        assert!(
            rows.iter()
                .all(|row| (1..=MAX_BUTTONS_PER_ROW).contains(&row.len())),
            "{rows:?}"
        );
        let ids: Vec<String> = rows.into_iter().flatten().map(|(id, _, _)| id).collect();
        let expected: Vec<String> = CardAction::ALL.iter().map(|a| custom_id(*a, 42)).collect();
        assert_eq!(ids, expected, "every button, in order");
        for state in PromotionState::ALL {
            let offered = CardAction::offered(state).len();
            assert!(
                offered <= MAX_BUTTONS_PER_ROW,
                "{state} needs {offered} buttons"
            );
        }
        assert!(self::rows(&deploying(&[])).is_empty());
    }

    #[test]
    fn the_rollout_line_mentions_who_paused_it() {
        let mut card = deploying(&[CardAction::Resume, CardAction::Abort]);
        card.rollout = Some("canary 1/3 · 10% · paused by discord:77 before step 2/3".into());
        card.paused_by = Some(Identity::new("discord", "77"));
        let embed = serde_json::to_value(card_embed(&card)).unwrap_or_default();
        let rollout = embed["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["name"] == "Rollout")
            .map(|f| f["value"].clone());
        assert_eq!(
            rollout,
            Some(serde_json::json!(
                "canary 1/3 · 10% · paused by <@77> before step 2/3"
            ))
        );
    }

    #[test]
    fn mentions_discord_users_and_quotes_other_identities() {
        assert_eq!(mention(&Identity::new("discord", "123")), "<@123>");
        assert_eq!(mention(&Identity::new("api", "ci")), "`api:ci`");
    }

    #[test]
    fn thread_output_is_split_within_the_content_limit() {
        let lines: Vec<String> = (0..100)
            .map(|i| format!("{i:03} {}", "x".repeat(60)))
            .collect();
        let messages = thread_messages(&lines);
        assert!(messages.len() > 1);
        assert!(messages.iter().all(|m| m.chars().count() <= MAX_CONTENT));
        let joined: Vec<String> = messages
            .iter()
            .flat_map(|m| {
                m.trim_start_matches("```\n")
                    .trim_end_matches("\n```")
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(joined, lines);
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
