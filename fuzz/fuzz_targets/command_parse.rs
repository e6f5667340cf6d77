//! The chat command parser: any text gives a command or an error that says something.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shipmate::domain::command::{help_text, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(command) => assert!(!command.name().is_empty()),
        Err(error) => {
            assert!(
                !error.message.trim().is_empty(),
                "empty message for {text:?}"
            );
            assert!(!error.usage.is_empty(), "no usage line for {text:?}");
            assert!(!error.to_string().is_empty());
        }
    }
    // `help <topic>` echoes what was typed.
    assert!(!help_text(Some(text)).is_empty());
});
