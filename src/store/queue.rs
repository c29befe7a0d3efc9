//! The enqueue side of the store: appending messages to client queues, one or many per transaction.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::TxOpts;
use tracing::warn;

use super::one_trip::OneTrip;
use super::{all_rows, heads, hex, hex_list, NewMessage, Store, StoreError, Stored};
use crate::ClientId;

/// A client's id and last_seq, with the server's `innodb_autoinc_lock_mode` and
/// `auto_increment_increment`.
type SeqRow = (Vec<u8>, u64, u64, u64);

/// The auto-increment step when one multi-row INSERT gets consecutive ids (lock mode 0 or 1),
/// else 0. Asked in every batch transaction (with the read of the heads): a failover may bring a
/// server with other settings.
pub(super) fn id_step_of(lock_mode: u64, increment: u64) -> u64 {
    if lock_mode <= 1 {
        increment
    } else {
        0
    }
}

impl Store {
    /// The ids of the rows a multi-row `INSERT` into `messages` just made, in the order of
    /// `keys` (queue id, seq): computed from `LAST_INSERT_ID` when they are consecutive (`step`,
    /// see `id_step_of`), else read back.
    pub(super) async fn inserted_ids(
        tx: &mut mysql_async::Transaction<'_>,
        step: u64,
        keys: &[([u8; 16], u64)],
    ) -> Result<Vec<u64>, mysql_async::Error> {
        if step > 0 {
            let first = tx.last_insert_id().unwrap_or_default();
            return Ok((0..keys.len() as u64).map(|i| first + i * step).collect());
        }
        let list = keys
            .iter()
            .map(|(queue, seq)| format!("(X'{}', {seq})", hex(queue)))
            .collect::<Vec<_>>()
            .join(", ");
        let found: Vec<(Vec<u8>, u64, u64)> = tx
            .query(format!(
                "SELECT client_id, seq, id FROM messages WHERE (client_id, seq) IN ({list})"
            ))
            .await?;
        let found: HashMap<(Vec<u8>, u64), u64> = found
            .into_iter()
            .map(|(queue, seq, id)| ((queue, seq), id))
            .collect();
        Ok(keys
            .iter()
            .map(|(queue, seq)| {
                found
                    .get(&(queue.to_vec(), *seq))
                    .copied()
                    .unwrap_or_default()
            })
            .collect())
    }

    /// Appends `body` to the client's queue in one transaction. `None` when the client does not exist.
    pub async fn enqueue(&self, id: ClientId, body: &[u8]) -> Result<Option<Stored>, StoreError> {
        // One round trip: the whole transaction as one multi-statement query, the values as hex
        // literals of our own bytes (no text of anyone's reaches the SQL as such). The UPDATE
        // takes the client row lock: concurrent enqueues for one client get seqs in commit order.
        let client = hex(id.as_bytes());
        let sql = format!(
            "START TRANSACTION; \
             UPDATE clients SET last_seq = LAST_INSERT_ID(last_seq + 1) WHERE id = X'{client}'; \
             SET @chat_seq = IF(ROW_COUNT() = 1, LAST_INSERT_ID(), NULL); \
             INSERT INTO messages (client_id, seq, body) \
             SELECT X'{client}', @chat_seq, X'{}' FROM DUAL WHERE @chat_seq IS NOT NULL; \
             SELECT @chat_seq, IF(@chat_seq IS NULL, NULL, LAST_INSERT_ID()); \
             COMMIT",
            hex(body)
        );
        let rows: Vec<(Option<u64>, Option<u64>)> = self.script(sql).await?;
        let row = rows.into_iter().next();
        if let Some((Some(seq), _)) = row {
            self.heads.record([(id, seq)]);
        }
        Ok(match row {
            Some((Some(seq), Some(id))) => Some(Stored {
                id,
                seq,
                duplicate: false,
                replaced: 0,
            }),
            _ => None,
        })
    }

