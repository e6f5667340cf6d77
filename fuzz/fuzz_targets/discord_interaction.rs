//! A Discord interactions-endpoint body (ping, slash command, button), as raw bytes.
//!
//! `decode_interaction` catches panics inside serenity's decoder (it has one, see the regression
//! seed) and reports them as malformed input. libfuzzer-sys's panic hook would abort even on a
//! caught panic, so this target installs a silent hook and aborts itself when a panic escapes.
#![no_main]

use std::panic::{catch_unwind, set_hook};

use libfuzzer_sys::fuzz_target;
use shipmate::chat::discord::inbound::decode_interaction;

fuzz_target!(init: set_hook(Box::new(|_| {})), |data: &[u8]| {
    match catch_unwind(|| decode_interaction(data)) {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => assert!(!error.to_string().is_empty()),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            eprintln!("decode_interaction panicked: {message}");
            std::process::abort();
        }
    }
});
