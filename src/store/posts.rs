//! Room logs in MySQL: posts (many per transaction), pages read for sessions, members' delivery cursors.

use std::collections::{BTreeMap, HashMap, HashSet};

use mysql_async::prelude::*;
use mysql_async::TxOpts;

use super::queue::id_step_of;
use super::rooms::{client_lit, room_lit};
use super::{all_rows, Store, StoreError};
use crate::{ClientId, RoomId};

/// One message to post to a room.
#[derive(Debug, Clone, Copy)]
pub struct NewPost<'a> {
    pub room: RoomId,
    /// Who posts (must be a member); `None`: a producer (`chat-enqueue --room`), no check.
    pub sender: Option<ClientId>,
    pub body: &'a [u8],
}

/// A post that was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostedRow {
    pub id: u64,
    pub seq: u64,
}

/// Why a post was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostRefused {
    NoRoom,
    NotMember,
}

/// A message of a room's log, as delivered and shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMessage {
    pub room: RoomId,
    pub seq: u64,
    pub id: u64,
    pub sender: Option<ClientId>,
    /// How the sender is shown: its name, its public id `~<hex>`, or `*` for a producer.
    pub shown: String,
    pub body: Vec<u8>,
    /// When it was stored, in microseconds since the Unix epoch.
    pub at_us: u64,
}

/// What a fenced read of a room page found.
#[derive(Debug)]
pub enum RoomFetch {
    /// The next messages of the room after the cursor, in order (maybe none).
    Owned(Vec<RoomMessage>),
    /// A newer session claimed the client.
    Stale,
}

/// Most member rows one statement of [`Store::record_room_cursors`] updates.
const ROOM_CURSOR_ROWS: usize = 1000;

/// Where one member is in one room: delivered up to, read up to (0: leave as it is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomCursor {
    pub room: RoomId,
    pub delivered: u64,
    pub read: u64,
}

/// How far one session got in its rooms: (client, epoch, cursors).
pub type RoomProgress = (ClientId, u64, Vec<RoomCursor>);

/// The columns of a message with how its sender is shown (`m`: messages, `s`: the sender's
/// clients row), as [`MessageRow`].
pub(super) fn message_columns() -> String {
    format!(
        "m.seq, m.id, m.sender_id, {}, m.body, \
         CAST(UNIX_TIMESTAMP(m.enqueued_at) * 1000000 AS UNSIGNED)",
        super::shown_sql("s")
    )
}

/// A row of [`message_columns`].
pub(super) type MessageRow = (u64, u64, Option<Vec<u8>>, Option<String>, Vec<u8>, u64);

/// A message of `room` from a row of [`MESSAGE_COLUMNS`].
pub(super) fn message(
    room: RoomId,
    (seq, id, sender, name, body, at_us): MessageRow,
) -> RoomMessage {
    let sender = sender.as_deref().and_then(ClientId::from_slice);
    RoomMessage {
        room,
        seq,
        id,
        sender,
        shown: shown(sender, name),
        body,
        at_us,
    }
}

/// How a sender is shown.
pub fn shown(sender: Option<ClientId>, name: Option<String>) -> String {
    match (sender, name) {
        (_, Some(name)) => name,
        (Some(id), None) => id.to_string(),
        (None, None) => "*".to_string(),
    }
}

