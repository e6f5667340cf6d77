//! A Discord interactions-endpoint body (ping, slash command, button), as raw bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shipmate::chat::discord::inbound::decode_interaction;

fuzz_target!(|data: &[u8]| {
    if let Err(error) = decode_interaction(data) {
        assert!(!error.to_string().is_empty());
    }
});
