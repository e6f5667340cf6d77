//! Cutting text to a platform's limits. A platform refuses a message whose text is one character
//! too long (Slack `msg_too_long` / `invalid_blocks`, Discord 400), so every piece of text the bot
//! did not write itself (notes, failure reasons, deploy output) is cut here first, visibly: the
//! cut ends in "…" and, where the full text lives somewhere, says where.

use crate::engine::card::Card;

/// What a cut ends with.
pub const ELLIPSIS: &str = "…";

/// `text` when it has at most `max` characters; otherwise its start, "…" and `pointer`, in `max`
/// characters altogether (the pointer is dropped when even it does not fit).
pub fn cut(text: &str, max: usize, pointer: &str) -> String {
    cut_mapped(text, max, pointer, |piece| piece.to_string())
}

/// [`cut`] for text that is escaped on the way out (`escape` may make a piece longer, as
/// Slack's `&amp;` does): the limit applies to the escaped text, and the cut never splits the
/// escape of one character.
pub fn cut_mapped(
    text: &str,
    max: usize,
    pointer: &str,
    escape: impl Fn(&str) -> String,
) -> String {
    let escaped = escape(text);
    if escaped.chars().count() <= max {
        return escaped;
    }
    let tail = if chars(pointer) + chars(ELLIPSIS) <= max {
        format!("{ELLIPSIS}{pointer}")
    } else {
        ELLIPSIS.to_string()
    };
    let budget = max.saturating_sub(chars(&tail));
    let mut kept = String::new();
    let mut used = 0;
    let mut buffer = [0u8; 4];
    for ch in text.chars() {
        let piece = escape(ch.encode_utf8(&mut buffer));
        let len = chars(&piece);
        if used + len > budget {
            break;
        }
        used += len;
        kept.push_str(&piece);
    }
    let mut out = kept;
    if chars(&tail) <= max {
        out.push_str(&tail);
    }
    out
}

pub fn chars(text: &str) -> usize {
    text.chars().count()
}

/// Where the full notes and failure reason of a card can be read, for the end of a cut:
/// the card's details link when a public URL is configured, else the API path (any API token
/// may read it).
pub fn full_text_pointer(card: &Card, link: impl Fn(&str) -> String) -> String {
    match &card.link {
        Some(url) => format!(" (cut; full text: {})", link(url)),
        None => format!(
            " (cut; full text: `GET /api/v1/promotions/{}`)",
            card.promotion_id
        ),
    }
}

/// Lines as code-block messages of at most `max` characters each (fence included), each line
/// cut to fit one message on its own. `escape` is applied to every line first.
pub fn code_block_messages(
    lines: &[String],
    max: usize,
    escape: impl Fn(&str) -> String,
) -> Vec<String> {
    const FENCE: usize = "```\n\n```".len();
    let budget = max.saturating_sub(FENCE).max(1);
    let mut messages = Vec::new();
    let mut current = String::new();
    let mut current_len = 0;
    for line in lines {
        let line = cut_mapped(line, budget, "", |piece| {
            escape(piece).replace("```", "'''")
        });
        let len = chars(&line);
        let needed = if current.is_empty() {
            len
        } else {
            current_len + 1 + len
        };
        if needed > budget && !current.is_empty() {
            messages.push(format!("```\n{current}\n```"));
            current.clear();
            current_len = 0;
        }
        if !current.is_empty() {
            current.push('\n');
            current_len += 1;
        }
        current.push_str(&line);
        current_len += len;
    }
    if !current.is_empty() {
        messages.push(format!("```\n{current}\n```"));
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_long_text_is_cut_with_the_pointer_within_the_limit() {
        assert_eq!(cut("abc", 3, " (more)"), "abc");
        let long = "x".repeat(50);
        let out = cut(&long, 20, " (more)");
        assert_eq!(out, format!("{}… (more)", "x".repeat(12)));
        assert_eq!(chars(&out), 20);
        // No room for the pointer: just the mark.
        assert_eq!(cut(&long, 4, " (more)"), "xxx…");
        assert_eq!(cut("abcdef", 4, ""), "abc…");
    }

    #[test]
    fn an_escaped_cut_counts_escaped_characters_and_never_splits_an_escape() {
        let escape = |s: &str| s.replace('&', "&amp;");
        let out = cut_mapped(&"&".repeat(10), 12, "", escape);
        assert_eq!(out, "&amp;&amp;…");
        assert!(chars(&out) <= 12);
    }

    #[test]
    fn code_blocks_keep_every_line_in_order_within_the_limit() {
        let lines: Vec<String> = (0..100)
            .map(|i| format!("{i:03} {}", "y".repeat(60)))
            .collect();
        let messages = code_block_messages(&lines, 500, str::to_string);
        assert!(messages.len() > 1);
        assert!(messages.iter().all(|m| chars(m) <= 500));
        let joined: Vec<&str> = messages
            .iter()
            .flat_map(|m| {
                m.trim_start_matches("```\n")
                    .trim_end_matches("\n```")
                    .lines()
            })
            .collect();
        assert_eq!(joined, lines);
        let huge = vec!["z".repeat(2_000)];
        let cut = code_block_messages(&huge, 500, str::to_string);
        assert_eq!(cut.len(), 1);
        assert!(chars(&cut[0]) <= 500 && cut[0].contains('…'));
    }
}
