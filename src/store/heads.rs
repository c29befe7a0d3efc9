//! The queue heads this process last committed: a guess of each client's `last_seq` that the enqueue's conditional update checks.
//!
//! A producer that writes to the same clients again (the usual case) knows where their queues
//! ended when it last committed. The enqueue then moves every head with one `UPDATE ... WHERE
//! (id, last_seq) IN (...)` instead of an update and a read: if every head was still where this
//! process left it, the update matched every client and the seqs follow from the guesses; if any
//! had moved (another producer, a node's direct message), the transaction is rolled back and runs
//! again with the read. A guess is never trusted unchecked.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::hex_list;
use crate::hex::push_hex;
use crate::ClientId;

/// Clients remembered at most; when full, the memory starts over (a bound, not a cache policy:
/// a forgotten head costs one read).
const CAPACITY: usize = 65_536;

/// What MariaDB's plan for the conditional update is: not asked yet, a range on the primary key
/// (the heads are used), anything else (they are not: a scan would lock every client).
const PLAN_UNKNOWN: u8 = 0;
const PLAN_RANGE: u8 = 1;
const PLAN_OTHER: u8 = 2;

/// Shared by the clones of one [`super::Store`]; empty and unused unless the store was made to
/// remember heads (a producer's: [`super::Store::remembering_heads`]).
#[derive(Clone, Default)]
pub(super) struct Heads {
    map: Option<Arc<Mutex<HashMap<ClientId, u64>>>>,
    plan: Arc<AtomicU8>,
    /// The server's multi-row inserts get ids that are not consecutive: a batch cannot be one
    /// round trip (`one_trip`), since its ids would have to be read back.
    scattered_ids: Arc<AtomicBool>,
}

impl Heads {
    /// Heads that are remembered.
    pub(super) fn enabled() -> Heads {
        Heads {
            map: Some(Arc::default()),
            ..Heads::default()
        }
    }

