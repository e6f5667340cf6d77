//! Chat adapters: each turns platform events into engine requests and renders the engine's
//! platform-neutral cards. Rules about releases never live here.

pub mod discord;
pub mod limits;
pub mod slack;
