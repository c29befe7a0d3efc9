//! MySQL, the source of truth: every SQL statement of the product and the migrations runner.

use std::future::Future;
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, TxOpts};

use crate::ClientId;

/// Migrations compiled into the binaries, applied in order, once each (`sql/NNNN_name.sql`).
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "0001_init", include_str!("../sql/0001_init.sql")),
    (2, "0002_holder", include_str!("../sql/0002_holder.sql")),
];

/// Bound on one statement's round trip, so a hung server cannot hang a session forever.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How many ids one sweep query checks.
const SWEEP_CHUNK: usize = 500;

/// A MySQL failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error(
        "the database schema is missing (start a chat-server once to apply the migrations in sql/)"
    )]
    NoSchema,
    #[error("MySQL did not answer within {0:?}")]
    Timeout(Duration),
    #[error("could not take the migrations lock")]
    MigrationLock,
    #[error(transparent)]
    Mysql(#[from] mysql_async::Error),
}

impl StoreError {
    fn classify(e: mysql_async::Error) -> StoreError {
        match &e {
            // ER_NO_SUCH_TABLE
            mysql_async::Error::Server(s) if s.code == 1146 => StoreError::NoSchema,
            _ => StoreError::Mysql(e),
        }
    }
}

/// A client's state when a session claims it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// This session's fencing token: a later session of the same client has a larger one.
    pub epoch: u64,
    /// Every message with `seq <= delivered_seq` was already written to the client.
    pub delivered_seq: u64,
    /// Whether the session already holds the delivery right (a new client does).
    pub holding: bool,
}

/// One pending message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub seq: u64,
    /// Global message id.
    pub id: u64,
    pub body: Vec<u8>,
}

/// What a fenced read of pending messages found.
#[derive(Debug)]
pub enum Fetch {
    /// The session still owns the client; these are the next messages in order (maybe none).
    Owned(Vec<Pending>),
    /// A newer session claimed the client: this one must stop delivering.
    Stale,
}

/// What an attempt to take the delivery right found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquire {
    /// This session may deliver; everything up to `delivered_seq` is done.
    Acquired { delivered_seq: u64 },
    /// An older session (on `holder_node`) still holds the right.
    Busy { holder_node: Option<String> },
    /// A newer session claimed the client.
    Stale,
}

/// A stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Global message id (what `chat-enqueue` prints).
    pub id: u64,
    /// Position in the client's queue.
    pub seq: u64,
}

/// One client's line in a sweep: its current session epoch and whether anything is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepRow {
    pub client_id: ClientId,
    pub epoch: u64,
    pub has_pending: bool,
}

