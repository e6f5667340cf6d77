//! The release vocabulary and rules. Pure: no I/O, no async, no clock reads (time is a parameter).

pub mod approval;
pub mod command;
pub mod duration;
pub mod identity;
pub mod pipeline;
pub mod platform;
pub mod promotion;
pub mod version;
pub mod window;
