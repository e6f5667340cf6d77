//! shipmate: a chat-ops release bot. See README.md for what it does and DESIGN.md for the layers.

pub mod app;
pub mod chat;
pub mod config;
pub mod deploy;
pub mod domain;
pub mod engine;
pub mod git;
pub mod http;
pub mod metrics;
pub mod store;
pub mod verify;
pub mod web;
