//! A session's deliveries: take the delivery right, run a round (its own queue, its rooms), record the cursors, take in acknowledgements.

use tokio::time::Instant;
use tracing::{debug, warn};

use super::rooms::ROOM_RECORD_DELAY;
use super::round::{self, Stale};
use super::{End, Session, LAST_ACKS};
use crate::delivery::{Cursor, Written, ACK_RECORD_DELAY};
use crate::protocol::{self, Command, Reply, SessionError};
use crate::registry::{Registration, Woken};
use crate::stats;
use crate::store::{Acquire, RoomCursor, StoreError};

/// Plain mode: the own queue's cursor is recorded at most this long after a delivery (one write
/// for all of that time and for the sessions of the node that deliver meanwhile; a crash may
/// deliver that much again), and at once when a page (`--page-size`) waits to be recorded.
pub const OWN_RECORD_DELAY: std::time::Duration = std::time::Duration::from_millis(250);

/// When the own queue's cursor should be recorded: within [`OWN_RECORD_DELAY`], or now once a
/// whole page is unrecorded (what a crash can deliver again stays about one page).
fn own_record_delay(cursor: &Cursor, page: usize) -> std::time::Duration {
    if cursor.own.unrecorded_count() >= page as u64 {
        std::time::Duration::ZERO
    } else {
        OWN_RECORD_DELAY
    }
}

/// What a background write of a session's cursors did: the own queue's (seq and result, if it
/// had moved) and the rooms'.
pub(super) struct Recorded {
    own: Option<(u64, Result<bool, StoreError>)>,
    rooms: Vec<RoomCursor>,
    rooms_result: Result<bool, StoreError>,
}

impl<S: super::Stream> Session<S> {
    /// One delivery round for what the session was woken for: takes the delivery right if
    /// needed, loads the rooms if they changed, reads the next page of the own queue (MySQL) and
    /// of each woken room (the hub's memory, else MySQL), writes them in one go, then records
    /// the own cursor (plain mode) and schedules the rooms'. A MySQL failure schedules a retry;
    /// it never ends the session.
    pub(super) async fn deliver(
        &mut self,
        reg: &Registration,
        cursor: &mut Cursor,
        mut woken: Woken,
    ) -> Result<(), End> {
        self.rooms_wanted |= woken.reload;
        if !cursor.holding && !self.take_over(reg, cursor).await? {
            return Ok(());
        }
        if std::mem::take(&mut self.rooms_wanted) {
            let window = cursor
                .acknowledged()
                .then_some(self.node.config.max_inflight);
            if let Err(e) = self.load_rooms(reg, window).await {
                warn!(client_id = %reg.client_id, error = %e, "could not load the client's rooms; will retry");
                self.rooms_wanted = true;
                cursor.failed();
            }
        }
        let node = self.node.clone();
        let mut own = None;
        if woken.own || !woken.carried.is_empty() {
            let carried = std::mem::take(&mut woken.carried);
            let round =
                match round::take(&node, reg, cursor, &mut self.out, carried, woken.own).await {
                    Ok(round) => round,
                    Err(Stale) => return Err(End::TakenOver),
                };
            if round.failed {
                cursor.failed();
            }
            own = Some(round);
        }
        self.room_round(reg, cursor, &woken).await?;
        self.flush().await?;
        if self
            .streams
            .as_ref()
            .is_some_and(|s| !s.unrecorded().is_empty())
        {
            cursor.record_within(ROOM_RECORD_DELAY);
        }
        let Some(round) = own.filter(|r| !r.taken.is_empty()) else {
            return Ok(());
        };
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
        if cursor.own.written(round.taken.iter().map(Written::from)) {
            cursor.record_within(ACK_RECORD_DELAY);
        }
        if cursor.own.unrecorded().is_some() {
            cursor.record_within(own_record_delay(cursor, self.node.config.page_size));
        }
        debug!(count = round.taken.len(), seq = cursor.own.sent, "written");
        if round.more && !round.failed {
            // More may wait: come back after giving commands and shutdown a turn.
            reg.signals.wake_own();
        }
        Ok(())
    }

    /// Records the rooms' read cursors that wait (the client posted), now: `ROOMS` and `READ`
    /// then count from them.
    pub(super) async fn record_reads(
        &mut self,
        reg: &Registration,
        cursor: &Cursor,
    ) -> Result<(), End> {
        let Some(streams) = self
            .streams
            .as_ref()
            .filter(|s| s.reads_pending() && cursor.holding)
        else {
            return Ok(());
        };
        let rooms = streams.unrecorded();
        match self
            .node
            .room_cursors
            .call((reg.client_id, reg.epoch, rooms.clone()))
            .await
        {
            Ok(true) => {
                if let Some(streams) = self.streams.as_mut() {
                    streams.recorded(&rooms);
                }
                Ok(())
            }
            Ok(false) => Err(End::TakenOver),
            // The command answers from what MySQL has; the record is retried on the next tick.
            Err(e) => {
                warn!(client_id = %reg.client_id, error = %e, "could not record read cursors");
                Ok(())
            }
        }
    }

