//! The delivery side of the store: sessions claim clients, read pending pages, and record how far they got.

use std::collections::HashMap;

use mysql_async::prelude::*;
use mysql_async::TxOpts;

use super::liveness::node_lock;
use super::rooms::client_lit;
use super::RoomCursor;
use super::{
    hex_list, text_literal, values_table, Acquire, Claim, Fetch, Pending, Store, StoreError,
    SweepRow,
};
use crate::ClientId;

/// The columns of a pending-message read after `client_id`: seq, id, body (empty once dropped),
/// whether it was dropped, microseconds to its expiry, enqueue time in microseconds; of `messages m`.
const PENDING_COLUMNS: &str = "m.seq, m.id, IF(m.dropped = 0, m.body, ''), m.dropped <> 0, \
     TIMESTAMPDIFF(MICROSECOND, NOW(6), m.expires_at), \
     CAST(UNIX_TIMESTAMP(m.enqueued_at) * 1000000 AS UNSIGNED)";

/// Microseconds to a message's expiry (`None`: no TTL).
type ExpiresIn = Option<i64>;
type PendingRow = (u64, u64, Vec<u8>, bool, ExpiresIn, u64);
/// A claimed client: id, epoch, rooms version, delivered seq, holder epoch.
type ClaimRow = (Vec<u8>, u64, u64, u64, Option<u64>);
/// A [`PendingRow`] led by its client id.
type ClientPendingRow = (Vec<u8>, u64, u64, Vec<u8>, bool, ExpiresIn, u64);

/// How many messages a page after `after` holds with the queue's head at `last_seq`: what is
/// pending, up to `limit`. The fetch reads exactly these seqs, and a page with fewer has a gap.
fn page_len(last_seq: u64, after: u64, limit: usize) -> u64 {
    last_seq.saturating_sub(after).min(limit as u64)
}

fn pending((seq, id, body, dropped, expires_in_us, enqueued_at_us): PendingRow) -> Pending {
    Pending {
        seq,
        id,
        body,
        dropped,
        expires_in_us,
        enqueued_at_us,
        deadline: None,
    }
}

