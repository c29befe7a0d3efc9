//! Node liveness in MySQL: a named lock each node holds on a connection of its own for as long as it lives.
//!
//! `GET_LOCK('chat-node:<database>:<node>')` is held by one dedicated connection whose
//! `wait_timeout` is the node TTL, pinged every fifth of it. MySQL releases the lock the moment the
//! process dies (the kernel closes its socket), or once the connection has been silent for the TTL
//! (a frozen node, a lost host, a network cut), so that another node can tell a live holder from a
//! dead one with one lookup in the statement that takes the delivery right.

use std::time::Duration;

use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

use super::{with_timeout, Store, StoreError};

/// The SQL expression that names the node lock of the node `node` (an SQL expression: a column or
/// `?`) in the current database.
pub(super) fn node_lock(node: &str) -> String {
    format!("CONCAT('chat-node:', DATABASE(), ':', {node})")
}

/// Bound on one statement of the lock connection.
const LOCK_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection that holds this node's lock.
pub struct NodeLock {
    opts: Opts,
    node: String,
    ttl: Duration,
    conn: Option<Conn>,
}

/// What a look after the lock found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// The connection answered: the lock is still ours.
    Held,
    /// The connection had been lost; a new one took the lock again.
    Retaken,
}

impl NodeLock {
    /// Takes the lock of `node`, waiting up to `ttl` and a second for a previous process of the same
    /// node whose connection MySQL has not closed yet. `Err(NodeIdInUse)` when another live node
    /// holds it.
    pub async fn take(url: &str, node: &str, ttl: Duration) -> Result<NodeLock, StoreError> {
        let opts = Opts::from_url(url).map_err(|e| StoreError::Url(e.to_string()))?;
        let mut lock = NodeLock {
            opts,
            node: node.to_string(),
            ttl,
            conn: None,
        };
        lock.connect(ttl + Duration::from_secs(1)).await?;
        Ok(lock)
    }

    /// Pings the lock's connection; if it was lost, opens a new one and takes the lock again
    /// (waiting up to the TTL for MySQL to drop the old connection).
    pub async fn keep(&mut self) -> Result<Kept, StoreError> {
        if let Some(conn) = self.conn.as_mut() {
            match with_timeout(LOCK_QUERY_TIMEOUT, conn.ping()).await {
                Ok(Ok(())) => return Ok(Kept::Held),
                Ok(Err(_)) | Err(_) => self.conn = None,
            }
        }
        self.connect(self.ttl).await?;
        Ok(Kept::Retaken)
    }

    /// Gives the lock back (at the end of a graceful shutdown).
    pub async fn release(mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = with_timeout(LOCK_QUERY_TIMEOUT, conn.disconnect()).await;
        }
    }

    async fn connect(&mut self, wait: Duration) -> Result<(), StoreError> {
        let idle = self.ttl.as_secs_f64().ceil().max(1.0) as u64;
        let limit = wait + LOCK_QUERY_TIMEOUT;
        let node = self.node.clone();
        let opts = self.opts.clone();
        let conn = with_timeout(limit, async move {
            let mut conn = Conn::new(opts).await?;
            // Silent for longer than the TTL (a frozen process, a lost host): MySQL closes the
            // connection, and with it releases the lock.
            conn.query_drop(format!("SET SESSION wait_timeout = {idle}"))
                .await?;
            let got: Option<Option<i64>> = conn
                .exec_first(
                    format!("SELECT GET_LOCK({}, ?)", node_lock("?")),
                    (&node, wait.as_secs_f64()),
                )
                .await?;
            Ok::<_, mysql_async::Error>((conn, got.flatten() == Some(1)))
        })
        .await?;
        let (conn, got) = conn.map_err(StoreError::from)?;
        if !got {
            let _ = conn.disconnect().await;
            return Err(StoreError::NodeIdInUse(self.node.clone()));
        }
        self.conn = Some(conn);
        Ok(())
    }
}

impl Store {
    /// Gives up the delivery rights that an earlier process of `node` held (it is gone: this
    /// process holds the node's lock), so that their clients' next sessions need not wait for a
    /// handoff. Returns how many were given up.
    pub async fn release_stale_holds(&self, node: &str) -> Result<u64, StoreError> {
        self.timed(async {
            let mut conn = self.pool.get_conn().await?;
            conn.exec_drop(
                "UPDATE cursors SET holder_epoch = NULL, holder_node = NULL WHERE holder_node = ?",
                (node,),
            )
            .await?;
            Ok(conn.affected_rows())
        })
        .await
    }
}