    /// `ACK <id>`: a message of the own queue or of a room.
    pub(super) fn ack(
        &mut self,
        reg: &Registration,
        cursor: &mut Cursor,
        id: u64,
    ) -> Result<(), SessionError> {
        let room = match self.streams.as_ref() {
            Some(streams) if !cursor.own.awaits(id) => streams.awaiting(id),
            _ => None,
        };
        let progress = match room.and_then(|r| self.streams.as_mut()?.progress(r)) {
            Some(progress) => progress,
            None => &mut cursor.own,
        };
        let acked = progress.ack(id)?;
        stats::acknowledged();
        if acked.record {
            // Acknowledgements of room posts are recorded on the rooms' tick, with everything
            // else of the rooms (at most a second of them comes again after a crash).
            cursor.record_within(if room.is_some() {
                ROOM_RECORD_DELAY
            } else {
                ACK_RECORD_DELAY
            });
        }
        if acked.advanced {
            match room {
                Some(room) => reg.signals.wake_room(room),
                None => reg.signals.wake_own(),
            }
        }
        Ok(())
    }

    /// Takes the delivery right from the previous session of this client. `Ok(false)`: not yet
    /// (the previous holder lives and is still finishing); a retry is scheduled. A holder whose
    /// node is dead (its node lock in MySQL is free) is taken over at once, in the same statement.
    async fn take_over(&mut self, reg: &Registration, cursor: &mut Cursor) -> Result<bool, End> {
        let node = &self.node;
        let force = Instant::now() >= cursor.handoff_deadline();
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
                        .handoff_deadline()
                        .saturating_duration_since(Instant::now());
                    let holder = holder_node.unwrap_or_default();
                    self.out_reply(Reply::Waiting(&holder, wait.as_secs().max(1)));
                    self.flush().await?;
                }
                Ok(false)
            }
            Err(e) => {
                warn!(client_id = %reg.client_id, error = %e, "could not take the delivery right; will retry");
                cursor.failed();
                Ok(false)
            }
        }
    }

    /// Writes the cursors to MySQL if they moved: the own queue's and the rooms', in the
    /// background (delivery goes on meanwhile), each a group commit with other sessions (all the
    /// sessions of a group record on the same tick, so one statement carries many).
    pub(super) async fn record(
        &mut self,
        reg: &Registration,
        cursor: &mut Cursor,
    ) -> Result<(), End> {
        cursor.record_at = None;
        // Acknowledged too late: expired, marked so before the cursor passes them; in time but
        // ahead of the cursor: their deadline taken off.
        if let Err(e) = self.mark_acks(reg, cursor).await {
            warn!(client_id = %reg.client_id, error = %e, "could not record acknowledgements against deadlines; will retry");
            cursor.record_failed();
            return Ok(());
        }
        // Only the holder of the delivery right writes (a session still waiting for the handoff
        // keeps what it has to write until it holds the right); one write at a time.
        if self.recording.is_some() || !cursor.holding {
            return Ok(());
        }
        let own = cursor.own.unrecorded();
        let rooms = self
            .streams
            .as_ref()
            .map(|s| s.unrecorded())
            .unwrap_or_default();
        if own.is_none() && rooms.is_empty() {
            return Ok(());
        }
        let node = self.node.clone();
        let (client, epoch, acked) = (reg.client_id, reg.epoch, cursor.acknowledged());
        self.recording = Some(tokio::spawn(async move {
            let own = match own {
                Some(done) => Some((done, node.cursors.call((client, epoch, done, acked)).await)),
                None => None,
            };
            let rooms_result = if rooms.is_empty() {
                Ok(true)
            } else {
                node.room_cursors.call((client, epoch, rooms.clone())).await
            };
            Box::new(Recorded {
                own,
                rooms,
                rooms_result,
            })
        }));
        Ok(())
    }

    /// The background write of the cursors finished.
    pub(super) fn recorded(&mut self, cursor: &mut Cursor, done: Recorded) -> Result<(), End> {
        self.recording = None;
        let mut failed = false;
        if let Some((seq, result)) = done.own {
            match result {
                Ok(true) => cursor.own.recorded(seq),
                Ok(false) => return Err(End::TakenOver),
                Err(e) => {
                    warn!(error = %e, "could not record delivery; will retry");
                    failed = true;
                }
            }
        }
        match done.rooms_result {
            Ok(true) => {
                if let Some(streams) = self.streams.as_mut() {
                    streams.recorded(&done.rooms);
                }
            }
            Ok(false) => return Err(End::TakenOver),
            Err(e) => {
                warn!(error = %e, "could not record room deliveries; will retry");
                failed = true;
            }
        }
        if failed {
            cursor.record_failed();
            return Ok(());
        }
        cursor.succeeded();
        // Delivered meanwhile: the next tick writes that too.
        if cursor.own.unrecorded().is_some() {
            cursor.record_within(own_record_delay(cursor, self.node.config.page_size));
        }
        if self
            .streams
            .as_ref()
            .is_some_and(|s| !s.unrecorded().is_empty())
        {
            cursor.record_within(ROOM_RECORD_DELAY);
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
        store.mark_expired(reg.client_id, cursor.own.late()).await?;
        store
            .clear_deadlines(reg.client_id, cursor.own.kept())
            .await?;
        cursor.own.acks_marked();
        Ok(())
    }

    /// Before a session the node ends, takes in the acknowledgements the client already sent, so
    /// they are recorded instead of lost (and the messages not delivered again).
    pub(super) async fn read_last_acks(&mut self, reg: &Registration, cursor: &mut Cursor) {
        let deadline = Instant::now() + LAST_ACKS;
        while let Ok(Some(Ok(line))) =
            tokio::time::timeout_at(deadline, self.conn.next_line()).await
        {
            if let Ok(Command::Ack(id)) = protocol::parse_command(&line) {
                let _ = self.ack(reg, cursor, id);
            }
        }
    }
}
