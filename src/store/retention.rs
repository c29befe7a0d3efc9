//! Retention: deleting delivered messages older than a cutoff, in small batches, one purger at a time.

use std::time::Duration;

use mysql_async::prelude::*;

use super::{hex, with_timeout, Store, StoreError, DEDUPE_KEEP, QUERY_TIMEOUT};

/// Clients whose delivered ranges one `DELETE` covers.
const CLIENTS_PER_PASS: u64 = 200;

/// How a purge went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purge {
    /// Another purger (a node's retention task or `chat-admin purge`) holds the lock.
    Busy,
    /// Delivered rows deleted, and (with `pending`) undelivered rows dropped as purged.
    Done { deleted: u64, dropped: u64 },
}

impl Store {
    /// Deletes delivered messages (`seq <= cursors.delivered_seq`) enqueued more than `older_than`
    /// ago, `batch` rows per autocommitted statement with `pause` between statements, so enqueues
    /// and deliveries never wait long behind it. Undelivered messages are never touched.
    ///
    /// Only one purger runs at a time per database: it holds the MySQL named lock
    /// `chat-retention:<database>` (`GET_LOCK(.., 0)`: a second one gets [`Purge::Busy`] at once;
    /// the lock goes with the connection if the purger dies).
    ///
    /// With `pending`, undelivered messages past the age are not deleted but dropped: marked
    /// `dropped = 3` (purged) with their body emptied, so the client gets `DROPPED <n>` for them
    /// and their producer reads `purged`; once the client's cursor passes them a later purge
    /// deletes them like any delivered row.
    pub async fn purge_delivered(
        &self,
        older_than: Duration,
        batch: u64,
        pause: Duration,
        pending: bool,
    ) -> Result<Purge, StoreError> {
        let batch = batch.max(1);
        // At most a century: keeps `NOW(6) - INTERVAL` in range.
        let age_us = older_than.as_micros().min(100 * 366 * 86_400 * 1_000_000) as u64;
        let mut conn = with_timeout(QUERY_TIMEOUT, self.pool.get_conn())
            .await?
            .map_err(StoreError::classify)?;
        let locked: Option<Option<i64>> = self
            .timed(conn.query_first("SELECT GET_LOCK(CONCAT('chat-retention:', DATABASE()), 0)"))
            .await?;
        if locked.flatten() != Some(1) {
            return Ok(Purge::Busy);
        }
        let result = self
            .purge_locked(&mut conn, age_us, batch, pause, pending)
            .await;
        let released = self
            .timed(conn.query_drop("DO RELEASE_LOCK(CONCAT('chat-retention:', DATABASE()))"))
            .await;
        let (deleted, dropped) = result?;
        released?;
        Ok(Purge::Done { deleted, dropped })
    }

    async fn purge_locked(
        &self,
        conn: &mut mysql_async::Conn,
        age_us: u64,
        batch: u64,
        pause: Duration,
        pending: bool,
    ) -> Result<(u64, u64), StoreError> {
        let (mut deleted, mut dropped) = (0, 0);
        // Clients with nothing delivered have nothing to delete, but may have pending rows.
        let min_delivered = u64::from(!pending);
        // Walks the clients in key order, a page at a time; per page, deletes inside each
        // client's delivered range of the messages primary key.
        let mut after: Vec<u8> = Vec::new();
        loop {
            let page: Vec<(Vec<u8>, u64)> = self
                .timed(conn.exec(
                    "SELECT client_id, delivered_seq FROM cursors \
                     WHERE client_id > ? AND delivered_seq >= ? ORDER BY client_id LIMIT ?",
                    (&after, min_delivered, CLIENTS_PER_PASS),
                ))
                .await?;
            let Some((last, _)) = page.last() else {
                return Ok((deleted, dropped));
            };
            after = last.clone();
            let ranges = seq_ranges(&page, "<=");
            let sql = format!(
                "DELETE FROM messages WHERE ({ranges}) \
                 AND enqueued_at < NOW(6) - INTERVAL ? MICROSECOND LIMIT {batch}"
            );
            deleted += self.in_batches(conn, &sql, age_us, batch, pause).await?;
            // Collapse keys whose newest message is delivered: nothing left for them to replace.
            let sql = format!("DELETE FROM collapse_keys WHERE ({ranges}) LIMIT {batch}");
            self.in_batches(conn, &sql, None, batch, pause).await?;
            if pending {
                let ranges = seq_ranges(&page, ">");
                let sql = format!(
                    "UPDATE messages SET dropped = 3, dropped_at = NOW(6), body = '' \
                     WHERE ({ranges}) AND dropped = 0 \
                     AND enqueued_at < NOW(6) - INTERVAL ? MICROSECOND LIMIT {batch}"
                );
                dropped += self.in_batches(conn, &sql, age_us, batch, pause).await?;
            }
            // The delivery log of these clients past the same age (a log row older than the
            // cutoff covers only messages enqueued before it, deleted above when delivered), and
            // their dedupe keys past the longest dedupe window too.
            let ids = page
                .iter()
                .map(|(id, _)| format!("X'{}'", hex(id)))
                .collect::<Vec<_>>()
                .join(",");
            let dedupe_us = age_us.max(DEDUPE_KEEP.as_micros() as u64);
            for (table, column, age) in [
                ("deliveries", "at", age_us),
                ("dedupe", "created_at", dedupe_us),
            ] {
                let sql = format!(
                    "DELETE FROM {table} WHERE client_id IN ({ids}) \
                     AND {column} < NOW(6) - INTERVAL ? MICROSECOND LIMIT {batch}"
                );
                self.in_batches(conn, &sql, age, batch, pause).await?;
            }
            if (page.len() as u64) < CLIENTS_PER_PASS {
                return Ok((deleted, dropped));
            }
        }
    }

    /// Runs a `DELETE` (or `UPDATE`) `... LIMIT batch` (with `age_us` for its one parameter, if
    /// any) until it changes less than `batch` rows, pausing after each statement that changed
    /// something; returns the rows.
    async fn in_batches(
        &self,
        conn: &mut mysql_async::Conn,
        sql: &str,
        age_us: impl Into<Option<u64>>,
        batch: u64,
        pause: Duration,
    ) -> Result<u64, StoreError> {
        let params = match age_us.into() {
            Some(age) => mysql_async::Params::from((age,)),
            None => mysql_async::Params::Empty,
        };
        let mut deleted = 0;
        loop {
            let n = self
                .timed(async {
                    conn.exec_drop(sql, params.clone()).await?;
                    Ok(conn.affected_rows())
                })
                .await?;
            deleted += n;
            if n > 0 {
                tokio::time::sleep(pause).await;
            }
            if n < batch {
                return Ok(deleted);
            }
        }
    }
}

/// `(client_id = X'..' AND seq <op> <delivered_seq>) OR ...` for a page of (client, cursor):
/// `<=` is each client's delivered range, `>` its pending one.
fn seq_ranges(page: &[(Vec<u8>, u64)], op: &str) -> String {
    page.iter()
        .map(|(id, seq)| format!("(client_id = X'{}' AND seq {op} {seq})", hex(id)))
        .collect::<Vec<_>>()
        .join(" OR ")
}
