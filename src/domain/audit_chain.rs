//! The tamper-evident audit trail (SPEC §10): each event's `hash` is
//! `sha256(previous hash ‖ the event's canonical JSON)`, so changing, removing or reordering any
//! event breaks every hash after it. The chain begins at [`GENESIS`]; events recorded before the
//! chain existed carry no hash and are outside it.
//!
//! What it does not prove: that the newest events were not cut off the end (nothing after them
//! disagrees). Exporting the head hash now and then (`shipmate audit verify` prints it) and
//! keeping it elsewhere closes that gap.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The "previous hash" of the first chained event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An audit event exactly as stored: what its hash covers. Field order is the canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainedEvent {
    pub promotion_id: Option<i64>,
    /// Unix milliseconds, as stored.
    pub at: i64,
    pub actor: String,
    pub platform: String,
    pub kind: String,
    pub detail: String,
}

impl ChainedEvent {
    /// The canonical JSON: the fields in declaration order, no whitespace, serde_json escaping.
    pub fn canonical_json(&self) -> String {
        // A struct of strings and integers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// This event's hash after `previous` (lower-case hex).
    pub fn hash_after(&self, previous: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(previous.as_bytes());
        hasher.update(self.canonical_json().as_bytes());
        hex::encode(hasher.finalize())
    }
}

/// One stored event of the chain, for verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLink {
    pub id: i64,
    pub event: ChainedEvent,
    /// `None`: an event without a hash.
    pub hash: Option<String>,
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainCheck {
    /// Every chained event matches; `head` is the last hash (`GENESIS` for an empty chain).
    Intact { events: u64, head: String },
    /// The first event that does not match, and why.
    Broken { id: i64, why: String },
}

/// Walks events in chain order, carrying the previous hash across calls (events come in pages).
#[derive(Debug, Clone)]
pub struct ChainWalker {
    previous: String,
    events: u64,
    /// Whether a hashed event was seen: events without a hash are allowed only before it.
    started: bool,
}

impl Default for ChainWalker {
    fn default() -> Self {
        ChainWalker {
            previous: GENESIS.to_string(),
            events: 0,
            started: false,
        }
    }
}

impl ChainWalker {
    /// Checks the next event; `Err` names the first one that breaks the chain.
    pub fn step(&mut self, link: &StoredLink) -> Result<(), ChainCheck> {
        let Some(stored) = &link.hash else {
            if self.started {
                return Err(ChainCheck::Broken {
                    id: link.id,
                    why: "it has no hash although the chain began before it (its hash was removed)"
                        .to_string(),
                });
            }
            return Ok(());
        };
        self.started = true;
        let expected = link.event.hash_after(&self.previous);
        if *stored != expected {
            return Err(ChainCheck::Broken {
                id: link.id,
                why: "its hash does not match its content and the event before it (this event, or \
                      one before it, was changed or removed)"
                    .to_string(),
            });
        }
        self.previous = expected;
        self.events += 1;
        Ok(())
    }

    pub fn finish(self) -> ChainCheck {
        ChainCheck::Intact {
            events: self.events,
            head: self.previous,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(detail: &str) -> ChainedEvent {
        ChainedEvent {
            promotion_id: Some(7),
            at: 1_764_000_000_000,
            actor: "slack:U1".to_string(),
            platform: "slack".to_string(),
            kind: "approval".to_string(),
            detail: detail.to_string(),
        }
    }

    /// A chain of `details`, hashed as the store writes it.
    fn chain(details: &[&str]) -> Vec<StoredLink> {
        let mut previous = GENESIS.to_string();
        details
            .iter()
            .zip(1..)
            .map(|(detail, id)| {
                let event = event(detail);
                let hash = event.hash_after(&previous);
                previous = hash.clone();
                StoredLink {
                    id,
                    event,
                    hash: Some(hash),
                }
            })
            .collect()
    }

    fn verify(links: &[StoredLink]) -> ChainCheck {
        let mut walker = ChainWalker::default();
        for link in links {
            if let Err(broken) = walker.step(link) {
                return broken;
            }
        }
        walker.finish()
    }

    #[test]
    fn the_canonical_json_is_fixed_field_order_without_whitespace() {
        assert_eq!(
            event("a \"quoted\" <b>").canonical_json(),
            r#"{"promotion_id":7,"at":1764000000000,"actor":"slack:U1","platform":"slack","kind":"approval","detail":"a \"quoted\" <b>"}"#
        );
    }

    #[test]
    fn an_untouched_chain_verifies_and_reports_its_head() {
        let links = chain(&["one", "two", "three"]);
        assert_eq!(
            verify(&links),
            ChainCheck::Intact {
                events: 3,
                head: links[2].hash.clone().unwrap_or_default()
            }
        );
    }

    #[test]
    fn an_edited_event_is_named() {
        let mut links = chain(&["one", "two", "three"]);
        links[1].event.detail = "approval 2/2".to_string();
        assert!(matches!(verify(&links), ChainCheck::Broken { id: 2, .. }));
    }

    #[test]
    fn a_removed_event_breaks_the_next_one() {
        let mut links = chain(&["one", "two", "three"]);
        links.remove(1);
        assert!(matches!(verify(&links), ChainCheck::Broken { id: 3, .. }));
    }

    #[test]
    fn events_before_the_chain_are_outside_it_but_a_removed_hash_is_not() {
        let mut links = chain(&["one", "two"]);
        let old = StoredLink {
            id: 0,
            event: event("before the chain"),
            hash: None,
        };
        links.insert(0, old);
        assert!(matches!(
            verify(&links),
            ChainCheck::Intact { events: 2, .. }
        ));
        links[2].hash = None;
        assert!(matches!(verify(&links), ChainCheck::Broken { id: 2, .. }));
    }

    #[test]
    fn a_rewritten_hash_that_matches_its_own_event_still_breaks_the_next() {
        let mut links = chain(&["one", "two", "three"]);
        links[1].event.detail = "forged".to_string();
        links[1].hash = Some(
            links[1]
                .event
                .hash_after(links[0].hash.as_deref().unwrap_or("")),
        );
        assert!(matches!(verify(&links), ChainCheck::Broken { id: 3, .. }));
    }
}
