//! Discord reactions arrive from the gateway without an id and each in a task of its own
//! (serenity spawns one per event), so two quick events of one person can be handled in the
//! wrong order, and a replayed one repeats. An approve reaction's add or removal is therefore
//! judged by what Discord holds now — does this person still have an approve emoji on the
//! card? — with one person's events on one message taken one at a time. Whatever the order and
//! however often the events come, the last one handled leaves the vote as the card shows it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use serenity::all::{ChannelId, Http, MessageId, ReactionType, UserId};
use tokio::sync::{Mutex, MutexGuard};

/// How long the look-up of who reacted may take before the event is taken as it came.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Locks shared by hash: enough that unrelated people rarely wait for each other.
const STRIPES: usize = 64;

/// One turn at a time per (message, person).
pub struct ReactionTurns(Vec<Mutex<()>>);

impl Default for ReactionTurns {
    fn default() -> Self {
        ReactionTurns((0..STRIPES).map(|_| Mutex::new(())).collect())
    }
}

impl ReactionTurns {
    pub async fn turn(&self, message: MessageId, user: UserId) -> MutexGuard<'_, ()> {
        let mut hasher = DefaultHasher::new();
        (message, user).hash(&mut hasher);
        let stripe = usize::try_from(hasher.finish() % STRIPES as u64).unwrap_or(0);
        self.0[stripe].lock().await
    }
}

/// Whether `user` has any of the `approve` emoji on the message now; `None` when Discord did not
/// say in time (the caller then goes by the event).
pub async fn still_approves(
    http: &Http,
    channel: ChannelId,
    message: MessageId,
    user: UserId,
    approve: &[String],
) -> Option<bool> {
    // `after` is exclusive: asking from the id below the person's gives them first if they reacted.
    let after = user.get().checked_sub(1);
    for emoji in approve {
        let reaction = ReactionType::Unicode(emoji.clone());
        let lookup = http.get_reaction_users(channel, message, &reaction, 1, after);
        match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Ok(Ok(users)) if users.first().is_some_and(|u| u.id == user) => return Some(true),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, %emoji, "could not read who reacted; going by the event");
                return None;
            }
            Err(_) => {
                tracing::warn!(%emoji, "reading who reacted timed out; going by the event");
                return None;
            }
        }
    }
    Some(false)
}
