//! MySQL, the source of truth: every SQL statement of the product and the migrations runner.

use std::future::Future;
use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};

use crate::hex::{hex, push_hex};
use crate::ClientId;

mod accounts;
mod admin;
mod heads;
mod history;
mod liveness;
mod migrate;
mod one_trip;
mod people;
mod posts;
mod queue;
mod retention;
mod rooms;
mod sessions;
mod status;

pub use status::{MessageState, MessageStatus};

pub use accounts::{Person, Registered};
pub use admin::{Backlog, BanRow, ClientInfo, MAX_BANS};
pub use history::{ChatListRow, ReadState};
pub use liveness::{Kept, NodeLock};
pub use people::Listed;
pub use posts::{NewPost, PostRefused, PostedRow, RoomCursor, RoomFetch, RoomMessage};
pub use retention::Purge;
pub use rooms::{Created, Joined, Membership, Opened, RoomInfo, RoomKind};

/// Bound on one statement's round trip, so a hung server cannot hang a session forever.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the rollback (or close) of a connection whose script failed.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on a row-lock wait inside MySQL (below `QUERY_TIMEOUT`).
const LOCK_WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long retention keeps a dedupe key at least, whatever `--retention` says: the longest
/// dedupe window a producer may ask for.
pub const DEDUPE_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// How many ids one sweep query should check (callers of `sweep` chunk by it).
pub const SWEEP_CHUNK: usize = 500;

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
    #[error("the database server is not MariaDB 10.3 or later with its SEQUENCE engine ({0}); chat needs both")]
    Unsupported(String),
    #[error(transparent)]
    Mysql(#[from] mysql_async::Error),
    /// A failure of a statement shared by several callers (group commit), as text.
    #[error("{0}")]
    Shared(String),
    #[error("the batching task has stopped")]
    BatcherGone,
    #[error("node id {0:?} is in use: another node with this --node-id is running (it holds the node lock in MySQL)")]
    NodeIdInUse(String),
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
    /// The client's rooms version: 0 when it never was in a room (nothing to load).
    pub rooms_version: u64,
}

/// One pending message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub seq: u64,
    /// Global message id.
    pub id: u64,
    /// Empty for a dropped message.
    pub body: Vec<u8>,
    /// Expired or replaced: never delivered; the client is told how many it missed.
    pub dropped: bool,
    /// Microseconds left before the message expires, as MySQL saw it when reading (`None`: no TTL).
    pub expires_in_us: Option<i64>,
    /// When it was enqueued (committed), in microseconds since the Unix epoch (MySQL's clock).
    pub enqueued_at_us: u64,
    /// The session's own deadline for it (from `expires_in_us`), set when it is taken.
    pub deadline: Option<tokio::time::Instant>,
}

impl Pending {
    /// A message as its notification carried it (plain: no deadline, not dropped).
    pub fn carried(seq: u64, id: u64, body: Vec<u8>, enqueued_at_us: u64) -> Pending {
        Pending {
            seq,
            id,
            body,
            dropped: false,
            expires_in_us: None,
            enqueued_at_us,
            deadline: None,
        }
    }
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
    /// A dedupe hit: nothing new was stored; `id` and `seq` are the first message's.
    pub duplicate: bool,
    /// How many pending messages with the same collapse key this one replaced.
    pub replaced: u64,
}

/// What a producer may ask of one message besides its body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageOptions {
    /// Not delivered after this long: it expires (and is reported expired) instead.
    pub ttl: Option<Duration>,
    /// A retry with the same key for the same client, within the dedupe window, stores nothing.
    pub dedupe_key: Option<String>,
    /// Replaces the client's still-pending messages with the same key.
    pub collapse_key: Option<String>,
}

impl MessageOptions {
    /// Whether nothing beyond a plain append is asked.
    pub fn is_plain(&self) -> bool {
        *self == MessageOptions::default()
    }
}

/// One message to append.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    pub client: ClientId,
    pub body: &'a [u8],
    pub options: &'a MessageOptions,
}

