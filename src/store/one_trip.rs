//! A batch whose queue heads this process knows, stored as one multi-statement transaction: one round trip.
//!
//! The batch transaction of `queue.rs` takes five round trips (begin, the heads, prepare and run
//! the insert, commit) and MariaDB waits for the producer between them. When this process knows
//! every head of a batch (see `heads`), nothing in the transaction depends on an answer from the
//! server, so it goes as one script: the conditional update of the heads, a check that stops the
//! script before the insert unless it matched every client (a `SIGNAL`, so nothing after it runs
//! and the transaction is rolled back), the inserts as hex literals of the bytes (nobody's text is
//! SQL), each followed by its first id, and the commit. A head that had moved costs a rollback and
//! the batch runs again the usual way, with a read.
//!
//! Only plain batches and batches with a TTL go this way (dedupe and collapse keys need answers
//! from the server within the transaction), only up to [`SCRIPT_ITEMS`] messages and
//! [`SCRIPT_BODY_BYTES`] of bodies, so that the script stays far below any `max_allowed_packet`,
//! and only where a multi-row insert's ids are consecutive (a first check, before anything is
//! begun, stops the script otherwise), so that nothing needs reading after the commit.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use super::queue::{id_step_of, insert_chunks};
use tracing::warn;

use super::{heads, NewMessage, Store, StoreError, Stored};
use crate::hex::push_hex;
use crate::ClientId;

/// Bodies a one-round-trip batch carries at most (their hex text is twice that).
const SCRIPT_BODY_BYTES: usize = 1 << 20;
/// Messages a one-round-trip batch carries at most (some 80 bytes of script each besides the
/// body): with the bodies, the script stays under 3 MiB.
const SCRIPT_ITEMS: usize = 5_000;

/// The text the script's check raises when a head had moved (with `ER_SIGNAL_EXCEPTION`).
const HEAD_MOVED: &str = "chat: a queue head moved";
/// The text the script's first check raises when a multi-row insert's ids would not be
/// consecutive (`innodb_autoinc_lock_mode` 2): the ids could not follow from `LAST_INSERT_ID`.
const IDS_SCATTERED: &str = "chat: insert ids not consecutive";
/// MariaDB's error code of a `SIGNAL SQLSTATE '45000'` without its own number.
const ER_SIGNAL_EXCEPTION: u16 = 1644;

/// What became of a batch offered to [`Store::enqueue_batch_one_trip`].
pub(super) enum OneTrip {
    /// Committed: one result per item, in order.
    Stored(Vec<Option<Stored>>),
    /// A head had moved (or a client is gone): rolled back, nothing stored; the heads of the
    /// batch are forgotten.
    Moved,
    /// Not a batch for one round trip (see the module's text): nothing was sent.
    Unsuited,
}

