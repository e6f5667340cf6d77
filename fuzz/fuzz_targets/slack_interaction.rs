//! A button click as it arrives: a form whose `payload` field holds the JSON event. The input is
//! tried both as the whole form body and as the payload JSON (wrapped in a form here), so the
//! fuzzer reaches the JSON decoder without having to learn URL encoding first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shipmate::chat::slack::inbound::decode_interaction;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = decode_interaction(text) {
        assert!(!error.is_empty());
    }
    let Ok(form) = serde_urlencoded::to_string([("payload", text)]) else {
        return;
    };
    if let Err(error) = decode_interaction(&form) {
        assert!(!error.is_empty());
    }
});
