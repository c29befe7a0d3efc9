//! Rooms in MySQL: create, join, leave, invite, private rooms, a client's rooms and their heads.

use mysql_async::prelude::*;
use mysql_async::TxOpts;

use super::{hex, Store, StoreError};
use crate::{ClientId, RoomId};

/// What kind of room: `rooms.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomKind {
    Public,
    InviteOnly,
    /// The one room of two clients.
    Private,
}

impl RoomKind {
    fn code(self) -> u8 {
        match self {
            RoomKind::Public => 0,
            RoomKind::InviteOnly => 1,
            RoomKind::Private => 2,
        }
    }

    pub(super) fn from_code(code: u8) -> RoomKind {
        match code {
            0 => RoomKind::Public,
            1 => RoomKind::InviteOnly,
            _ => RoomKind::Private,
        }
    }
}

/// A named room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    pub id: RoomId,
    pub name: String,
    pub kind: RoomKind,
    pub last_seq: u64,
    pub members: u64,
}

/// What `CREATE` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    Done(RoomId),
    NameTaken,
    TooManyRooms,
}

/// What `JOIN` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// A member now; live delivery starts after `last_seq`.
    Done {
        last_seq: u64,
    },
    Already,
    InviteOnly,
    Full,
    TooManyRooms,
    NoRoom,
}

/// What `PRIVATE` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// The room exists (made now or before).
    Done {
        created: bool,
    },
    TooMany,
    PeerTooMany,
}

/// One of a client's rooms, with its delivery cursor, as a session loads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub room: RoomId,
    pub kind: RoomKind,
    /// The room's name (named rooms) or how the other member is shown (private rooms).
    pub shown: String,
    pub delivered_seq: u64,
    pub last_seq: u64,
}

/// How a room is named to a member: its name, or for a private room how the other member is
/// shown (`peer_shown`: its name or public id, from [`super::shown_sql`]).
pub(super) fn shown_as(kind: RoomKind, name: String, peer_shown: Option<String>) -> Option<String> {
    match kind {
        RoomKind::Private => peer_shown,
        _ => Some(name),
    }
}

/// `X'..'` for a room id: a hex literal of our own typed id, safe in SQL.
pub(super) fn room_lit(id: &RoomId) -> String {
    format!("X'{}'", hex(id.as_bytes()))
}

/// `X'..'` for a client id.
pub(super) fn client_lit(id: &ClientId) -> String {
    format!("X'{}'", hex(id.as_bytes()))
}

