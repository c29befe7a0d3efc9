//! Who is online (the delivery rights held by live nodes), contact lists, room member lists, and the public rooms.

use mysql_async::prelude::*;

use super::liveness::node_lock;
use super::shown_sql;
use super::{Store, StoreError};
use crate::{ClientId, RoomId};

/// A person in a list, and whether they are online.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The name, or the public id.
    pub shown: String,
    pub online: bool,
}

/// "Online": a session of the client holds its delivery right on a node whose lock is held (the
/// node lives). A crashed node's clients drop out at once (process gone) or within `--node-ttl`.
fn online(cursor: &str) -> String {
    format!(
        "({cursor}.holder_node IS NOT NULL AND IS_USED_LOCK({}) IS NOT NULL)",
        node_lock(&format!("{cursor}.holder_node"))
    )
}

/// The order of people in a list: named ones by name, then the others by public id.
const BY_NAME: &str = "c.name IS NULL, c.name, c.public_id";

type PersonRow = (String, bool);

fn listed((shown, online): PersonRow) -> Listed {
    Listed { shown, online }
}

impl Store {
    /// A page of the clients online in the whole cluster, and how many there are.
    pub async fn online(&self, offset: u64, limit: u32) -> Result<(u64, Vec<String>), StoreError> {
        let live = online("d");
        let (total, rows): (Option<u64>, Vec<PersonRow>) = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                let total = conn
                    .query_first(format!(
                        "SELECT COUNT(*) FROM cursors d WHERE d.holder_node IS NOT NULL AND {live}"
                    ))
                    .await?;
                let rows = conn
                    .exec(
                        format!(
                            "SELECT {}, 1 FROM cursors d JOIN clients c ON c.id = d.client_id \
                             WHERE d.holder_node IS NOT NULL AND {live} ORDER BY {BY_NAME} LIMIT ? OFFSET ?",
                            shown_sql("c")
                        ),
                        (limit, offset),
                    )
                    .await?;
                Ok((total, rows))
            })
            .await?;
        Ok((
            total.unwrap_or(0),
            rows.into_iter().map(|r| listed(r).shown).collect(),
        ))
    }

    /// Adds `contact` to `client`'s contacts unless it has `max` already. `Ok(None)`: too many;
    /// `Ok(Some(false))`: it was there already.
    pub async fn add_contact(
        &self,
        client: ClientId,
        contact: ClientId,
        max: usize,
    ) -> Result<Option<bool>, StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            let count: Option<u64> = conn
                .exec_first(
                    "SELECT COUNT(*) FROM contacts WHERE client_id = ?",
                    (&client.as_bytes()[..],),
                )
                .await?;
            if count.unwrap_or(0) >= max as u64 {
                let present: Option<u8> = conn
                    .exec_first(
                        "SELECT 1 FROM contacts WHERE client_id = ? AND contact_id = ?",
                        (&client.as_bytes()[..], &contact.as_bytes()[..]),
                    )
                    .await?;
                return Ok(present.map(|_| false));
            }
            conn.exec_drop(
                "INSERT IGNORE INTO contacts (client_id, contact_id) VALUES (?, ?)",
                (&client.as_bytes()[..], &contact.as_bytes()[..]),
            )
            .await?;
            Ok(Some(conn.affected_rows() == 1))
        })
        .await
    }

    /// Removes `contact` from `client`'s contacts; `false` if it was not one.
    pub async fn remove_contact(
        &self,
        client: ClientId,
        contact: ClientId,
    ) -> Result<bool, StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                "DELETE FROM contacts WHERE client_id = ? AND contact_id = ?",
                (&client.as_bytes()[..], &contact.as_bytes()[..]),
            )
            .await?;
            Ok(conn.affected_rows() == 1)
        })
        .await
    }

    /// A page of `client`'s contacts with their online state, and how many there are.
    pub async fn contacts(
        &self,
        client: ClientId,
        offset: u64,
        limit: u32,
    ) -> Result<(u64, Vec<Listed>), StoreError> {
        self.people_page(
            "SELECT COUNT(*) FROM contacts WHERE client_id = ?",
            "contacts k JOIN clients c ON c.id = k.contact_id WHERE k.client_id = ?",
            client.as_bytes(),
            offset,
            limit,
        )
        .await
    }

    /// A page of `room`'s members with their online state, and how many there are.
    pub async fn members(
        &self,
        room: RoomId,
        offset: u64,
        limit: u32,
    ) -> Result<(u64, Vec<Listed>), StoreError> {
        self.people_page(
            "SELECT COUNT(*) FROM room_members WHERE room_id = ?",
            "room_members rm JOIN clients c ON c.id = rm.client_id WHERE rm.room_id = ?",
            room.as_bytes(),
            offset,
            limit,
        )
        .await
    }

    /// A page of the people `from` (a join ending in clients `c`, with one `?` for `key`) lists,
    /// with their online state, and how many `count` (one `?` for `key`) says there are.
    async fn people_page(
        &self,
        count: &str,
        from: &str,
        key: &[u8; 16],
        offset: u64,
        limit: u32,
    ) -> Result<(u64, Vec<Listed>), StoreError> {
        let live = online("d");
        let (from, on_cursor) = from.split_once(" WHERE ").unwrap_or((from, "TRUE"));
        let (total, rows): (Option<u64>, Vec<PersonRow>) = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                let total = conn.exec_first(count, (&key[..],)).await?;
                let rows = conn
                    .exec(
                        format!(
                            "SELECT {}, {live} FROM {from} \
                             JOIN cursors d ON d.client_id = c.id \
                             WHERE {on_cursor} ORDER BY {BY_NAME} LIMIT ? OFFSET ?",
                            shown_sql("c")
                        ),
                        (&key[..], limit, offset),
                    )
                    .await?;
                Ok((total, rows))
            })
            .await?;
        Ok((total.unwrap_or(0), rows.into_iter().map(listed).collect()))
    }

    /// A page of the public rooms by name with their member counts, and how many there are.
    pub async fn public_rooms(
        &self,
        offset: u64,
        limit: u32,
    ) -> Result<(u64, Vec<(String, u64)>), StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            let total: Option<u64> = conn
                .query_first("SELECT COUNT(*) FROM rooms WHERE kind = 0")
                .await?;
            let rows: Vec<(String, u64)> = conn
                .exec(
                    "SELECT name, members FROM rooms WHERE kind = 0 ORDER BY name LIMIT ? OFFSET ?",
                    (limit, offset),
                )
                .await?;
            Ok((total.unwrap_or(0), rows))
        })
        .await
    }
}