/// One client's line in a sweep: its current session epoch and whether anything is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepRow {
    pub client_id: ClientId,
    pub epoch: u64,
    pub has_pending: bool,
    /// How many messages are pending.
    pub pending: u64,
    /// The client's rooms version (its session loads its rooms again when this is newer).
    pub rooms_version: u64,
}

/// The MySQL connection pool and the queries on it.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// Queue heads this process committed last (see `heads`).
    heads: heads::Heads,
}

impl Store {
    /// A pool of at most `max_connections` to `url`, kept open while in use (opened lazily).
    pub fn new(url: &str, max_connections: usize) -> Result<Store, StoreError> {
        let opts = Opts::from_url(url).map_err(|e| StoreError::Url(e.to_string()))?;
        let max = max_connections.max(1);
        let constraints = PoolConstraints::new(max.min(2), max)
            .ok_or_else(|| StoreError::Url("invalid pool size".into()))?;
        let opts = OptsBuilder::from_opts(opts)
            // Affected rows = matched rows, so a fenced no-op update still proves ownership.
            .client_found_rows(true)
            // A statement that waits for a row lock gives up before our own query timeout, so
            // MySQL does not keep running (and locking) what we have stopped waiting for. A setup
            // command, not an init one: it runs again after a reset (see `script`).
            .setup(vec![format!(
                "SET SESSION innodb_lock_wait_timeout = {}",
                LOCK_WAIT_TIMEOUT.as_secs()
            )])
            // No COM_RESET_CONNECTION on every return to the pool: it costs round trips and drops
            // the prepared statements; no query here leaves session state behind.
            .pool_opts(
                PoolOpts::default()
                    .with_constraints(constraints)
                    .with_reset_connection(false)
                    // Idle connections above the minimum live this long; without a TTL the pool
                    // closes every connection above the minimum as soon as it is returned.
                    .with_inactive_connection_ttl(Duration::from_secs(60)),
            );
        Ok(Store {
            pool: Pool::new(opts),
            heads: heads::Heads::default(),
        })
    }

    /// This store remembers the queue heads it commits, to move them next time without a read
    /// (a producer's store: `heads`).
    pub fn remembering_heads(mut self) -> Store {
        self.heads = heads::Heads::enabled();
        self
    }

    /// Checks that the server answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            conn.ping().await
        })
        .await
    }

    /// Creates the database if needed, then applies pending migrations (see [`migrate`]).
    pub async fn migrate(url: &str) -> Result<Vec<&'static str>, StoreError> {
        migrate::run(url).await
    }

    /// Closes every pooled connection.
    pub async fn close(self) {
        let _ = with_timeout(Duration::from_secs(5), self.pool.disconnect()).await;
    }

    /// Runs a whole transaction written as one multi-statement query (`START TRANSACTION; ...;
    /// COMMIT`): one round trip. Returns the rows of every statement that has some, as `T`.
    ///
    /// A statement that fails stops the script but not its transaction, and the pool does not
    /// know of a transaction begun by hand: it is rolled back here (or the connection closed,
    /// which rolls it back in the server) before the connection can serve anyone else. A script
    /// that runs out of time is closed the same way, never left half done in the pool.
    async fn script<T>(&self, sql: String) -> Result<Vec<T>, StoreError>
    where
        T: FromRow + Send + 'static,
    {
        let result = self.script_unrecorded(sql).await;
        crate::stats::mysql(&result);
        result
    }

    /// [`Store::script`] without counting its outcome in the MySQL metrics: for a caller that
    /// tells an answer it asked for (a `SIGNAL` of its own) from a failure.
    async fn script_unrecorded<T>(&self, sql: String) -> Result<Vec<T>, StoreError>
    where
        T: FromRow + Send + 'static,
    {
        let deadline = tokio::time::Instant::now() + QUERY_TIMEOUT;
        let result = async {
            let mut conn = match tokio::time::timeout_at(deadline, self.pool.get_conn()).await {
                Ok(conn) => conn.map_err(StoreError::classify)?,
                Err(_) => return Err(StoreError::Timeout(QUERY_TIMEOUT)),
            };
            // Should this future be dropped half way, the pool reads the rest of the script's
            // answers (the server runs it to its end: its COMMIT, or up to a failed statement)
            // and then resets the connection, which rolls back a transaction left open, before
            // anyone else gets it.
            conn.reset_connection(true);
            let run = all_rows::<T>(&mut conn, sql);
            match tokio::time::timeout_at(deadline, run).await {
                Ok(Ok(rows)) => {
                    conn.reset_connection(false);
                    Ok(rows)
                }
                Ok(Err(e)) => {
                    let undone = with_timeout(CLEANUP_TIMEOUT, conn.query_drop("ROLLBACK")).await;
                    if matches!(undone, Ok(Ok(()))) {
                        conn.reset_connection(false);
                    } else {
                        let _ = with_timeout(CLEANUP_TIMEOUT, conn.disconnect()).await;
                    }
                    Err(StoreError::classify(e))
                }
                Err(_) => {
                    let _ = with_timeout(CLEANUP_TIMEOUT, conn.disconnect()).await;
                    Err(StoreError::Timeout(QUERY_TIMEOUT))
                }
            }
        }
        .await;
        result
    }

    async fn timed<T>(
        &self,
        fut: impl Future<Output = Result<T, mysql_async::Error>>,
    ) -> Result<T, StoreError> {
        let result = with_timeout(QUERY_TIMEOUT, fut)
            .await
            .and_then(|r| r.map_err(StoreError::classify));
        crate::stats::mysql(&result);
        result
    }
}

