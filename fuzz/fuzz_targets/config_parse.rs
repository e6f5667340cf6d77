//! `bot.toml` from text: reading and validating never panic, and a refusal lists at least one
//! problem, each with a message. `${VAR}` substitution is exercised with an environment that
//! knows some names and not others.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use shipmate::config::parse;

fn env(name: &str) -> Option<String> {
    match name.len() % 3 {
        0 => None,
        1 => Some(String::new()),
        _ => Some(format!("value-of-{name}")),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(problems) = parse(text, Path::new("/etc/shipmate"), &env) {
        assert!(!problems.is_empty(), "refused without a problem");
        for problem in &problems {
            assert!(
                !problem.message.trim().is_empty(),
                "empty message at {}",
                problem.key
            );
        }
    }
});
