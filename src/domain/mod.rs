//! The release vocabulary and rules. Pure: no I/O, no async, no clock reads (time is a parameter),
//! and no imports from any other layer (`tests/layering.rs` holds that).

pub mod approval;
pub mod audit;
pub mod audit_chain;
pub mod command;
pub mod dora;
pub mod duration;
pub mod identity;
pub mod manifest;
pub mod permission;
pub mod pipeline;
pub mod platform;
pub mod promotion;
pub mod release;
pub mod rollout;
pub mod verification;
pub mod version;
pub mod why;
pub mod window;
