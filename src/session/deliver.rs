//! A session's deliveries: take the delivery right, run a round, record the cursor, take in acknowledgements.

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::round::{self, Stale};
use super::{End, Session, LAST_ACKS};
use crate::delivery::Cursor;
use crate::protocol::{self, Command, Reply};
use crate::registry::Registration;
use crate::stats;
use crate::store::Acquire;

impl<S: AsyncRead + AsyncWrite> Session<S> {
    /// One delivery round: takes the delivery right if needed, reads the next page of pending
    /// messages from MySQL, writes them, then records the cursor (plain mode). A MySQL failure
    /// schedules a retry; it never ends the session.
    pub(super) async fn deliver(
        &mut self,
        reg: &Registration,
        cursor: &mut Cursor,
    ) -> Result<(), End> {
        if !cursor.holding && !self.take_over(reg, cursor).await? {
            return Ok(());
        }
        let node = self.node.clone();
        let round = match round::take(&node, reg, cursor, &mut self.out).await {
            Ok(round) => round,
            Err(Stale) => return Err(End::TakenOver),
        };
        if round.failed {
            cursor.failed();
        }
        if round.taken.is_empty() {
            return Ok(());
        }
        self.flush().await?;
        if !cursor.acknowledged() {
            round::mark_late_writes(&node, reg, &round.taken).await;
        }
        let written = round.taken.iter().filter(|m| !m.dropped);
        let dropped = round.taken.len() - written.clone().count();
        stats::delivered(
            written.map(|m| m.enqueued_at_us),
            dropped as u64,
            cursor.acknowledged(),
        );
        cursor.written(&round.taken);
        debug!(count = round.taken.len(), seq = cursor.sent, "written");
        if round.more && !round.failed {
            // More may wait: come back after giving commands and shutdown a turn.
            reg.wake.notify_one();
        }
        self.record(reg, cursor).await
    }

    /// Takes the delivery right from the previous session of this client. `Ok(false)`: not yet
    /// (the previous holder lives and is still finishing); a retry is scheduled. A holder whose
    /// node is dead (its node lock in MySQL is free) is taken over at once, in the same statement.
    async fn take_over(&mut self, reg: &Registration, cursor: &mut Cursor) -> Result<bool, End> {
        let node = &self.node;
        let force = Instant::now() >= cursor.handoff_deadline;
        match node
            .store
            .acquire(reg.client_id, reg.epoch, &node.config.node_id, force)
            .await
        {
            Ok(Acquire::Acquired { delivered_seq }) => {
                cursor.acquired(delivered_seq);
                Ok(true)
            }
            Ok(Acquire::Stale) => Err(End::TakenOver),
            Ok(Acquire::Busy { holder_node }) => {
                if cursor.wait_for_handoff() {
                    let wait = cursor
                        .handoff_deadline
                        .saturating_duration_since(Instant::now());
                    let holder = holder_node.unwrap_or_default();
                    self.out_reply(Reply::Waiting(&holder, wait.as_secs().max(1)));
                    self.flush().await?;
                }
                Ok(false)
            }
            Err(e) => {
                warn!(error = %e, "could not take the delivery right; will retry");
                cursor.failed();
                Ok(false)
            }
        }
    }

    /// Writes the cursor to MySQL if it moved.
    pub(super) async fn record(
        &mut self,
        reg: &Registration,
        cursor: &mut Cursor,
    ) -> Result<(), End> {
        cursor.record_at = None;
        // Acknowledged too late: expired, marked so before the cursor passes them; in time but
        // ahead of the cursor: their deadline taken off.
        if let Err(e) = self.mark_acks(reg, cursor).await {
            warn!(error = %e, "could not record acknowledgements against deadlines; will retry");
            cursor.record_failed();
            return Ok(());
        }
        let Some(done) = cursor.unrecorded() else {
            return Ok(());
        };
        match self
            .node
            .cursors
            .call((reg.client_id, reg.epoch, done, cursor.acknowledged()))
            .await
        {
            Ok(true) => cursor.recorded(done),
            Ok(false) => return Err(End::TakenOver),
            Err(e) => {
                warn!(error = %e, "could not record delivery; will retry");
                cursor.record_failed();
            }
        }
        Ok(())
    }

    /// Acknowledged mode: marks the messages acknowledged after their deadline expired, and takes
    /// the deadline off those acknowledged in time ahead of the cursor.
    pub(super) async fn mark_acks(
        &self,
        reg: &Registration,
        cursor: &mut Cursor,
    ) -> Result<(), crate::store::StoreError> {
        let store = &self.node.store;
        store.mark_expired(reg.client_id, cursor.late()).await?;
        store.clear_deadlines(reg.client_id, cursor.kept()).await?;
        cursor.acks_marked();
        Ok(())
    }

    /// Before a session the node ends, takes in the acknowledgements the client already sent, so
    /// they are recorded instead of lost (and the messages not delivered again).
    pub(super) async fn read_last_acks(&mut self, cursor: &mut Cursor) {
        let deadline = Instant::now() + LAST_ACKS;
        while let Ok(Some(Ok(line))) = tokio::time::timeout_at(deadline, self.reader.next()).await {
            if let Ok(Command::Ack(id)) = protocol::parse_command(&line) {
                let _ = cursor.ack(id);
            }
        }
    }
}