    fn map(&self) -> Option<MutexGuard<'_, HashMap<ClientId, u64>>> {
        // A map of guesses is usable after any panic: each is checked before it is used.
        let map = self.map.as_ref()?;
        Some(map.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The last committed `last_seq` of every id, in order; `None` unless all are known (and
    /// the plan is not known to be other than a range).
    pub(super) fn guess(&self, ids: &[ClientId]) -> Option<Vec<u64>> {
        if self.plan.load(Ordering::Relaxed) == PLAN_OTHER {
            return None;
        }
        let map = self.map()?;
        ids.iter().map(|id| map.get(id).copied()).collect()
    }

    /// Whether MariaDB's plan for the conditional update still has to be asked.
    pub(super) fn plan_unknown(&self) -> bool {
        self.plan.load(Ordering::Relaxed) == PLAN_UNKNOWN
    }

    /// Whether MariaDB plans the conditional update as a range read of the primary key.
    pub(super) fn plan_is_range(&self) -> bool {
        self.plan.load(Ordering::Relaxed) == PLAN_RANGE
    }

    /// Records MariaDB's plan: a range on the primary key, or not (then heads are not used).
    pub(super) fn set_plan(&self, range: bool) {
        let plan = if range { PLAN_RANGE } else { PLAN_OTHER };
        self.plan.store(plan, Ordering::Relaxed);
    }

    /// Whether a batch with known heads may still go as one round trip.
    pub(super) fn one_trip(&self) -> bool {
        !self.scattered_ids.load(Ordering::Relaxed)
    }

    /// No more batches in one round trip: the server's insert ids are not consecutive.
    pub(super) fn end_one_trip(&self) {
        self.scattered_ids.store(true, Ordering::Relaxed);
    }

    /// Remembers heads just committed. A head only moves forward: commits of one process can
    /// be recorded out of order (a single beside a batch), and the later head is the true one.
    pub(super) fn record(&self, heads: impl IntoIterator<Item = (ClientId, u64)>) {
        let Some(mut map) = self.map() else {
            return;
        };
        for (id, last_seq) in heads {
            if map.len() >= CAPACITY && !map.contains_key(&id) {
                map.clear();
            }
            let head = map.entry(id).or_insert(last_seq);
            *head = (*head).max(last_seq);
        }
    }

    /// Forgets heads that turned out wrong.
    pub(super) fn forget(&self, ids: &[ClientId]) {
        if let Some(mut map) = self.map() {
            for id in ids {
                map.remove(id);
            }
        }
    }
}

/// The shape of the conditional update (the key, then another column, in a row `IN`) over a
/// table of a million rows: its plan is a range read of 2 rows where the server can plan it so.
pub(super) const ROW_IN_PROBE: &str =
    "EXPLAIN SELECT seq FROM seq_1_to_1000000 WHERE (seq, seq + 0) IN ((1, 1), (2, 2))";

/// Whether a row of `EXPLAIN` is a range read of the primary key.
pub(super) fn is_primary_range(row: &mysql_async::Row) -> bool {
    let column = |name: &str| row.get_opt::<String, _>(name).and_then(Result::ok);
    column("type").as_deref() == Some("range") && column("key").as_deref() == Some("PRIMARY")
}

/// The conditional update that moves every head of `ids` by its count if it is still at its
/// guess (`guesses`, in the order of `ids`): its `ROW_COUNT()` is `ids.len()` only if all were.
pub(super) fn conditional_update(
    ids: &[ClientId],
    guesses: &[u64],
    by_count: &BTreeMap<u64, Vec<ClientId>>,
) -> String {
    let mut sql = String::with_capacity(100 + ids.len() * 60);
    sql.push_str("UPDATE clients SET last_seq = last_seq + ");
    sql.push_str(&increment(by_count));
    sql.push_str(" WHERE (id, last_seq) IN (");
    for (i, (id, last)) in ids.iter().zip(guesses).enumerate() {
        sql.push_str(if i == 0 { "(X'" } else { ", (X'" });
        push_hex(&mut sql, id.as_bytes());
        let _ = write!(sql, "', {last})");
    }
    sql.push(')');
    sql
}

/// What to add to each client's `last_seq`, as one SQL expression over `id`: its count of new
/// messages. The most common count is the default; the others are `IN` lists, which MariaDB
/// searches as sorted arrays (a few arms per row, not one arm per client).
pub(super) fn increment(by_count: &BTreeMap<u64, Vec<ClientId>>) -> String {
    let Some((&common, _)) = by_count.iter().max_by_key(|(_, ids)| ids.len()) else {
        return "0".into();
    };
    if by_count.len() == 1 {
        return common.to_string();
    }
    let arms: String = by_count
        .iter()
        .filter(|(n, _)| **n != common)
        .map(|(n, ids)| format!("WHEN id IN ({}) THEN {n} ", hex_list(ids)))
        .collect();
    format!("CASE {arms}ELSE {common} END")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guess_needs_every_head() {
        let heads = Heads::enabled();
        let (a, b) = (ClientId::random(), ClientId::random());
        assert_eq!(heads.guess(&[a]), None);
        heads.record([(a, 7)]);
        assert_eq!(heads.guess(&[a]), Some(vec![7]));
        assert_eq!(heads.guess(&[a, b]), None);
        heads.record([(b, 3), (a, 9)]);
        assert_eq!(heads.guess(&[b, a]), Some(vec![3, 9]));
        // Recorded out of order, a head keeps the later value.
        heads.record([(a, 8)]);
        assert_eq!(heads.guess(&[a]), Some(vec![9]));
        heads.forget(&[a]);
        assert_eq!(heads.guess(&[a, b]), None);
        assert_eq!(heads.guess(&[b]), Some(vec![3]));
    }

    #[test]
    fn the_memory_is_bounded() {
        let heads = Heads::enabled();
        heads.record((0..CAPACITY + 10).map(|n| (ClientId::random(), n as u64)));
        assert!(heads.map().unwrap().len() <= CAPACITY);
    }

    #[test]
    fn nothing_is_remembered_unless_asked_or_with_another_plan() {
        let id = ClientId::random();
        let off = Heads::default();
        off.record([(id, 1)]);
        assert_eq!(off.guess(&[id]), None);
        let on = Heads::enabled();
        on.record([(id, 1)]);
        assert!(on.plan_unknown());
        on.set_plan(false);
        assert_eq!(on.guess(&[id]), None);
        on.set_plan(true);
        assert!(on.plan_is_range());
        assert_eq!(on.guess(&[id]), Some(vec![1]));
    }

    #[test]
    fn the_increment_is_one_number_or_an_arm_per_other_count() {
        let (a, b, c) = (ClientId::random(), ClientId::random(), ClientId::random());
        let one: BTreeMap<u64, Vec<ClientId>> = [(2, vec![a, b])].into_iter().collect();
        assert_eq!(increment(&one), "2");
        let mixed: BTreeMap<u64, Vec<ClientId>> =
            [(1, vec![a]), (2, vec![b, c])].into_iter().collect();
        assert_eq!(
            increment(&mixed),
            format!("CASE WHEN id IN ({}) THEN 1 ELSE 2 END", hex_list(&[a]))
        );
    }
}
