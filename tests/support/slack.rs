//! What a card on the fake Slack shows: its buttons and its Block Kit text.

use super::fake_slack::Message;

/// The `action_id` of every button on `message`, in order.
pub fn buttons(message: &Message) -> Vec<String> {
    let mut ids = Vec::new();
    for block in message.blocks.as_array().into_iter().flatten() {
        for element in block["elements"].as_array().into_iter().flatten() {
            if let Some(id) = element["action_id"].as_str() {
                ids.push(id.to_string());
            }
        }
    }
    ids
}

/// The blocks of `message` as JSON text, to look for what they show.
pub fn block_text(message: &Message) -> String {
    serde_json::to_string(&message.blocks).unwrap_or_default()
}
