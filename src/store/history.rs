//! History and read cursors in MySQL: pages of a room's log, `READ`, and the chat list of `ROOMS`.

use mysql_async::prelude::*;

use super::posts::{message, message_columns, MessageRow, RoomMessage};
use super::rooms::{shown_as, RoomKind};
use super::shown_sql;
use super::{Store, StoreError};
use crate::{ClientId, RoomId};

/// A client's position in one of its rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    /// Read up to here (never below the join point).
    pub read_seq: u64,
    pub last_seq: u64,
}

impl ReadState {
    pub fn unread(&self) -> u64 {
        self.last_seq.saturating_sub(self.read_seq)
    }
}

/// One line of the chat list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatListRow {
    pub room: RoomId,
    pub kind: RoomKind,
    /// The room's name, or how the other member of a private room is shown.
    pub shown: String,
    pub unread: u64,
    pub last: Option<RoomMessage>,
}

impl Store {
    /// Up to `count` messages of `room` before message `before` (or the newest), oldest first.
    pub async fn history(
        &self,
        room: RoomId,
        count: u32,
        before: Option<u64>,
    ) -> Result<Vec<RoomMessage>, StoreError> {
        let rows: Vec<MessageRow> = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                // By seq within the room's primary-key range; `before` is a message id, whose seq
                // is looked up first (ids grow with seqs in a room).
                let below: Option<u64> = match before {
                    None => Some(u64::MAX),
                    Some(id) => {
                        conn.exec_first(
                            "SELECT seq FROM messages WHERE id = ? AND client_id = ?",
                            (id, &room.as_bytes()[..]),
                        )
                        .await?
                    }
                };
                let Some(below) = below else {
                    return Ok(Vec::new());
                };
                conn.exec(
                    format!(
                        "SELECT {} FROM messages m \
                         LEFT JOIN clients s ON s.id = m.sender_id \
                         WHERE m.client_id = ? AND m.seq < ? ORDER BY m.seq DESC LIMIT ?",
                        message_columns()
                    ),
                    (&room.as_bytes()[..], below, count),
                )
                .await
            })
            .await?;
        let mut page: Vec<RoomMessage> = rows.into_iter().map(|r| message(room, r)).collect();
        page.reverse();
        Ok(page)
    }

    /// Whether message `id` is in `room` (for `HISTORY ... BEFORE` and `READ`): its seq.
    pub async fn seq_of(&self, room: RoomId, id: u64) -> Result<Option<u64>, StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_first(
                "SELECT seq FROM messages WHERE id = ? AND client_id = ?",
                (id, &room.as_bytes()[..]),
            )
            .await
        })
        .await
    }

    /// Moves `client`'s read cursor in `room` up to `seq` (`None`: the head), never back.
    /// `None` when the client is not a member.
    pub async fn mark_read(
        &self,
        client: ClientId,
        room: RoomId,
        seq: Option<u64>,
    ) -> Result<Option<ReadState>, StoreError> {
        let row: Option<(u64, u64)> = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                conn.exec_drop(
                    "UPDATE members m JOIN rooms r ON r.id = m.room_id \
                     SET m.read_seq = GREATEST(m.read_seq, LEAST(COALESCE(?, r.last_seq), r.last_seq)) \
                     WHERE m.client_id = ? AND m.room_id = ?",
                    (seq, &client.as_bytes()[..], &room.as_bytes()[..]),
                )
                .await?;
                conn.exec_first(
                    "SELECT GREATEST(m.read_seq, m.joined_seq), r.last_seq FROM members m \
                     JOIN rooms r ON r.id = m.room_id WHERE m.client_id = ? AND m.room_id = ?",
                    (&client.as_bytes()[..], &room.as_bytes()[..]),
                )
                .await
            })
            .await?;
        Ok(row.map(|(read_seq, last_seq)| ReadState { read_seq, last_seq }))
    }

    /// The last message of `room` at or below `seq` (what `READ ... ALL` read up to).
    pub async fn message_at(&self, room: RoomId, seq: u64) -> Result<Option<u64>, StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_first(
                "SELECT id FROM messages WHERE client_id = ? AND seq <= ? ORDER BY seq DESC LIMIT 1",
                (&room.as_bytes()[..], seq),
            )
            .await
        })
        .await
    }

    /// A page of `client`'s rooms, most recently active first, each with its unread count and
    /// last message; and how many rooms it has in all.
    pub async fn chat_list(
        &self,
        client: ClientId,
        offset: u64,
        limit: u32,
    ) -> Result<(u64, Vec<ChatListRow>), StoreError> {
        type Row = (
            Vec<u8>,
            u8,
            String,
            Option<Vec<u8>>,
            Option<String>,
            u64,
            Option<u64>,
            Option<u64>,
            Option<Vec<u8>>,
            Option<String>,
            Option<Vec<u8>>,
            Option<u64>,
        );
        let (total, rows): (Option<u64>, Vec<Row>) = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                let total = conn
                    .exec_first(
                        "SELECT COUNT(*) FROM members WHERE client_id = ?",
                        (&client.as_bytes()[..],),
                    )
                    .await?;
                let rows = conn
                    .exec(
                        format!(
                        "SELECT r.id, r.kind, r.name, m.peer_id, {}, \
                         r.last_seq - LEAST(r.last_seq, GREATEST(m.read_seq, m.joined_seq)), \
                         lm.seq, lm.id, lm.sender_id, {}, lm.body, \
                         CAST(UNIX_TIMESTAMP(lm.enqueued_at) * 1000000 AS UNSIGNED) \
                         FROM members m JOIN rooms r ON r.id = m.room_id \
                         LEFT JOIN clients p ON p.id = m.peer_id \
                         LEFT JOIN messages lm ON lm.client_id = r.id AND lm.seq = r.last_seq \
                         LEFT JOIN clients s ON s.id = lm.sender_id \
                         WHERE m.client_id = ? \
                         ORDER BY COALESCE(lm.enqueued_at, r.created_at) DESC, r.id LIMIT ? OFFSET ?",
                        shown_sql("p"), shown_sql("s")),
                        (&client.as_bytes()[..], limit, offset),
                    )
                    .await?;
                Ok((total, rows))
            })
            .await?;
        let rows = rows
            .into_iter()
            .filter_map(
                |(
                    room,
                    kind,
                    name,
                    _peer,
                    peer_shown,
                    unread,
                    seq,
                    id,
                    sender,
                    sname,
                    body,
                    at,
                )| {
                    let room = RoomId::from_slice(&room)?;
                    let kind = RoomKind::from_code(kind);
                    let shown_as = shown_as(kind, name, peer_shown)?;
                    let last = match (seq, id, body, at) {
                        (Some(seq), Some(id), Some(body), Some(at)) => {
                            Some(message(room, (seq, id, sender, sname, body, at)))
                        }
                        _ => None,
                    };
                    Some(ChatListRow {
                        room,
                        kind,
                        shown: shown_as,
                        unread,
                        last,
                    })
                },
            )
            .collect();
        Ok((total.unwrap_or(0), rows))
    }
}
