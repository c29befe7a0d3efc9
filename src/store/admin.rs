//! The operator's side of the store (`chat-admin`): cluster-wide bans, client state, sessions and backlog.

use mysql_async::prelude::*;

use super::{Store, StoreError};
use crate::ClientId;

/// Most bans a node loads (bounded memory; far more than any sane operator adds).
pub const MAX_BANS: usize = 100_000;

/// One row of the `bans` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRow {
    /// A client id, an IP address or a network, in canonical text form.
    pub entry: String,
    pub reason: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// One client's state, as `chat-admin client` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last connect.
    pub last_seen_at: Option<i64>,
    pub last_seq: u64,
    pub session_epoch: u64,
    /// Node of the latest session.
    pub owner_node: Option<String>,
    pub delivered_seq: u64,
    /// The session holding the delivery right, and its node.
    pub holder_epoch: Option<u64>,
    pub holder_node: Option<String>,
    /// Stored messages after the cursor (rows, the truth).
    pub pending: u64,
    /// Stored messages, delivered or not (delivered ones stay until retention removes them).
    pub stored: u64,
}

/// The cluster's backlog: clients with messages after their cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    /// Sum over clients of `last_seq - delivered_seq`.
    pub pending: u64,
    /// Clients with something pending.
    pub clients: u64,
    /// The clients with the most pending, most first.
    pub top: Vec<(ClientId, u64)>,
}

impl Store {
    /// Every cluster-wide ban, oldest first (at most [`MAX_BANS`]).
    pub async fn bans(&self) -> Result<Vec<BanRow>, StoreError> {
        let rows: Vec<(String, Option<String>, i64)> = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                conn.exec(
                    "SELECT entry, reason, FLOOR(UNIX_TIMESTAMP(created_at)) FROM bans \
                     ORDER BY created_at, entry LIMIT ?",
                    (MAX_BANS as u64,),
                )
                .await
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(entry, reason, created_at)| BanRow {
                entry,
                reason,
                created_at,
            })
            .collect())
    }

    /// Adds a ban (or updates its reason); `true` when it is new.
    pub async fn add_ban(&self, entry: &str, reason: Option<&str>) -> Result<bool, StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            let existed: Option<u8> = conn
                .exec_first("SELECT 1 FROM bans WHERE entry = ?", (entry,))
                .await?;
            conn.exec_drop(
                "INSERT INTO bans (entry, reason) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE reason = VALUES(reason)",
                (entry, reason),
            )
            .await?;
            Ok(existed.is_none())
        })
        .await
    }

    /// Removes a ban; `false` when there was none.
    pub async fn remove_ban(&self, entry: &str) -> Result<bool, StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop("DELETE FROM bans WHERE entry = ?", (entry,))
                .await?;
            Ok(conn.affected_rows() > 0)
        })
        .await
    }

    /// One client's state; `None` for an unknown id.
    pub async fn client_info(&self, id: ClientId) -> Result<Option<ClientInfo>, StoreError> {
        type Row = (
            i64,
            Option<i64>,
            u64,
            u64,
            Option<String>,
            u64,
            Option<u64>,
            Option<String>,
        );
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            let row: Option<Row> = conn
                .exec_first(
                    "SELECT FLOOR(UNIX_TIMESTAMP(c.created_at)), \
                     FLOOR(UNIX_TIMESTAMP(c.last_seen_at)), c.last_seq, c.session_epoch, \
                     c.owner_node, d.delivered_seq, d.holder_epoch, d.holder_node \
                     FROM clients c JOIN cursors d ON d.client_id = c.id WHERE c.id = ?",
                    (&id.as_bytes()[..],),
                )
                .await?;
            let Some(row) = row else { return Ok(None) };
            let counts: Option<(u64, u64)> = conn
                .exec_first(
                    "SELECT COUNT(*), CAST(COALESCE(SUM(seq > ?), 0) AS UNSIGNED) \
                     FROM messages WHERE client_id = ?",
                    (row.5, &id.as_bytes()[..]),
                )
                .await?;
            let (stored, pending) = counts.unwrap_or_default();
            Ok(Some(ClientInfo {
                created_at: row.0,
                last_seen_at: row.1,
                last_seq: row.2,
                session_epoch: row.3,
                owner_node: row.4,
                delivered_seq: row.5,
                holder_epoch: row.6,
                holder_node: row.7,
                pending,
                stored,
            }))
        })
        .await
    }

    /// Sessions per node: the delivery rights held (`cursors.holder_node`), by node.
    pub async fn sessions_per_node(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            conn.query(
                "SELECT holder_node, COUNT(*) FROM cursors WHERE holder_node IS NOT NULL \
                 GROUP BY holder_node ORDER BY holder_node",
            )
            .await
        })
        .await
    }

    /// The clients whose delivery right `node` holds, with their session epochs (at most `limit`).
    pub async fn sessions_of(
        &self,
        node: &str,
        limit: u64,
    ) -> Result<Vec<(ClientId, u64)>, StoreError> {
        let rows: Vec<(Vec<u8>, u64)> = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                conn.exec(
                    "SELECT client_id, holder_epoch FROM cursors WHERE holder_node = ? \
                     ORDER BY client_id LIMIT ?",
                    (node, limit),
                )
                .await
            })
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, epoch)| Some((ClientId::from_slice(&id)?, epoch)))
            .collect())
    }

    /// The backlog: totals, and the `top` clients with the most pending. One pass over
    /// `clients`/`cursors` (one row per client), not over `messages`; the counts are
    /// `last_seq - delivered_seq`, which `client_info` checks against the rows.
    pub async fn backlog(&self, top: u64) -> Result<Backlog, StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            let totals: Option<(u64, u64)> = conn
                .query_first(
                    "SELECT COUNT(*), CAST(COALESCE(SUM(c.last_seq - d.delivered_seq), 0) AS UNSIGNED) \
                     FROM clients c JOIN cursors d ON d.client_id = c.id \
                     WHERE c.last_seq > d.delivered_seq",
                )
                .await?;
            let rows: Vec<(Vec<u8>, u64)> = conn
                .exec(
                    "SELECT c.id, c.last_seq - d.delivered_seq AS pending \
                     FROM clients c JOIN cursors d ON d.client_id = c.id \
                     WHERE c.last_seq > d.delivered_seq ORDER BY pending DESC, c.id LIMIT ?",
                    (top,),
                )
                .await?;
            let (clients, pending) = totals.unwrap_or_default();
            Ok(Backlog {
                pending,
                clients,
                top: rows
                    .into_iter()
                    .filter_map(|(id, n)| Some((ClientId::from_slice(&id)?, n)))
                    .collect(),
            })
        })
        .await
    }
}