/// The MySQL connection pool and the queries on it.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    /// A pool of at most `max_connections` to `url` (connections are opened lazily).
    pub fn new(url: &str, max_connections: usize) -> Result<Store, StoreError> {
        let opts = Opts::from_url(url).map_err(|e| StoreError::Url(e.to_string()))?;
        let constraints = PoolConstraints::new(0, max_connections.max(1))
            .ok_or_else(|| StoreError::Url("invalid pool size".into()))?;
        let opts = OptsBuilder::from_opts(opts)
            // Affected rows = matched rows, so a fenced no-op update still proves ownership.
            .client_found_rows(true)
            .pool_opts(PoolOpts::default().with_constraints(constraints));
        Ok(Store {
            pool: Pool::new(opts),
        })
    }

    /// Checks that the server answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            conn.ping().await
        })
        .await
    }

    /// Creates the database if needed, then applies pending migrations under a named lock,
    /// so nodes that start together apply each migration exactly once.
    pub async fn migrate(url: &str) -> Result<Vec<&'static str>, StoreError> {
        let opts = Opts::from_url(url).map_err(|e| StoreError::Url(e.to_string()))?;
        let db = opts
            .db_name()
            .ok_or_else(|| {
                StoreError::Url(
                    "the URL names no database (mysql://user@host:port/DATABASE)".into(),
                )
            })?
            .to_string();
        if db.contains('`') {
            return Err(StoreError::Url(format!("unusable database name {db:?}")));
        }
        let server = OptsBuilder::from_opts(opts.clone()).db_name(None::<String>);
        with_timeout(Duration::from_secs(120), async {
            let mut conn = mysql_async::Conn::new(server).await?;
            conn.query_drop(format!(
                "CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4"
            ))
            .await?;
            conn.query_drop(format!("USE `{db}`")).await?;
            let locked: Option<Option<i64>> = conn
                .query_first("SELECT GET_LOCK(CONCAT('chat-migrations:', DATABASE()), 60)")
                .await?;
            if locked.flatten() != Some(1) {
                return Err(StoreError::MigrationLock);
            }
            let result = apply_migrations(&mut conn).await;
            conn.query_drop("DO RELEASE_LOCK(CONCAT('chat-migrations:', DATABASE()))")
                .await?;
            conn.disconnect().await?;
            result
        })
        .await?
    }

    /// Creates a new client, already claimed by `node` (epoch 1, nothing delivered).
    pub async fn create_client(&self, node: &str) -> Result<(ClientId, Claim), StoreError> {
        let id = ClientId::random();
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                "INSERT INTO clients (id, session_epoch, holder_epoch, holder_node, owner_node, \
                 last_seen_at) VALUES (?, 1, 1, ?, ?, NOW(6))",
                (&id.as_bytes()[..], node, node),
            )
            .await
        })
        .await?;
        Ok((
            id,
            Claim {
                epoch: 1,
                delivered_seq: 0,
                holding: true,
            },
        ))
    }

    /// Claims an existing client for a new session on `node`: bumps its epoch, which fences off
    /// any older session. `None` when no such client exists.
    pub async fn claim_client(
        &self,
        id: ClientId,
        node: &str,
    ) -> Result<Option<Claim>, StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                "UPDATE clients SET session_epoch = LAST_INSERT_ID(session_epoch + 1), \
                 owner_node = ?, last_seen_at = NOW(6) WHERE id = ?",
                (node, &id.as_bytes()[..]),
            )
            .await?;
            if conn.affected_rows() == 0 {
                return Ok(None);
            }
            let epoch = conn.last_insert_id().unwrap_or_default();
            let delivered_seq: Option<u64> = conn
                .exec_first(
                    "SELECT delivered_seq FROM clients WHERE id = ?",
                    (&id.as_bytes()[..],),
                )
                .await?;
            Ok(delivered_seq.map(|delivered_seq| Claim {
                epoch,
                delivered_seq,
                holding: false,
            }))
        })
        .await
    }

    /// The next `limit` messages after `after_seq`, in order, if session `epoch` still owns the client.
    pub async fn fetch_pending(
        &self,
        id: ClientId,
        epoch: u64,
        after_seq: u64,
        limit: usize,
    ) -> Result<Fetch, StoreError> {
        // (current epoch, seq, id, body); the message columns are NULL when nothing is pending.
        type Row = (u64, Option<u64>, Option<u64>, Option<Vec<u8>>);
        let rows: Vec<Row> = self
            .timed(async {
                let mut conn = self.pool.get_conn().await?;
                conn.exec(
                    "SELECT c.session_epoch, m.seq, m.id, m.body FROM clients c \
                     LEFT JOIN messages m ON m.client_id = c.id AND m.seq > ? \
                     WHERE c.id = ? ORDER BY m.seq LIMIT ?",
                    (after_seq, &id.as_bytes()[..], limit as u64),
                )
                .await
            })
            .await?;
        match rows.first() {
            Some((current, ..)) if *current == epoch => Ok(Fetch::Owned(
                rows.into_iter()
                    .filter_map(|(_, seq, id, body)| {
                        Some(Pending {
                            seq: seq?,
                            id: id?,
                            body: body?,
                        })
                    })
                    .collect(),
            )),
            _ => Ok(Fetch::Stale),
        }
    }

    /// Takes the right to deliver to `id` for session `epoch` of `node`: granted when nobody holds
    /// it, or with `force` (the holder is gone). Returns the cursor the holder left.
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
                "UPDATE clients SET holder_epoch = ?, holder_node = ? \
                 WHERE id = ? AND session_epoch = ? \
                 AND (holder_epoch IS NULL OR holder_epoch = ? OR ?)",
                (epoch, node, &id.as_bytes()[..], epoch, epoch, force),
            )
            .await?;
            let acquired = conn.affected_rows() == 1;
            let row: Option<(u64, u64, Option<String>)> = conn
                .exec_first(
                    "SELECT session_epoch, delivered_seq, holder_node FROM clients WHERE id = ?",
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

    /// Records that every message up to `seq` is done (written, or acknowledged in acknowledged
    /// mode). `false` when session `epoch` no longer holds the delivery right (nothing is recorded).
    pub async fn mark_delivered(
        &self,
        id: ClientId,
        epoch: u64,
        seq: u64,
    ) -> Result<bool, StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                "UPDATE clients SET delivered_seq = GREATEST(delivered_seq, ?), last_seen_at = NOW(6) \
                 WHERE id = ? AND holder_epoch = ?",
                (seq, &id.as_bytes()[..], epoch),
            )
            .await?;
            Ok(conn.affected_rows() == 1)
        })
        .await
    }

    /// Ends session `epoch`'s delivery right, recording its final cursor, so that the next session
    /// starts right after it. A no-op for a session that does not hold the right.
    pub async fn release_client(
        &self,
        id: ClientId,
        epoch: u64,
        delivered_seq: u64,
    ) -> Result<(), StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                "UPDATE clients SET delivered_seq = GREATEST(delivered_seq, ?), holder_epoch = NULL, \
                 holder_node = NULL, last_seen_at = NOW(6) WHERE id = ? AND holder_epoch = ?",
                (delivered_seq, &id.as_bytes()[..], epoch),
            )
            .await
        })
        .await
    }

    /// Current epoch and pending flag of each given client (unknown ids are left out).
    pub async fn sweep(&self, ids: &[ClientId]) -> Result<Vec<SweepRow>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(SWEEP_CHUNK) {
            // Hex literals of our own typed ids: no injection, and no prepared statement per arity.
            let list = chunk
                .iter()
                .map(|id| format!("X'{}'", hex(id.as_bytes())))
                .collect::<Vec<_>>()
                .join(",");
            let sql = format!(
                "SELECT id, session_epoch, last_seq > delivered_seq FROM clients WHERE id IN ({list})"
            );
            let rows: Vec<(Vec<u8>, u64, bool)> = self
                .timed(async {
                    let mut conn = self.pool.get_conn().await?;
                    conn.query(sql).await
                })
                .await?;
            out.extend(rows.into_iter().filter_map(|(id, epoch, has_pending)| {
                Some(SweepRow {
                    client_id: ClientId::from_slice(&id)?,
                    epoch,
                    has_pending,
                })
            }));
        }
        Ok(out)
    }

    /// Appends `body` to the client's queue in one transaction. `None` when the client does not exist.
    pub async fn enqueue(&self, id: ClientId, body: &[u8]) -> Result<Option<Stored>, StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            let mut tx = conn.start_transaction(TxOpts::default()).await?;
            // Takes the client row lock: concurrent enqueues for one client get seqs in commit order.
            tx.exec_drop(
                "UPDATE clients SET last_seq = LAST_INSERT_ID(last_seq + 1) WHERE id = ?",
                (&id.as_bytes()[..],),
            )
            .await?;
            if tx.affected_rows() == 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            let seq = tx.last_insert_id().unwrap_or_default();
            tx.exec_drop(
                "INSERT INTO messages (client_id, seq, body) VALUES (?, ?, ?)",
                (&id.as_bytes()[..], seq, body),
            )
            .await?;
            let message_id = tx.last_insert_id().unwrap_or_default();
            tx.commit().await?;
            Ok(Some(Stored {
                id: message_id,
                seq,
            }))
        })
        .await
    }

    /// Closes every pooled connection.
    pub async fn close(self) {
        let _ = with_timeout(Duration::from_secs(5), self.pool.disconnect()).await;
    }

    async fn timed<T>(
        &self,
        fut: impl Future<Output = Result<T, mysql_async::Error>>,
    ) -> Result<T, StoreError> {
        with_timeout(QUERY_TIMEOUT, fut)
            .await?
            .map_err(StoreError::classify)
    }
}

