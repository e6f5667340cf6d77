//! `status` answers cached until the next write. Only for SQLite, where this process is the only
//! writer (one bot per database file), so a commit counter says exactly when the cache is stale.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::StatusRow;

/// The service filter of a `status` call (`None` = every service).
type Filter = Option<String>;
/// Rows and the commit generation they were read at.
type Entry = (u64, Arc<Vec<StatusRow>>);

#[derive(Debug, Default)]
pub struct StatusCache {
    /// Bumped after every committed write transaction.
    generation: AtomicU64,
    entries: Mutex<HashMap<Filter, Entry>>,
}

impl StatusCache {
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The generation to tag a fresh read with; read it *before* querying, so a commit that
    /// lands during the query makes the entry stale at once.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn get(&self, service: Option<&str>) -> Option<Arc<Vec<StatusRow>>> {
        let entries = self.entries.lock().ok()?;
        let (generation, rows) = entries.get(&service.map(str::to_string))?;
        (*generation == self.generation()).then(|| rows.clone())
    }

    pub fn put(&self, service: Option<&str>, generation: u64, rows: Arc<Vec<StatusRow>>) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(service.map(str::to_string), (generation, rows));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_until_the_next_commit() {
        let cache = StatusCache::default();
        let rows = Arc::new(Vec::new());
        cache.put(None, cache.generation(), rows.clone());
        assert!(cache.get(None).is_some());
        assert!(
            cache.get(Some("api")).is_none(),
            "keyed by the service filter"
        );
        cache.invalidate();
        assert!(cache.get(None).is_none(), "a commit makes it stale");
    }

    #[test]
    fn a_read_overtaken_by_a_commit_is_never_served() {
        let cache = StatusCache::default();
        let generation = cache.generation();
        cache.invalidate(); // a commit lands while the query runs
        cache.put(None, generation, Arc::new(Vec::new()));
        assert!(cache.get(None).is_none());
    }
}