/// `SELECT a AS x, b AS y UNION ALL SELECT c, d ...`: rows of literals as a derived table.
fn literal_rows(columns: &[&str], rows: &[Vec<String>]) -> String {
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let cells: Vec<String> = if i == 0 {
                row.iter()
                    .zip(columns)
                    .map(|(v, c)| format!("{v} AS {c}"))
                    .collect()
            } else {
                row.clone()
            };
            format!("SELECT {}", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

impl Store {
    /// Stores many posts in one transaction, touching only the rooms' rows and logs: the rooms'
    /// rows locked in key order, one `UPDATE` of their heads per distinct count, one multi-row
    /// `INSERT`. (A poster's read cursor moves with its session's next record of its cursors.)
    /// Per item, in order: the stored message, or why not.
    pub async fn post_many(
        &self,
        items: &[NewPost<'_>],
    ) -> Result<Vec<Result<PostedRow, PostRefused>>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let rooms: Vec<RoomId> = {
            let mut r: Vec<RoomId> = items.iter().map(|p| p.room).collect();
            r.sort_unstable();
            r.dedup();
            r
        };
        let room_list = rooms.iter().map(room_lit).collect::<Vec<_>>().join(",");
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            // The heads, locked, with the server's auto-increment settings (see `id_step_of`).
            let heads: Vec<(Vec<u8>, u64, u64, u64)> = tx
                .query(format!(
                    "SELECT id, last_seq, @@innodb_autoinc_lock_mode, @@auto_increment_increment \
                     FROM rooms WHERE id IN ({room_list}) ORDER BY id FOR UPDATE"
                ))
                .await?;
            let step = heads.first().map_or(0, |h| id_step_of(h.2, h.3));
            let mut next: HashMap<RoomId, u64> = heads
                .into_iter()
                .filter_map(|(id, seq, _, _)| Some((RoomId::from_slice(&id)?, seq + 1)))
                .collect();
            let posters: Vec<String> = items
                .iter()
                .filter_map(|p| Some(format!("({}, {})", room_lit(&p.room), client_lit(&p.sender?))))
                .collect();
            let mut allowed: HashSet<(RoomId, ClientId)> = HashSet::new();
            if !posters.is_empty() {
                let found: Vec<(Vec<u8>, Vec<u8>)> = tx
                    .query(format!(
                        "SELECT room_id, client_id FROM room_members WHERE (room_id, client_id) IN ({})",
                        posters.join(",")
                    ))
                    .await?;
                allowed = found
                    .into_iter()
                    .filter_map(|(r, c)| Some((RoomId::from_slice(&r)?, ClientId::from_slice(&c)?)))
                    .collect();
            }
            let planned: Vec<Result<u64, PostRefused>> = items
                .iter()
                .map(|p| {
                    let seq = next.get_mut(&p.room).ok_or(PostRefused::NoRoom)?;
                    if p.sender.is_some_and(|s| !allowed.contains(&(p.room, s))) {
                        return Err(PostRefused::NotMember);
                    }
                    *seq += 1;
                    Ok(*seq - 1)
                })
                .collect();
            let mut counts: HashMap<RoomId, u64> = HashMap::new();
            for (p, seq) in items.iter().zip(&planned) {
                if seq.is_ok() {
                    *counts.entry(p.room).or_default() += 1;
                }
            }
            if counts.is_empty() {
                tx.rollback().await?;
                // Every item was refused.
                return Ok(planned
                    .into_iter()
                    .map(|r| Err(r.err().unwrap_or(PostRefused::NoRoom)))
                    .collect());
            }
            let mut by_count: BTreeMap<u64, Vec<RoomId>> = BTreeMap::new();
            for (room, n) in &counts {
                by_count.entry(*n).or_default().push(*room);
            }
            // One UPDATE per distinct count, all in one round trip.
            let updates = by_count
                .iter()
                .map(|(n, rooms)| {
                    let list = rooms.iter().map(room_lit).collect::<Vec<_>>().join(",");
                    format!("UPDATE rooms SET last_seq = last_seq + {n} WHERE id IN ({list})")
                })
                .collect::<Vec<_>>()
                .join("; ");
            all_rows::<mysql_async::Row>(&mut tx, updates).await?;
            let stored: Vec<(&NewPost<'_>, u64)> = items
                .iter()
                .zip(&planned)
                .filter_map(|(p, seq)| Some((p, *seq.as_ref().ok()?)))
                .collect();
            let mut ids: HashMap<(RoomId, u64), u64> = HashMap::with_capacity(stored.len());
            for chunk in stored.chunks(1000) {
                let placeholders = vec!["(?, ?, ?, ?)"; chunk.len()].join(", ");
                let mut params: Vec<mysql_async::Value> = Vec::with_capacity(chunk.len() * 4);
                for (p, seq) in chunk {
                    params.push(p.room.as_bytes().to_vec().into());
                    params.push((*seq).into());
                    params.push(p.body.to_vec().into());
                    params.push(p.sender.map(|s| s.as_bytes().to_vec()).into());
                }
                tx.exec_drop(
                    format!(
                        "INSERT INTO messages (client_id, seq, body, sender_id) VALUES {placeholders}"
                    ),
                    params,
                )
                .await?;
                let keys: Vec<([u8; 16], u64)> =
                    chunk.iter().map(|(p, seq)| (*p.room.as_bytes(), *seq)).collect();
                let got = Store::inserted_ids(&mut tx, step, &keys).await?;
                for ((p, seq), id) in chunk.iter().zip(got) {
                    ids.insert((p.room, *seq), id);
                }
            }
            tx.commit().await?;
            Ok(items
                .iter()
                .zip(planned)
                .map(|(p, seq)| {
                    let seq = seq?;
                    Ok(PostedRow {
                        id: ids.get(&(p.room, seq)).copied().unwrap_or_default(),
                        seq,
                    })
                })
                .collect())
        })
        .await
    }

    /// The next pages of rooms for many sessions, in two statements. Per request (client, epoch,
    /// room, after_seq, limit), in order: the room's next `limit` messages after `after_seq` if
    /// session `epoch` still owns the client, else `Stale`.
    pub async fn fetch_room_pages(
        &self,
        requests: &[(ClientId, u64, RoomId, u64, usize)],
    ) -> Result<Vec<RoomFetch>, StoreError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let clients = requests
            .iter()
            .map(|r| client_lit(&r.0))
            .collect::<Vec<_>>()
            .join(",");
        let ranges = requests
            .iter()
            .map(|(_, _, room, after, limit)| {
                format!(
                    "(m.client_id = {} AND m.seq BETWEEN {} AND {})",
                    room_lit(room),
                    after + 1,
                    after + *limit as u64
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        type Row = (
            Vec<u8>,
            u64,
            u64,
            Option<Vec<u8>>,
            Option<String>,
            Vec<u8>,
            u64,
        );
        let (epochs, rows): (Vec<(Vec<u8>, u64)>, Vec<Row>) = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                let epochs = conn
                    .query(format!(
                        "SELECT id, session_epoch FROM clients WHERE id IN ({clients})"
                    ))
                    .await?;
                let rows = conn
                    .query(format!(
                        "SELECT m.client_id, {} \
                         FROM messages m LEFT JOIN clients s ON s.id = m.sender_id \
                         WHERE {ranges} ORDER BY m.client_id, m.seq",
                        message_columns()
                    ))
                    .await?;
                Ok((epochs, rows))
            })
            .await?;
        let epochs: HashMap<Vec<u8>, u64> = epochs.into_iter().collect();
        let mut logs: HashMap<RoomId, Vec<RoomMessage>> = HashMap::new();
        for (room, seq, id, sender, name, body, at_us) in rows {
            let Some(room) = RoomId::from_slice(&room) else {
                continue;
            };
            let row = (seq, id, sender, name, body, at_us);
            logs.entry(room).or_default().push(message(room, row));
        }
        Ok(requests
            .iter()
            .map(|(client, epoch, room, after, limit)| {
                if epochs.get(&client.as_bytes()[..]) != Some(epoch) {
                    return RoomFetch::Stale;
                }
                let page = logs
                    .get(room)
                    .map(|log| {
                        log.iter()
                            .filter(|m| m.seq > *after && m.seq <= after + *limit as u64)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                RoomFetch::Owned(page)
            })
            .collect())
    }

    /// Records, for many sessions in one statement (group commit), how far each got in its rooms:
    /// delivered, and read (a member's own posts). One entry per (client, epoch, cursors); the
    /// cursors only move forward. Per entry: `false` when session `epoch` no longer holds the
    /// client's delivery right (nothing recorded for it).
    pub async fn record_room_cursors(
        &self,
        entries: &[RoomProgress],
    ) -> Result<Vec<bool>, StoreError> {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .flat_map(|(client, epoch, rooms)| {
                rooms.iter().map(move |c| {
                    vec![
                        client_lit(client),
                        room_lit(&c.room),
                        c.delivered.to_string(),
                        c.read.to_string(),
                        epoch.to_string(),
                    ]
                })
            })
            .collect();
        if rows.is_empty() {
            return Ok(vec![true; entries.len()]);
        }
        let clients = entries
            .iter()
            .map(|e| client_lit(&e.0))
            .collect::<Vec<_>>()
            .join(",");
        let holders: Vec<(Vec<u8>, Option<u64>)> = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                let mut tx = conn.start_transaction(TxOpts::default()).await?;
                // The cursors rows first, shared, in key order (as every writer of cursors takes
                // them): two batches that share clients cannot deadlock.
                let holders = tx
                    .query(format!(
                        "SELECT client_id, holder_epoch FROM cursors WHERE client_id IN ({clients}) \
                         ORDER BY client_id LOCK IN SHARE MODE"
                    ))
                    .await?;
                // Fenced by the delivery right, checked per row (the holders cannot change under
                // the shared locks).
                for chunk in rows.chunks(ROOM_CURSOR_ROWS) {
                    tx.query_drop(format!(
                        "UPDATE members m JOIN cursors d ON d.client_id = m.client_id \
                         JOIN ({}) v ON m.client_id = v.c AND m.room_id = v.r \
                         AND d.holder_epoch = v.e \
                         SET m.delivered_seq = GREATEST(m.delivered_seq, v.s), \
                         m.read_seq = GREATEST(m.read_seq, v.rd)",
                        literal_rows(&["c", "r", "s", "rd", "e"], chunk)
                    ))
                    .await?;
                }
                tx.commit().await?;
                Ok(holders)
            })
            .await?;
        let holders: HashMap<Vec<u8>, Option<u64>> = holders.into_iter().collect();
        Ok(entries
            .iter()
            .map(|(client, epoch, _)| {
                holders.get(&client.as_bytes()[..]).copied().flatten() == Some(*epoch)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_rows_name_the_first_row_only() {
        let rows = vec![
            vec!["1".to_string(), "2".to_string()],
            vec!["3".to_string(), "4".to_string()],
        ];
        assert_eq!(
            literal_rows(&["a", "b"], &rows),
            "SELECT 1 AS a, 2 AS b UNION ALL SELECT 3, 4"
        );
    }
}