    /// Appends many messages, for many clients, in one transaction: one `UPDATE` of the client rows
    /// (from the heads this process left, when it knows them: see `heads`), one multi-row `INSERT`
    /// per [`INSERT_ROWS`] messages or [`INSERT_BYTES`] of bodies, and only for the items that ask for them, one
    /// dedupe lookup and insert, and per collapse key one `UPDATE` and one `INSERT`. The result has one entry per
    /// item, in order; `None` for an item whose client does not exist (nothing is stored for it).
    /// A dedupe key seen for the client within `dedupe_window` stores nothing and returns the
    /// first message (`duplicate`).
    pub async fn enqueue_batch(
        &self,
        items: &[NewMessage<'_>],
        dedupe_window: Duration,
    ) -> Result<Vec<Option<Stored>>, StoreError> {
        match items {
            [] => return Ok(Vec::new()),
            // One plain message: the two-statement append, without the batch's bookkeeping.
            [one] if one.options.is_plain() => {
                return Ok(vec![self.enqueue(one.client, one.body).await?])
            }
            _ => {}
        }
        // With the heads this process left (when it knows them all), in one round trip when
        // the batch allows it; then, if one had moved, again with a read of them.
        let mut guesses = [true, false].as_slice();
        match self.enqueue_batch_one_trip(items).await? {
            OneTrip::Stored(stored) => return Ok(stored),
            OneTrip::Moved => guesses = &[false],
            OneTrip::Unsuited => {}
        }
        for &guess in guesses {
            if let Some(stored) = self.enqueue_batch_tx(items, dedupe_window, guess).await? {
                return Ok(stored);
            }
        }
        Err(StoreError::Shared("enqueue: no attempt completed".into()))
    }

    /// One transaction of [`Store::enqueue_batch`]. With `guess`, the queue heads are moved by a
    /// conditional update from the heads this process committed last (see `heads`); `None` when
    /// one had moved since (the transaction was rolled back, nothing is stored).
    async fn enqueue_batch_tx(
        &self,
        items: &[NewMessage<'_>],
        dedupe_window: Duration,
        guess: bool,
    ) -> Result<Option<Vec<Option<Stored>>>, StoreError> {
        let all: Vec<ClientId> = {
            let mut ids: Vec<ClientId> = items.iter().map(|m| m.client).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let all_list = hex_list(&all);
        let extra = items
            .iter()
            .any(|m| m.options.ttl.is_some() || m.options.collapse_key.is_some());
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            // Per item: Some(index of the item whose message it repeats) for a dedupe hit within
            // the batch, or the earlier message found in the dedupe table.
            let mut earlier: Vec<Option<Stored>> = vec![None; items.len()];
            let mut repeats: Vec<Option<usize>> = vec![None; items.len()];
            let locked = items.iter().any(|m| m.options.dedupe_key.is_some());
            if locked {
                // Lock the clients first: concurrent retries with one key queue up here, and each
                // then sees the key the first one committed.
                tx.query_drop(format!("SELECT id FROM clients WHERE id IN ({all_list}) FOR UPDATE"))
                    .await?;
                let keyed: Vec<(usize, ClientId, &str)> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, m)| Some((i, m.client, m.options.dedupe_key.as_deref()?)))
                    .collect();
                let conds = keyed
                    .iter()
                    .map(|(_, id, _)| format!("(client_id = X'{}' AND dedupe_key = ?)", hex(id.as_bytes())))
                    .collect::<Vec<_>>()
                    .join(" OR ");
                let params: Vec<mysql_async::Value> =
                    keyed.iter().map(|(_, _, k)| k.as_bytes().to_vec().into()).collect();
                let found: Vec<(Vec<u8>, Vec<u8>, u64, u64)> = tx
                    .exec(
                        format!(
                            "SELECT client_id, dedupe_key, message_id, seq FROM dedupe \
                             WHERE ({conds}) AND created_at > NOW(6) - INTERVAL {} MICROSECOND",
                            dedupe_window.as_micros()
                        ),
                        params,
                    )
                    .await?;
                let found: HashMap<(Vec<u8>, Vec<u8>), (u64, u64)> = found
                    .into_iter()
                    .map(|(c, k, id, seq)| ((c, k), (id, seq)))
                    .collect();
                let mut first: HashMap<(ClientId, &str), usize> = HashMap::new();
                for (i, client, key) in keyed {
                    let db_key = (client.as_bytes().to_vec(), key.as_bytes().to_vec());
                    if let Some(&(id, seq)) = found.get(&db_key) {
                        earlier[i] = Some(Stored { id, seq, duplicate: true, replaced: 0 });
                    } else if let Some(&j) = first.get(&(client, key)) {
                        repeats[i] = Some(j);
                    } else {
                        first.insert((client, key), i);
                    }
                }
            }
            let fresh = |i: usize| earlier[i].is_none() && repeats[i].is_none();
            let mut counts: HashMap<ClientId, u64> = HashMap::new();
            for (i, m) in items.iter().enumerate() {
                if fresh(i) {
                    *counts.entry(m.client).or_default() += 1;
                }
            }
            if counts.is_empty() {
                tx.rollback().await?;
                return Ok(Some(resolve(earlier, repeats, vec![None; items.len()])));
            }
            let ids: Vec<ClientId> = counts.keys().copied().collect();
            let list = hex_list(&ids);
            // One UPDATE per distinct count (a CASE with an arm per client costs arms x rows).
            let mut by_count: BTreeMap<u64, Vec<ClientId>> = BTreeMap::new();
            for (id, n) in &counts {
                by_count.entry(*n).or_default().push(*id);
            }
            // The clients' last_seq (before this batch's updates, or after them), read with the
            // server's auto-increment settings (see `id_step_of`) in the same statement.
            let read = format!(
                "SELECT id, last_seq, @@innodb_autoinc_lock_mode, @@auto_increment_increment \
                 FROM clients WHERE id IN ({list})"
            );
            let mut before: Option<Vec<SeqRow>> = None;
            // Moved already, by the conditional update from this process's last heads.
            let mut moved = false;
            if let Some(guesses) = (guess && !locked).then(|| self.heads.guess(&ids)).flatten() {
                // Every head moved in one statement (key order, like the locking read) if it is
                // still where this process left it; the server's auto-increment settings in the
                // same round trip.
                let update = heads::conditional_update(&ids, &guesses, &by_count);
                if self.heads.plan_unknown() {
                    // Once per process: a server that could not read `(id, last_seq) IN (...)` as
                    // ranges of the primary key would scan, and lock, every client. Asked of a
                    // million-row sequence, so that the answer does not depend on how many
                    // clients there are yet.
                    let plan: Vec<mysql_async::Row> = tx.query(heads::ROW_IN_PROBE).await?;
                    let range = plan.first().is_some_and(heads::is_primary_range);
                    if !range {
                        warn!("MariaDB plans (a, b) IN (...) without ranges: queue heads are read in every batch");
                    }
                    self.heads.set_plan(range);
                }
                if self.heads.plan_is_range() {
                    let checked: Vec<(i64, u64, u64)> = all_rows(
                        &mut tx,
                        format!(
                            "{update}; \
                             SELECT ROW_COUNT(), @@innodb_autoinc_lock_mode, @@auto_increment_increment"
                        ),
                    )
                    .await?;
                    match checked.first() {
                        Some(&(count, mode, step)) if count == ids.len() as i64 => {
                            let rows = ids.iter().zip(guesses);
                            before = Some(rows.map(|(id, last)| (id.as_bytes().to_vec(), last, mode, step)).collect());
                            moved = true;
                        }
                        _ => {
                            // A head had moved (or a client is gone): nothing of this is kept.
                            tx.rollback().await?;
                            self.heads.forget(&ids);
                            return Ok(None);
                        }
                    }
                }
            }
            if before.is_none() && by_count.len() > 1 && !locked {
                // Row locks on every client of the batch, in one statement (key order, so two
                // batches never deadlock): seqs are in commit order. The locking read sees the
                // latest committed last_seq, which only this transaction changes from here on.
                before = Some(tx.query(format!("{read} FOR UPDATE")).await?);
            }
            // The updates, and the read after them when there was none before, in one round
            // trip: the row locks are held for as few round trips as can be.
            let mut after: Vec<SeqRow> = Vec::new();
            if !moved {
                let mut statements: Vec<String> = by_count
                    .iter()
                    .map(|(n, ids)| {
                        format!(
                            "UPDATE clients SET last_seq = last_seq + {n} WHERE id IN ({})",
                            hex_list(ids)
                        )
                    })
                    .collect();
                if before.is_none() {
                    statements.push(read);
                }
                after = all_rows(&mut tx, statements.join("; ")).await?;
            }
            let read_before = before.is_some();
            let rows = before.unwrap_or(after);
            let step = rows.first().map_or(0, |r| id_step_of(r.2, r.3));
            // Next seq to hand out per client: its last_seq before the batch plus one.
            let mut next: HashMap<ClientId, u64> = rows
                .into_iter()
                .filter_map(|(id, last, _, _)| {
                    let id = ClientId::from_slice(&id)?;
                    let before = if read_before { last } else { last - counts[&id] };
                    Some((id, before + 1))
                })
                .collect();
            let planned: Vec<Option<u64>> = items
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    if !fresh(i) {
                        return None;
                    }
                    next.get_mut(&m.client).map(|seq| {
                        *seq += 1;
                        *seq - 1
                    })
                })
                .collect();
            let rows: Vec<(&NewMessage<'_>, u64)> = items
                .iter()
                .zip(&planned)
                .filter_map(|(m, seq)| Some((m, (*seq)?)))
                .collect();
            // Ids of a multi-row INSERT are consecutive (by the auto-increment step) when
            // innodb_autoinc_lock_mode <= 1 (MariaDB's default); otherwise they are read back.
            let mut ids_by_key: HashMap<(ClientId, u64), u64> = HashMap::with_capacity(rows.len());
            for chunk in insert_chunks(&rows) {
                let (columns, row) = if extra {
                    (
                        "client_id, seq, body, expires_at, collapse_key",
                        "(?, ?, ?, NOW(6) + INTERVAL ? MICROSECOND, ?)",
                    )
                } else {
                    ("client_id, seq, body", "(?, ?, ?)")
                };
                let placeholders = vec![row; chunk.len()].join(", ");
                let mut params: Vec<mysql_async::Value> = Vec::with_capacity(chunk.len() * 5);
                for (m, seq) in chunk {
                    params.push(m.client.as_bytes().to_vec().into());
                    params.push((*seq).into());
                    params.push(m.body.to_vec().into());
                    if extra {
                        params.push(m.options.ttl.map(|t| t.as_micros() as u64).into());
                        params.push(m.options.collapse_key.as_ref().map(|k| k.as_bytes().to_vec()).into());
                    }
                }
                tx.exec_drop(
                    format!("INSERT INTO messages ({columns}) VALUES {placeholders}"),
                    params,
                )
                .await?;
                let keys: Vec<([u8; 16], u64)> =
                    chunk.iter().map(|(m, seq)| (*m.client.as_bytes(), *seq)).collect();
                let ids = Store::inserted_ids(&mut tx, step, &keys).await?;
                for ((m, seq), id) in chunk.iter().zip(ids) {
                    ids_by_key.insert((m.client, *seq), id);
                }
            }
            let mut replaced: HashMap<usize, u64> = HashMap::new();
            let collapsing: Vec<(usize, &NewMessage<'_>, u64)> = rows
                .iter()
                .zip(planned.iter().enumerate().filter_map(|(i, s)| s.map(|_| i)))
                .filter(|((m, _), _)| m.options.collapse_key.is_some())
                .map(|((m, seq), i)| (i, *m, *seq))
                .collect();
            if !collapsing.is_empty() {
                let clients: Vec<ClientId> = collapsing.iter().map(|(_, m, _)| m.client).collect();
                let delivered: Vec<(Vec<u8>, u64)> = tx
                    .query(format!(
                        "SELECT client_id, delivered_seq FROM cursors WHERE client_id IN ({})",
                        hex_list(&clients)
                    ))
                    .await?;
                let delivered: HashMap<Vec<u8>, u64> = delivered.into_iter().collect();
                // In order: a later message of the batch replaces an earlier one with its key.
                for (i, m, seq) in collapsing {
                    let after = delivered.get(&m.client.as_bytes()[..]).copied().unwrap_or(0);
                    let new_id = ids_by_key.get(&(m.client, seq)).copied().unwrap_or_default();
                    let key = m.options.collapse_key.as_deref().unwrap_or_default().as_bytes();
                    // The newest earlier message with the key is the only one that can still
                    // be pending (sql/0009_collapse_keys.sql).
                    tx.exec_drop(
                        "UPDATE messages m JOIN collapse_keys k \
                         ON m.client_id = k.client_id AND m.seq = k.seq \
                         SET m.dropped = 2, m.dropped_at = NOW(6), m.replaced_by = ? \
                         WHERE k.client_id = ? AND k.collapse_key = ? AND m.dropped = 0 \
                         AND m.seq > ? AND m.seq < ?",
                        (new_id, &m.client.as_bytes()[..], key, after, seq),
                    )
                    .await?;
                    replaced.insert(i, tx.affected_rows());
                    tx.exec_drop(
                        "INSERT INTO collapse_keys (client_id, collapse_key, seq) VALUES (?, ?, ?) \
                         ON DUPLICATE KEY UPDATE seq = GREATEST(seq, VALUES(seq))",
                        (&m.client.as_bytes()[..], key, seq),
                    )
                    .await?;
                }
            }
            let keyed: Vec<(&NewMessage<'_>, u64)> = rows
                .iter()
                .filter(|(m, _)| m.options.dedupe_key.is_some())
                .map(|(m, seq)| (*m, *seq))
                .collect();
            if !keyed.is_empty() {
                let placeholders = vec!["(?, ?, ?, ?)"; keyed.len()].join(", ");
                let params: Vec<mysql_async::Value> = keyed
                    .iter()
                    .flat_map(|(m, seq)| {
                        [
                            m.client.as_bytes().to_vec().into(),
                            m.options.dedupe_key.as_deref().unwrap_or_default().as_bytes().to_vec().into(),
                            ids_by_key.get(&(m.client, *seq)).copied().unwrap_or_default().into(),
                            (*seq).into(),
                        ]
                    })
                    .collect();
                // An entry older than the window is taken over by the new message.
                tx.exec_drop(
                    format!(
                        "INSERT INTO dedupe (client_id, dedupe_key, message_id, seq) VALUES {placeholders} \
                         ON DUPLICATE KEY UPDATE message_id = VALUES(message_id), seq = VALUES(seq), \
                         created_at = NOW(6)"
                    ),
                    params,
                )
                .await?;
            }
            tx.commit().await?;
            // The heads as committed, for this process's next batch (see `heads`).
            self.heads.record(next.iter().map(|(id, seq)| (*id, seq - 1)));
            let stored: Vec<Option<Stored>> = items
                .iter()
                .zip(planned)
                .enumerate()
                .map(|(i, (m, seq))| {
                    let seq = seq?;
                    Some(Stored {
                        id: ids_by_key.get(&(m.client, seq)).copied().unwrap_or_default(),
                        seq,
                        duplicate: false,
                        replaced: replaced.get(&i).copied().unwrap_or(0),
                    })
                })
                .collect();
            Ok(Some(resolve(earlier, repeats, stored)))
        })
        .await
    }
}