async fn apply_migrations(conn: &mut mysql_async::Conn) -> Result<Vec<&'static str>, StoreError> {
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
         version INT UNSIGNED NOT NULL PRIMARY KEY, \
         name VARCHAR(255) NOT NULL, \
         applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE = InnoDB",
    )
    .await?;
    let done: Vec<u32> = conn.query("SELECT version FROM schema_migrations").await?;
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        if done.contains(&version) {
            continue;
        }
        for statement in statements(sql) {
            conn.query_drop(statement).await?;
        }
        conn.exec_drop(
            "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
            (version, name),
        )
        .await?;
        applied.push(name);
    }
    Ok(applied)
}

/// Splits a migration file into statements: `--` comment lines dropped, `;` at a line's end ends one.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("--") {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            out.push(current.trim().trim_end_matches(';').to_string());
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn with_timeout<T>(limit: Duration, fut: impl Future<Output = T>) -> Result<T, StoreError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| StoreError::Timeout(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_files_split_into_statements() {
        let sql = "-- comment\nCREATE TABLE a (\n  x INT\n);\n\nCREATE TABLE b (y INT);\n";
        assert_eq!(
            statements(sql),
            vec!["CREATE TABLE a (\n  x INT\n)", "CREATE TABLE b (y INT)"]
        );
        assert_eq!(statements(MIGRATIONS[0].2).len(), 2);
        assert_eq!(statements(MIGRATIONS[1].2).len(), 1);
    }

    #[test]
    fn ids_render_as_hex() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
