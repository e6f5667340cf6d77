//! An Events API delivery (url_verification, event_callback with reactions, rate limiting).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shipmate::chat::slack::inbound::decode_event;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = decode_event(text) {
        assert!(!error.to_string().is_empty());
    }
});