/// Rows of one multi-row `INSERT` at most, and their bodies' bytes (a row longer than that goes
/// alone): one round trip for the usual batch, well within `max_allowed_packet`.
const INSERT_ROWS: usize = 2_500;
const INSERT_BYTES: usize = 4 << 20;

/// `rows` cut into consecutive runs within [`INSERT_ROWS`] and [`INSERT_BYTES`], each at least one
/// row.
pub(super) fn insert_chunks<'r, 'm>(
    rows: &'r [(&'m NewMessage<'m>, u64)],
) -> impl Iterator<Item = &'r [(&'m NewMessage<'m>, u64)]> {
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let mut end = 0;
        while end < rest.len().min(INSERT_ROWS) {
            bytes += rest[end].0.body.len();
            if end > 0 && bytes > INSERT_BYTES {
                break;
            }
            end += 1;
        }
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

/// The result per item: its own new message, or the earlier one it repeats (a dedupe hit).
fn resolve(
    earlier: Vec<Option<Stored>>,
    repeats: Vec<Option<usize>>,
    stored: Vec<Option<Stored>>,
) -> Vec<Option<Stored>> {
    (0..stored.len())
        .map(|i| {
            if let Some(found) = earlier[i] {
                return Some(found);
            }
            if let Some(first) = repeats[i] {
                return stored[first].map(|s| Stored {
                    duplicate: true,
                    replaced: 0,
                    ..s
                });
            }
            stored[i]
        })
        .collect()
}