impl Store {
    /// Creates a new client, already claimed by `node` (epoch 1, nothing delivered).
    pub async fn create_client(&self, node: &str) -> Result<(ClientId, Claim), StoreError> {
        let id = ClientId::random();
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            tx.exec_drop(
                "INSERT INTO clients (id, session_epoch, owner_node, last_seen_at) \
                 VALUES (?, 1, ?, NOW(6))",
                (&id.as_bytes()[..], node),
            )
            .await?;
            tx.exec_drop(
                "INSERT INTO cursors (client_id, holder_epoch, holder_node) VALUES (?, 1, ?)",
                (&id.as_bytes()[..], node),
            )
            .await?;
            tx.commit().await
        })
        .await?;
        Ok((
            id,
            Claim {
                epoch: 1,
                delivered_seq: 0,
                holding: true,
                rooms_version: 0,
            },
        ))
    }

    /// Claims existing clients for new sessions on `node`, in one transaction: bumps each one's
    /// epoch, which fences off any older session of it, and takes the delivery right of those
    /// nobody holds. Per id, in order: `None` when no such client exists. Each id at most once.
    pub async fn claim_clients(
        &self,
        ids: &[ClientId],
        node: &str,
    ) -> Result<Vec<Option<Claim>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = hex_list(ids);
        // One round trip: bump the epochs (the row locks order concurrent claims of a client),
        // take the delivery right of those nobody holds with the new epoch, read both back.
        let node = text_literal(node);
        let sql = format!(
            "START TRANSACTION; \
             UPDATE clients SET session_epoch = session_epoch + 1, owner_node = {node}, \
             last_seen_at = NOW(6) WHERE id IN ({list}); \
             UPDATE cursors c STRAIGHT_JOIN clients k ON k.id = c.client_id \
             SET c.holder_epoch = k.session_epoch, c.holder_node = {node} \
             WHERE c.client_id IN ({list}) AND c.holder_epoch IS NULL; \
             SELECT k.id, k.session_epoch, k.rooms_version, c.delivered_seq, c.holder_epoch \
             FROM clients k JOIN cursors c ON c.client_id = k.id WHERE k.id IN ({list}); \
             COMMIT"
        );
        let rows: Vec<ClaimRow> = self.script(sql).await?;
        let claims: HashMap<Vec<u8>, Claim> = rows
            .into_iter()
            .map(|(id, epoch, rooms_version, delivered_seq, holder)| {
                let claim = Claim {
                    epoch,
                    delivered_seq,
                    holding: holder == Some(epoch),
                    rooms_version,
                };
                (id, claim)
            })
            .collect();
        Ok(ids
            .iter()
            .map(|id| claims.get(&id.as_bytes()[..]).cloned())
            .collect())
    }

    /// The next pending messages of many sessions, in two statements (one for the epochs and queue
    /// heads, one for the messages). Per request (client, epoch, after_seq, limit), in order: the
    /// next `limit` messages after `after_seq` if session `epoch` still owns the client, else
    /// `Stale`. Seqs of a client are contiguous, so the seqs after+1 ..= min(head, after+limit) are
    /// exactly its next page. One item per client.
    pub async fn fetch_pending_many(
        &self,
        requests: &[(ClientId, u64, u64, usize)],
    ) -> Result<Vec<Fetch>, StoreError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<ClientId> = requests.iter().map(|r| r.0).collect();
        let list = hex_list(&ids);
        let (heads, rows) = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                let heads: Vec<(Vec<u8>, u64, u64)> = conn
                    .query(format!(
                        "SELECT id, session_epoch, last_seq FROM clients WHERE id IN ({list})"
                    ))
                    .await?;
                let heads: HashMap<Vec<u8>, (u64, u64)> = heads
                    .into_iter()
                    .map(|(id, epoch, last)| (id, (epoch, last)))
                    .collect();
                // Each owned client's page is the seqs after+1 ..= after+n, n = what is pending
                // up to its limit: read by primary key, seq by seq, from a table of (client, after,
                // n) joined to MariaDB's number sequence. (An OR of per-client ranges costs the
                // range optimizer and then every row's check against every arm.)
                let pages: Vec<(&ClientId, u64, u64)> = requests
                    .iter()
                    .filter_map(|(id, epoch, after, limit)| {
                        let &(owner, last_seq) = heads.get(&id.as_bytes()[..])?;
                        let n = page_len(last_seq, *after, *limit);
                        (owner == *epoch && n > 0).then_some((id, *after, n))
                    })
                    .collect();
                let Some(longest) = pages.iter().map(|p| p.2).max() else {
                    return Ok((heads, Vec::new()));
                };
                let table = values_table(
                    "id, after, n",
                    pages
                        .iter()
                        .map(|(id, after, n)| format!("({}, {after}, {n})", client_lit(id))),
                );
                let rows: Vec<ClientPendingRow> = conn
                    .query(format!(
                        "SELECT m.client_id, {PENDING_COLUMNS} FROM {table} \
                         STRAIGHT_JOIN seq_1_to_{longest} s \
                         STRAIGHT_JOIN messages m ON m.client_id = v.id AND m.seq = v.after + s.seq \
                         WHERE s.seq <= v.n"
                    ))
                    .await?;
                Ok((heads, rows))
            })
            .await?;
        let mut pages: HashMap<Vec<u8>, Vec<Pending>> = HashMap::new();
        for (client, seq, id, body, dropped, expires, enqueued) in rows {
            pages
                .entry(client)
                .or_default()
                .push(pending((seq, id, body, dropped, expires, enqueued)));
        }
        for page in pages.values_mut() {
            page.sort_unstable_by_key(|m| m.seq);
        }
        let mut out = Vec::with_capacity(requests.len());
        for (id, epoch, after, limit) in requests {
            let key = &id.as_bytes()[..];
            let Some(&(_, last_seq)) = heads.get(key).filter(|(e, _)| e == epoch) else {
                out.push(Fetch::Stale);
                continue;
            };
            let page = pages.remove(key).unwrap_or_default();
            // The read by seq assumes seqs without gaps. If it found fewer than are pending, there
            // is a gap (rows removed by hand, or a restore): read this client alone, by order.
            let short = (page.len() as u64) < page_len(last_seq, *after, *limit);
            if short {
                out.push(Fetch::Owned(self.fetch_after(*id, *after, *limit).await?));
            } else {
                out.push(Fetch::Owned(page));
            }
        }
        Ok(out)
    }

    /// The next `limit` messages of one client after `after`, by order (gaps allowed).
    async fn fetch_after(
        &self,
        id: ClientId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Pending>, StoreError> {
        let rows: Vec<PendingRow> = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                conn.exec(
                    format!(
                        "SELECT {PENDING_COLUMNS} FROM messages m WHERE client_id = ? AND seq > ? \
                         ORDER BY seq LIMIT ?"
                    ),
                    (&id.as_bytes()[..], after, limit as u64),
                )
                .await
            })
            .await?;
        Ok(rows.into_iter().map(pending).collect())
    }

    /// Marks messages of one client expired: a session found their time run out and skips them.
    pub async fn mark_expired(&self, id: ClientId, seqs: &[u64]) -> Result<(), StoreError> {
        self.set_live_messages(id, seqs, "dropped = 1, dropped_at = NOW(6)")
            .await
    }

    /// Takes the deadline off messages of one client that were acknowledged in time (ahead of
    /// its cumulative cursor), so that they are never reported or dropped as expired.
    pub async fn clear_deadlines(&self, id: ClientId, seqs: &[u64]) -> Result<(), StoreError> {
        self.set_live_messages(id, seqs, "expires_at = NULL").await
    }

    /// `UPDATE messages SET <set>` on the given, not dropped, messages of one client.
    async fn set_live_messages(
        &self,
        id: ClientId,
        seqs: &[u64],
        set: &str,
    ) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let list = seqs
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                format!(
                    "UPDATE messages SET {set} WHERE client_id = ? AND seq IN ({list}) \
                     AND dropped = 0"
                ),
                (&id.as_bytes()[..],),
            )
            .await
        })
        .await
    }

    /// Takes the right to deliver to `id` for session `epoch` of `node`: granted when nobody holds
    /// it, when the holder's node is dead (its node lock is free: the process is gone, or it has
    /// been silent for the node TTL), or with `force` (the handoff timed out). Returns the cursor
    /// the holder left.
    pub async fn acquire(
        &self,
        id: ClientId,
        epoch: u64,
        node: &str,
        force: bool,
    ) -> Result<Acquire, StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                format!(
                    "UPDATE cursors d JOIN clients c ON c.id = d.client_id \
                     SET d.holder_epoch = ?, d.holder_node = ? \
                     WHERE d.client_id = ? AND c.session_epoch = ? \
                     AND (d.holder_epoch IS NULL OR d.holder_epoch = ? OR ? \
                     OR d.holder_node IS NULL OR IS_FREE_LOCK({}) = 1)",
                    node_lock("d.holder_node")
                ),
                (epoch, node, &id.as_bytes()[..], epoch, epoch, force),
            )
            .await?;
            let acquired = conn.affected_rows() == 1;
            let row: Option<(u64, u64, Option<String>)> = conn
                .exec_first(
                    "SELECT c.session_epoch, d.delivered_seq, d.holder_node \
                     FROM clients c JOIN cursors d ON d.client_id = c.id WHERE c.id = ?",
                    (&id.as_bytes()[..],),
                )
                .await?;
            Ok(match row {
                Some((_, delivered_seq, _)) if acquired => Acquire::Acquired { delivered_seq },
                Some((current, _, holder_node)) if current == epoch => {
                    Acquire::Busy { holder_node }
                }
                _ => Acquire::Stale,
            })
        })
        .await
    }

    /// Records, for many sessions in one transaction (group commit), that every message up to
    /// `seq` is done (written, or acknowledged in acknowledged mode): one statement for the
    /// cursors, one for the delivery log. One entry per (client, epoch, seq, acknowledged), each
    /// client at most once. Per entry: `false` when session `epoch` no longer holds the delivery
    /// right (nothing recorded for it).
    pub async fn mark_delivered_many(
        &self,
        entries: &[(ClientId, u64, u64, bool)],
    ) -> Result<Vec<bool>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<ClientId> = entries.iter().map(|e| e.0).collect();
        let list = hex_list(&ids);
        let table = values_table(
            "id, seq, epoch",
            entries
                .iter()
                .map(|(id, epoch, seq, _)| format!("({}, {seq}, {epoch})", client_lit(id))),
        );
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            tx.query_drop(format!(
                "UPDATE {table} STRAIGHT_JOIN cursors c ON c.client_id = v.id \
                 SET c.delivered_seq = GREATEST(c.delivered_seq, v.seq) WHERE c.holder_epoch = v.epoch"
            ))
            .await?;
            let held = if tx.affected_rows() == entries.len() as u64 {
                vec![true; entries.len()]
            } else {
                // Some sessions lost the right: find which.
                let holders: Vec<(Vec<u8>, Option<u64>)> = tx
                    .query(format!("SELECT client_id, holder_epoch FROM cursors WHERE client_id IN ({list})"))
                    .await?;
                let holders: HashMap<Vec<u8>, Option<u64>> = holders.into_iter().collect();
                entries
                    .iter()
                    .map(|(id, epoch, _, _)| holders.get(&id.as_bytes()[..]).copied().flatten() == Some(*epoch))
                    .collect()
            };
            let log = entries
                .iter()
                .zip(&held)
                .filter(|(_, held)| **held)
                .map(|((id, _, seq, acked), _)| format!("({}, {seq}, {})", client_lit(id), u8::from(*acked)))
                .collect::<Vec<_>>();
            if !log.is_empty() {
                tx.query_drop(format!(
                    "INSERT IGNORE INTO deliveries (client_id, upto_seq, acked) VALUES {}",
                    log.join(", ")
                ))
                .await?;
            }
            tx.commit().await?;
            Ok(held)
        })
        .await
    }

    /// Ends session `epoch`'s delivery right, recording its final cursors (its own queue's and
    /// its rooms'), so that the next session starts right after them. A no-op for a session that
    /// does not hold the right.
    pub async fn release_client(
        &self,
        id: ClientId,
        epoch: u64,
        delivered_seq: u64,
        acked: bool,
        rooms: &[RoomCursor],
    ) -> Result<(), StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            // The cursors row first (as every writer of cursors and members takes them: no
            // deadlock with a batch of room cursors), then the rooms while the right is still
            // held (the update checks it per row), then the right given up.
            tx.exec_drop(
                "SELECT holder_epoch FROM cursors WHERE client_id = ? FOR UPDATE",
                (&id.as_bytes()[..],),
            )
            .await?;
            for c in rooms {
                tx.exec_drop(
                    "UPDATE members m JOIN cursors d ON d.client_id = m.client_id \
                     SET m.delivered_seq = GREATEST(m.delivered_seq, ?), \
                     m.read_seq = GREATEST(m.read_seq, ?) \
                     WHERE m.client_id = ? AND m.room_id = ? AND d.holder_epoch = ?",
                    (c.delivered, c.read, &id.as_bytes()[..], &c.room.as_bytes()[..], epoch),
                )
                .await?;
            }
            tx.exec_drop(
                "UPDATE cursors SET delivered_seq = GREATEST(delivered_seq, ?), holder_epoch = NULL, \
                 holder_node = NULL WHERE client_id = ? AND holder_epoch = ?",
                (delivered_seq, &id.as_bytes()[..], epoch),
            )
            .await?;
            if tx.affected_rows() == 1 && delivered_seq > 0 {
                tx.exec_drop(
                    "INSERT IGNORE INTO deliveries (client_id, upto_seq, acked) VALUES (?, ?, ?)",
                    (&id.as_bytes()[..], delivered_seq, acked),
                )
                .await?;
            }
            tx.commit().await
        })
        .await
    }

    /// Current epoch and pending flag of each given client (unknown ids are left out), in one
    /// statement: pass at most [`SWEEP_CHUNK`] ids.
    pub async fn sweep(&self, ids: &[ClientId]) -> Result<Vec<SweepRow>, StoreError> {
        let list = hex_list(ids);
        let sql = format!(
            "SELECT c.id, c.session_epoch, GREATEST(c.last_seq, d.delivered_seq) - d.delivered_seq, \
             c.rooms_version FROM clients c JOIN cursors d ON d.client_id = c.id WHERE c.id IN ({list})"
        );
        let rows: Vec<(Vec<u8>, u64, u64, u64)> = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                conn.query(sql).await
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, epoch, pending, rooms_version)| {
                Some(SweepRow {
                    client_id: ClientId::from_slice(&id)?,
                    epoch,
                    has_pending: pending > 0,
                    pending,
                    rooms_version,
                })
            })
            .collect())
    }
}
