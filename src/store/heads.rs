//! The queue heads this process last committed: a guess of each client's `last_seq` that the enqueue's conditional update checks.
//!
//! A producer that writes to the same clients again (the usual case) knows where their queues
//! ended when it last committed. The enqueue then moves every head with one `UPDATE ... WHERE
//! (id, last_seq) IN (...)` instead of an update and a read: if every head was still where this
//! process left it, the update matched every client and the seqs follow from the guesses; if any
//! had moved (another producer, a node's direct message), the transaction is rolled back and runs
//! again with the read. A guess is never trusted unchecked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::ClientId;

/// Clients remembered at most; when full, the memory starts over (a bound, not a cache policy:
/// a forgotten head costs one read).
const CAPACITY: usize = 65_536;

/// Shared by the clones of one [`super::Store`].
#[derive(Clone, Default)]
pub(super) struct Heads(Arc<Mutex<HashMap<ClientId, u64>>>);

impl Heads {
    fn map(&self) -> MutexGuard<'_, HashMap<ClientId, u64>> {
        // A map of guesses is usable after any panic: each is checked before it is used.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last committed `last_seq` of every id, in order; `None` unless all are known.
    pub(super) fn guess(&self, ids: &[ClientId]) -> Option<Vec<u64>> {
        let map = self.map();
        ids.iter().map(|id| map.get(id).copied()).collect()
    }

    /// Remembers heads just committed.
    pub(super) fn record(&self, heads: impl IntoIterator<Item = (ClientId, u64)>) {
        let mut map = self.map();
        for (id, last_seq) in heads {
            if map.len() >= CAPACITY && !map.contains_key(&id) {
                map.clear();
            }
            map.insert(id, last_seq);
        }
    }

    /// Forgets heads that turned out wrong.
    pub(super) fn forget(&self, ids: &[ClientId]) {
        let mut map = self.map();
        for id in ids {
            map.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guess_needs_every_head() {
        let heads = Heads::default();
        let (a, b) = (ClientId::random(), ClientId::random());
        assert_eq!(heads.guess(&[a]), None);
        heads.record([(a, 7)]);
        assert_eq!(heads.guess(&[a]), Some(vec![7]));
        assert_eq!(heads.guess(&[a, b]), None);
        heads.record([(b, 3), (a, 9)]);
        assert_eq!(heads.guess(&[b, a]), Some(vec![3, 9]));
        heads.forget(&[a]);
        assert_eq!(heads.guess(&[a, b]), None);
        assert_eq!(heads.guess(&[b]), Some(vec![3]));
    }

    #[test]
    fn the_memory_is_bounded() {
        let heads = Heads::default();
        heads.record((0..CAPACITY + 10).map(|n| (ClientId::random(), n as u64)));
        assert!(heads.map().len() <= CAPACITY);
    }
}