/// SQL: how the client in the `clients` row `alias` is shown to others: its name, or its public
/// id `~<16 hex>` (never its client id, which is its credential); `*` when there is no row (a
/// producer's post).
pub(crate) fn shown_sql(alias: &str) -> String {
    format!("COALESCE({alias}.name, CONCAT('~', LOWER(HEX({alias}.public_id))), '*')")
}

/// `X'..',X'..'` for an `IN (...)` list: hex literals of our own typed ids, so no injection is
/// possible and no prepared statement is made per list length.
fn hex_list(ids: &[ClientId]) -> String {
    let mut out = String::with_capacity(ids.len() * 36);
    for (i, id) in ids.iter().enumerate() {
        out.push_str(if i == 0 { "X'" } else { ",X'" });
        push_hex(&mut out, id.as_bytes());
        out.push('\'');
    }
    out
}

/// A derived table `v` of literal rows (hex literals and numbers only, like `hex_list`), named
/// `columns`, to join on by primary key. It replaces `CASE` arms and `OR` lists, which MariaDB
/// evaluates for every row against every arm: a batch of N clients then costs N x N.
fn values_table(columns: &str, rows: impl IntoIterator<Item = String>) -> String {
    let rows = rows.into_iter().collect::<Vec<_>>().join(", ");
    format!("(WITH v({columns}) AS (VALUES {rows}) SELECT * FROM v) v")
}

/// Every row of a multi-statement query, as `T` (statements without rows add none).
///
/// A statement that fails after the first one is kept by the driver as the next result, which
/// `is_empty` does not show: taken here, it is this call's error (left alone, the pool would drop
/// it unseen).
async fn all_rows<T: FromRow + Send + 'static>(
    conn: &mut impl Queryable,
    sql: String,
) -> Result<Vec<T>, mysql_async::Error> {
    let mut result = conn.query_iter(sql).await?;
    let mut rows = Vec::new();
    while !result.is_empty() {
        rows.extend(result.collect::<T>().await?);
    }
    result.drop_result().await?;
    Ok(rows)
}

/// A string as a SQL literal that no text can break out of: its bytes in hex, read as utf8mb4.
fn text_literal(text: &str) -> String {
    format!("CONVERT(X'{}' USING utf8mb4)", hex(text.as_bytes()))
}

pub(crate) async fn with_timeout<T>(
    limit: Duration,
    fut: impl Future<Output = T>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| StoreError::Timeout(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_render_as_hex() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
