//! A slash command as it arrives: the HTTP form body, or (Socket Mode) the JSON payload that
//! slack-morphism decodes and the bot turns into the same `SlashCommand`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shipmate::chat::slack::inbound::{decode_slash_command, SlashCommand};
use slack_morphism::prelude::SlackCommandEvent;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = decode_slash_command(text) {
        assert!(!error.to_string().is_empty());
    }
    if let Ok(event) = serde_json::from_str::<SlackCommandEvent>(text) {
        let _ = SlashCommand::from(event);
    }
});