impl Store {
    /// Stores `items` in one round trip when this process knows every head they need.
    pub(super) async fn enqueue_batch_one_trip(
        &self,
        items: &[NewMessage<'_>],
    ) -> Result<OneTrip, StoreError> {
        let suited = items
            .iter()
            .all(|m| m.options.dedupe_key.is_none() && m.options.collapse_key.is_none())
            && items.len() <= SCRIPT_ITEMS
            && items.iter().map(|m| m.body.len()).sum::<usize>() <= SCRIPT_BODY_BYTES;
        if !suited || !self.heads.plan_is_range() || !self.heads.one_trip() {
            return Ok(OneTrip::Unsuited);
        }
        let mut counts: BTreeMap<ClientId, u64> = BTreeMap::new();
        for m in items {
            *counts.entry(m.client).or_default() += 1;
        }
        let ids: Vec<ClientId> = counts.keys().copied().collect();
        let Some(guesses) = self.heads.guess(&ids) else {
            return Ok(OneTrip::Unsuited);
        };
        let mut by_count: BTreeMap<u64, Vec<ClientId>> = BTreeMap::new();
        for (id, n) in &counts {
            by_count.entry(*n).or_default().push(*id);
        }
        // Each item's seq follows from its client's head, in the order of the items.
        let mut next: HashMap<ClientId, u64> = ids
            .iter()
            .zip(&guesses)
            .map(|(id, last)| (*id, last + 1))
            .collect();
        let rows: Vec<(&NewMessage<'_>, u64)> = items
            .iter()
            .map(|m| {
                let seq = next.get_mut(&m.client).expect("every client has a guess");
                *seq += 1;
                (m, *seq - 1)
            })
            .collect();
        let chunks: Vec<_> = insert_chunks(&rows).collect();
        let sql = script(&ids, &guesses, &by_count, &chunks);
        let result: Result<Vec<(u64, u64, u64, u64)>, _> = self.script_unrecorded(sql).await;
        if let Err(StoreError::Mysql(mysql_async::Error::Server(e))) = &result {
            if e.code == ER_SIGNAL_EXCEPTION
                && (e.message == HEAD_MOVED || e.message == IDS_SCATTERED)
            {
                // A check's own answer, not a failure. The script's runner rolled it back:
                // nothing of it is kept.
                crate::stats::mysql(&Ok::<(), ()>(()));
                if e.message == HEAD_MOVED {
                    self.heads.forget(&ids);
                    return Ok(OneTrip::Moved);
                }
                warn!("MariaDB's multi-row inserts get ids that are not consecutive (innodb_autoinc_lock_mode 2): batches take the prepared statements");
                self.heads.end_one_trip();
                return Ok(OneTrip::Unsuited);
            }
        }
        crate::stats::mysql(&result);
        let firsts = result?;
        self.heads
            .record(next.iter().map(|(id, seq)| (*id, seq - 1)));
        // Committed: from here on a surprise is reported as such, never as "nothing stored".
        let surprise = |what: String| {
            StoreError::Shared(format!(
                "enqueue: the batch of {} messages was committed, but {what}",
                items.len()
            ))
        };
        if firsts.len() != chunks.len() {
            return Err(surprise(format!(
                "its {} inserts were answered {} times",
                chunks.len(),
                firsts.len()
            )));
        }
        let mut stored = Vec::with_capacity(items.len());
        for (chunk, &(first, inserted, mode, increment)) in chunks.iter().zip(&firsts) {
            let step = id_step_of(mode, increment);
            if inserted != chunk.len() as u64 || step == 0 {
                return Err(surprise(format!(
                    "an insert of {} rows answered {inserted} rows, auto-increment lock mode {mode}",
                    chunk.len()
                )));
            }
            let ids = (0..chunk.len() as u64).map(|i| first + i * step);
            stored.extend(ids.zip(chunk.iter()).map(|(id, (_, seq))| {
                Some(Stored {
                    id,
                    seq: *seq,
                    duplicate: false,
                    replaced: 0,
                })
            }));
        }
        Ok(OneTrip::Stored(stored))
    }
}

/// The transaction: the conditional update of the heads (`guesses`, in the order of `ids`), the
/// check that it matched every client, each insert followed by its first id and row count (and
/// the server's auto-increment settings), the commit.
fn script(
    ids: &[ClientId],
    guesses: &[u64],
    by_count: &BTreeMap<u64, Vec<ClientId>>,
    chunks: &[&[(&NewMessage<'_>, u64)]],
) -> String {
    let bodies: usize = chunks
        .iter()
        .flat_map(|c| c.iter())
        .map(|(m, _)| m.body.len())
        .sum();
    let rows: usize = chunks.iter().map(|c| c.len()).sum();
    let mut sql = String::with_capacity(200 + ids.len() * 60 + rows * 110 + bodies * 2);
    let _ = write!(
        sql,
        "BEGIN NOT ATOMIC IF @@innodb_autoinc_lock_mode > 1 THEN \
         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{IDS_SCATTERED}'; END IF; END; "
    );
    sql.push_str("START TRANSACTION; ");
    sql.push_str(&heads::conditional_update(ids, guesses, by_count));
    let _ = write!(
        sql,
        "; SET @chat_heads = ROW_COUNT(); \
         BEGIN NOT ATOMIC IF @chat_heads <> {} THEN \
         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{HEAD_MOVED}'; END IF; END",
        ids.len()
    );
    for chunk in chunks {
        let ttl = chunk.iter().any(|(m, _)| m.options.ttl.is_some());
        sql.push_str(if ttl {
            "; INSERT INTO messages (client_id, seq, body, expires_at) VALUES "
        } else {
            "; INSERT INTO messages (client_id, seq, body) VALUES "
        });
        for (i, (m, seq)) in chunk.iter().enumerate() {
            sql.push_str(if i == 0 { "(X'" } else { ", (X'" });
            push_hex(&mut sql, m.client.as_bytes());
            let _ = write!(sql, "', {seq}, X'");
            push_hex(&mut sql, m.body);
            sql.push('\'');
            if ttl {
                match m.options.ttl {
                    Some(t) => {
                        let _ = write!(sql, ", NOW(6) + INTERVAL {} MICROSECOND", t.as_micros());
                    }
                    None => sql.push_str(", NULL"),
                }
            }
            sql.push(')');
        }
        sql.push_str(
            "; SELECT LAST_INSERT_ID(), ROW_COUNT(), \
             @@innodb_autoinc_lock_mode, @@auto_increment_increment",
        );
    }
    sql.push_str("; COMMIT");
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex::hex;
    use crate::store::MessageOptions;

    #[test]
    fn the_script_checks_the_heads_before_it_inserts_and_commits_last() {
        let (a, b) = (ClientId::random(), ClientId::random());
        let plain = MessageOptions::default();
        let timed = MessageOptions {
            ttl: Some(std::time::Duration::from_millis(1500)),
            ..MessageOptions::default()
        };
        let items = [
            NewMessage {
                client: a,
                body: b"hi",
                options: &plain,
            },
            NewMessage {
                client: b,
                body: b"",
                options: &timed,
            },
        ];
        let rows = [(&items[0], 8), (&items[1], 4)];
        let by_count: BTreeMap<u64, Vec<ClientId>> = [(1, vec![a, b])].into_iter().collect();
        let sql = script(&[a, b], &[7, 3], &by_count, &[&rows[..]]);
        let (ha, hb) = (hex(a.as_bytes()), hex(b.as_bytes()));
        assert!(sql.starts_with("BEGIN NOT ATOMIC IF @@innodb_autoinc_lock_mode > 1 THEN SIGNAL"));
        assert!(sql.contains("END; START TRANSACTION; UPDATE clients SET last_seq = last_seq + 1 "));
        assert!(sql.contains(&format!("IN ((X'{ha}', 7), (X'{hb}', 3)); SET @chat_heads")));
        assert!(sql.contains("IF @chat_heads <> 2 THEN SIGNAL"));
        let check = sql.find("SIGNAL").unwrap();
        let insert = sql
            .find("INSERT INTO messages (client_id, seq, body, expires_at)")
            .unwrap();
        assert!(check < insert);
        assert!(sql.contains(&format!(
            "(X'{ha}', 8, X'6869', NULL), (X'{hb}', 4, X'', NOW(6) + INTERVAL 1500000 MICROSECOND)"
        )));
        assert!(sql.ends_with("@@auto_increment_increment; COMMIT"));
    }
}