impl Store {
    /// Creates the room `name` (`key` in lower case) with `creator` as its first member, unless
    /// the name is taken or the creator is in `max_rooms` rooms.
    pub async fn create_room(
        &self,
        creator: ClientId,
        name: &str,
        key: &str,
        invite_only: bool,
        max_rooms: usize,
    ) -> Result<Created, StoreError> {
        let room = RoomId::random();
        let kind = if invite_only {
            RoomKind::InviteOnly
        } else {
            RoomKind::Public
        };
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            let rooms: Option<u64> = tx
                .exec_first(
                    "SELECT rooms FROM clients WHERE id = ? FOR UPDATE",
                    (&creator.as_bytes()[..],),
                )
                .await?;
            if rooms.unwrap_or(u64::MAX) >= max_rooms as u64 {
                tx.rollback().await?;
                return Ok(Created::TooManyRooms);
            }
            tx.exec_drop(
                "INSERT IGNORE INTO room_names (name_key, room_id) VALUES (?, ?)",
                (key, &room.as_bytes()[..]),
            )
            .await?;
            if tx.affected_rows() == 0 {
                tx.rollback().await?;
                return Ok(Created::NameTaken);
            }
            tx.exec_drop(
                "INSERT INTO rooms (id, name, kind, members, created_by) VALUES (?, ?, ?, 1, ?)",
                (&room.as_bytes()[..], name, kind.code(), &creator.as_bytes()[..]),
            )
            .await?;
            add_member(&mut tx, room, creator, None, 0).await?;
            tx.exec_drop(
                "UPDATE clients SET rooms = rooms + 1, rooms_version = rooms_version + 1 WHERE id = ?",
                (&creator.as_bytes()[..],),
            )
            .await?;
            tx.commit().await?;
            Ok(Created::Done(room))
        })
        .await
    }

    /// The named room `key` (lower case), if any.
    pub async fn room_named(&self, key: &str) -> Result<Option<RoomInfo>, StoreError> {
        let row: Option<(Vec<u8>, String, u8, u64, u64)> = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                conn.exec_first(
                    "SELECT r.id, r.name, r.kind, r.last_seq, r.members FROM room_names n \
                     JOIN rooms r ON r.id = n.room_id WHERE n.name_key = ?",
                    (key,),
                )
                .await
            })
            .await?;
        Ok(row.and_then(|(id, name, kind, last_seq, members)| {
            Some(RoomInfo {
                id: RoomId::from_slice(&id)?,
                name,
                kind: RoomKind::from_code(kind),
                last_seq,
                members,
            })
        }))
    }

    /// Makes `client` a member of `room`: an invite-only room needs an invitation (used up here);
    /// the room must have fewer than `max_members`, the client fewer than `max_rooms` rooms.
    pub async fn join_room(
        &self,
        client: ClientId,
        room: RoomId,
        max_rooms: usize,
        max_members: usize,
    ) -> Result<Joined, StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            // Lock order everywhere: the client row, then the room row.
            let rooms: Option<u64> = tx
                .exec_first(
                    "SELECT rooms FROM clients WHERE id = ? FOR UPDATE",
                    (&client.as_bytes()[..],),
                )
                .await?;
            let found: Option<(u8, u64, u64)> = tx
                .exec_first(
                    "SELECT kind, last_seq, members FROM rooms WHERE id = ? FOR UPDATE",
                    (&room.as_bytes()[..],),
                )
                .await?;
            let Some((kind, last_seq, members)) = found else {
                tx.rollback().await?;
                return Ok(Joined::NoRoom);
            };
            let member: Option<u8> = tx
                .exec_first(
                    "SELECT 1 FROM room_members WHERE room_id = ? AND client_id = ?",
                    (&room.as_bytes()[..], &client.as_bytes()[..]),
                )
                .await?;
            let refusal = if member.is_some() {
                Some(Joined::Already)
            } else if members >= max_members as u64 {
                Some(Joined::Full)
            } else if rooms.unwrap_or(u64::MAX) >= max_rooms as u64 {
                Some(Joined::TooManyRooms)
            } else {
                match RoomKind::from_code(kind) {
                    RoomKind::Public => None,
                    RoomKind::Private => Some(Joined::NoRoom),
                    RoomKind::InviteOnly => {
                        tx.exec_drop(
                            "DELETE FROM invites WHERE room_id = ? AND client_id = ?",
                            (&room.as_bytes()[..], &client.as_bytes()[..]),
                        )
                        .await?;
                        (tx.affected_rows() == 0).then_some(Joined::InviteOnly)
                    }
                }
            };
            if let Some(refusal) = refusal {
                tx.rollback().await?;
                return Ok(refusal);
            }
            add_member(&mut tx, room, client, None, last_seq).await?;
            tx.exec_drop(
                "UPDATE rooms SET members = members + 1 WHERE id = ?",
                (&room.as_bytes()[..],),
            )
            .await?;
            tx.exec_drop(
                "UPDATE clients SET rooms = rooms + 1, rooms_version = rooms_version + 1 WHERE id = ?",
                (&client.as_bytes()[..],),
            )
            .await?;
            tx.commit().await?;
            Ok(Joined::Done { last_seq })
        })
        .await
    }

    /// Takes `client` out of the named room `room`; `false` if it was not a member.
    pub async fn leave_room(&self, client: ClientId, room: RoomId) -> Result<bool, StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            tx.exec_drop(
                "SELECT rooms FROM clients WHERE id = ? FOR UPDATE",
                (&client.as_bytes()[..],),
            )
            .await?;
            tx.exec_drop(
                "DELETE FROM room_members WHERE room_id = ? AND client_id = ?",
                (&room.as_bytes()[..], &client.as_bytes()[..]),
            )
            .await?;
            if tx.affected_rows() == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            tx.exec_drop(
                "DELETE FROM members WHERE client_id = ? AND room_id = ?",
                (&client.as_bytes()[..], &room.as_bytes()[..]),
            )
            .await?;
            tx.exec_drop(
                "UPDATE rooms SET members = members - 1 WHERE id = ? AND members > 0",
                (&room.as_bytes()[..],),
            )
            .await?;
            tx.exec_drop(
                "UPDATE clients SET rooms = rooms - 1, rooms_version = rooms_version + 1 \
                 WHERE id = ? AND rooms > 0",
                (&client.as_bytes()[..],),
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// Whether `client` is a member of `room`.
    pub async fn is_member(&self, room: RoomId, client: ClientId) -> Result<bool, StoreError> {
        let row: Option<u8> = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                conn.exec_first(
                    "SELECT 1 FROM room_members WHERE room_id = ? AND client_id = ?",
                    (&room.as_bytes()[..], &client.as_bytes()[..]),
                )
                .await
            })
            .await?;
        Ok(row.is_some())
    }

    /// Records an invitation of `who` to `room` by `by` (kept until `who` joins); `false` when it
    /// was invited already.
    pub async fn invite(
        &self,
        room: RoomId,
        who: ClientId,
        by: ClientId,
    ) -> Result<bool, StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                "INSERT IGNORE INTO invites (room_id, client_id, invited_by) VALUES (?, ?, ?)",
                (
                    &room.as_bytes()[..],
                    &who.as_bytes()[..],
                    &by.as_bytes()[..],
                ),
            )
            .await?;
            Ok(conn.affected_rows() == 1)
        })
        .await
    }

    /// Makes sure the private room of `me` and `peer` exists, both members, unless either already
    /// has `max` private rooms.
    pub async fn open_private(
        &self,
        me: ClientId,
        peer: ClientId,
        max: usize,
    ) -> Result<Opened, StoreError> {
        let room = RoomId::private(me, peer);
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            let exists: Option<u8> = conn
                .exec_first("SELECT 1 FROM rooms WHERE id = ?", (&room.as_bytes()[..],))
                .await?;
            if exists.is_some() {
                return Ok(Opened::Done { created: false });
            }
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            // Both client rows, in key order: two clients opening it at once queue up here.
            let counts: Vec<(Vec<u8>, u64)> = tx
                .query(format!(
                    "SELECT id, directs FROM clients WHERE id IN ({}, {}) ORDER BY id FOR UPDATE",
                    client_lit(&me),
                    client_lit(&peer)
                ))
                .await?;
            let count = |id: &ClientId| {
                counts
                    .iter()
                    .find(|(c, _)| c[..] == id.as_bytes()[..])
                    .map_or(u64::MAX, |(_, n)| *n)
            };
            let exists: Option<u8> = tx
                .exec_first("SELECT 1 FROM rooms WHERE id = ?", (&room.as_bytes()[..],))
                .await?;
            if exists.is_some() {
                tx.commit().await?;
                return Ok(Opened::Done { created: false });
            }
            if count(&me) >= max as u64 {
                tx.rollback().await?;
                return Ok(Opened::TooMany);
            }
            if count(&peer) >= max as u64 {
                tx.rollback().await?;
                return Ok(Opened::PeerTooMany);
            }
            tx.exec_drop(
                "INSERT INTO rooms (id, name, kind, members, created_by) VALUES (?, '', ?, 2, ?)",
                (
                    &room.as_bytes()[..],
                    RoomKind::Private.code(),
                    &me.as_bytes()[..],
                ),
            )
            .await?;
            add_member(&mut tx, room, me, Some(peer), 0).await?;
            add_member(&mut tx, room, peer, Some(me), 0).await?;
            tx.query_drop(format!(
                "UPDATE clients SET directs = directs + 1, rooms_version = rooms_version + 1 \
                 WHERE id IN ({}, {})",
                client_lit(&me),
                client_lit(&peer)
            ))
            .await?;
            tx.commit().await?;
            Ok(Opened::Done { created: true })
        })
        .await
    }

    /// Every room of `client` with its delivery cursor and head, and the client's rooms version
    /// (it moves with every membership change).
    pub async fn memberships(
        &self,
        client: ClientId,
    ) -> Result<(u64, Vec<Membership>), StoreError> {
        type Row = (
            Vec<u8>,
            u8,
            String,
            Option<Vec<u8>>,
            Option<String>,
            u64,
            u64,
        );
        let (version, rows): (Option<u64>, Vec<Row>) = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                let version = conn
                    .exec_first(
                        "SELECT rooms_version FROM clients WHERE id = ?",
                        (&client.as_bytes()[..],),
                    )
                    .await?;
                let rows = conn
                    .exec(
                        format!(
                            "SELECT m.room_id, r.kind, r.name, m.peer_id, {}, m.delivered_seq, \
                         r.last_seq FROM members m JOIN rooms r ON r.id = m.room_id \
                         LEFT JOIN clients p ON p.id = m.peer_id WHERE m.client_id = ?",
                            super::shown_sql("p")
                        ),
                        (&client.as_bytes()[..],),
                    )
                    .await?;
                Ok((version, rows))
            })
            .await?;
        let rooms = rows
            .into_iter()
            .filter_map(
                |(room, kind, name, _peer, peer_shown, delivered_seq, last_seq)| {
                    let kind = RoomKind::from_code(kind);
                    let shown = shown_as(kind, name, peer_shown)?;
                    Some(Membership {
                        room: RoomId::from_slice(&room)?,
                        kind,
                        shown,
                        delivered_seq,
                        last_seq,
                    })
                },
            )
            .collect();
        Ok((version.unwrap_or(0), rooms))
    }

    /// The head (`last_seq`) of each given room that exists, in one statement (pass at most a few
    /// hundred).
    pub async fn room_heads(&self, rooms: &[RoomId]) -> Result<Vec<(RoomId, u64)>, StoreError> {
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        let list = rooms.iter().map(room_lit).collect::<Vec<_>>().join(",");
        let rows: Vec<(Vec<u8>, u64)> = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                conn.query(format!(
                    "SELECT id, last_seq FROM rooms WHERE id IN ({list})"
                ))
                .await
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, seq)| Some((RoomId::from_slice(&id)?, seq)))
            .collect())
    }
}

/// Adds the two rows of a membership (by room, by client); delivery and reading start after
/// `from_seq`.
async fn add_member(
    tx: &mut mysql_async::Transaction<'_>,
    room: RoomId,
    client: ClientId,
    peer: Option<ClientId>,
    from_seq: u64,
) -> Result<(), mysql_async::Error> {
    tx.exec_drop(
        "INSERT INTO room_members (room_id, client_id) VALUES (?, ?)",
        (&room.as_bytes()[..], &client.as_bytes()[..]),
    )
    .await?;
    tx.exec_drop(
        "INSERT INTO members (client_id, room_id, peer_id, joined_seq, delivered_seq, read_seq) \
         VALUES (?, ?, ?, ?, ?, ?)",
        (
            &client.as_bytes()[..],
            &room.as_bytes()[..],
            peer.map(|p| p.as_bytes().to_vec()),
            from_seq,
            from_seq,
            from_seq,
        ),
    )
    .await
}
