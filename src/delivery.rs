//! A session's delivery position: per queue (its own, each room) what was written, acknowledged and recorded; per session the delivery right and its timers.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::protocol::SessionError;
use crate::store::{Claim, Pending};

/// Longest wait before retrying MySQL after a failure.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How often a new session looks whether the previous one has released the client (doubling).
const HANDOFF_POLL: Duration = Duration::from_millis(50);
const MAX_HANDOFF_POLL: Duration = Duration::from_millis(400);
/// A session that has waited this long for the previous one to hand over says so to its client.
const HANDOFF_NOTICE_AFTER: Duration = Duration::from_secs(1);
/// Acknowledgements are recorded in MySQL together, at most this long after the first one.
pub const ACK_RECORD_DELAY: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy)]
struct InFlight {
    seq: u64,
    id: u64,
    acked: bool,
    /// Past this, an acknowledgement comes too late: the message counts as expired.
    deadline: Option<Instant>,
}

/// A message written to the socket (or counted without a line: dropped, or the client's own post).
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub seq: u64,
    pub id: u64,
    /// Needs no acknowledgement: it was not written as a `MESSAGE` line.
    pub no_ack: bool,
    pub deadline: Option<Instant>,
}

impl From<&Pending> for Written {
    fn from(m: &Pending) -> Written {
        Written {
            seq: m.seq,
            id: m.id,
            no_ack: m.dropped,
            deadline: m.deadline,
        }
    }
}

/// What an accepted `ACK` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// The cumulative cursor moved: the window has room again.
    pub advanced: bool,
    /// Something must be written to MySQL (the cursor, or a deadline taken off).
    pub record: bool,
}

/// The delivery position in one queue: the client's own, or one of its rooms. In plain mode a
/// message is done once written; in acknowledged mode once the client acknowledged it and every
/// earlier one (the cursor is cumulative).
#[derive(Debug)]
pub struct Progress {
    /// Last seq written to the socket.
    pub sent: u64,
    /// Last seq recorded in MySQL.
    recorded_seq: u64,
    /// Acknowledged mode's state (boxed: a plain session does not carry it).
    acks: Option<Box<Acks>>,
}

/// The window of an acknowledged mode queue.
#[derive(Debug)]
struct Acks {
    /// Last seq acknowledged with all before it.
    acked: u64,
    /// The bound on unacknowledged messages.
    window: usize,
    inflight: VecDeque<InFlight>,
    /// Seqs acknowledged after their deadline, to be marked expired in MySQL before the cursor
    /// that covers them is recorded.
    late: Vec<u64>,
    /// Seqs with a deadline acknowledged in time but ahead of the cumulative cursor (an earlier
    /// message is still unacknowledged): their deadline is taken off in MySQL, so that they are
    /// never reported expired.
    kept: Vec<u64>,
}

impl Progress {
    /// Starting after `delivered_seq`; `window`: `Some(max in flight)` for acknowledged mode.
    pub fn new(delivered_seq: u64, window: Option<usize>) -> Progress {
        Progress {
            sent: delivered_seq,
            recorded_seq: delivered_seq,
            acks: window.map(|w| {
                Box::new(Acks {
                    acked: delivered_seq,
                    window: w.max(1),
                    inflight: VecDeque::new(),
                    late: Vec::new(),
                    kept: Vec::new(),
                })
            }),
        }
    }

    /// Whether messages need acknowledgements.
    pub fn acknowledged(&self) -> bool {
        self.acks.is_some()
    }

    /// Starts over after `delivered_seq` (the previous holder got that far).
    pub fn restart(&mut self, delivered_seq: u64) {
        self.sent = delivered_seq;
        self.recorded_seq = delivered_seq;
        if let Some(acks) = self.acks.as_mut() {
            acks.acked = delivered_seq;
            acks.inflight.clear();
        }
    }

    /// How many messages the next round may fetch.
    pub fn room(&self, page: usize) -> usize {
        match &self.acks {
            Some(acks) => page.min(acks.window.saturating_sub(acks.inflight.len())),
            None => page,
        }
    }

    /// These messages (in order) were written to the socket, or counted without a line. `true`
    /// when the acknowledged cursor moved (messages that need no acknowledgement at its front).
    pub fn written(&mut self, messages: impl IntoIterator<Item = Written>) -> bool {
        let mut last = None;
        for m in messages {
            last = Some(m.seq);
            if let Some(acks) = self.acks.as_mut() {
                acks.inflight.push_back(InFlight {
                    seq: m.seq,
                    id: m.id,
                    acked: m.no_ack,
                    deadline: m.deadline,
                });
            }
        }
        if let Some(last) = last {
            self.sent = self.sent.max(last);
        }
        self.advance()
    }

    /// Whether message `id` waits for its acknowledgement here.
    pub fn awaits(&self, id: u64) -> bool {
        self.acks
            .as_ref()
            .is_some_and(|a| a.inflight.iter().any(|m| m.id == id && !m.acked))
    }

    /// Acknowledges message `id`.
    pub fn ack(&mut self, id: u64) -> Result<Acked, SessionError> {
        let acks = self.acks.as_mut().ok_or(SessionError::NotAckMode)?;
        let entry = acks
            .inflight
            .iter_mut()
            .find(|m| m.id == id && !m.acked)
            .ok_or(SessionError::NotInFlight(id))?;
        entry.acked = true;
        let (seq, deadline) = (entry.seq, entry.deadline);
        let in_time = match deadline {
            Some(d) if d <= Instant::now() => {
                acks.late.push(seq);
                false
            }
            Some(_) => true,
            None => false,
        };
        let advanced = self.advance();
        let acks = self.acks.as_mut().ok_or(SessionError::NotAckMode)?;
        let kept = in_time && acks.acked < seq;
        if kept {
            acks.kept.push(seq);
        }
        Ok(Acked {
            advanced,
            record: advanced || kept,
        })
    }

    /// Seqs acknowledged too late (after their deadline), not yet marked expired in MySQL.
    pub fn late(&self) -> &[u64] {
        self.acks.as_ref().map_or(&[], |a| &a.late)
    }

    /// Seqs acknowledged in time ahead of the cursor, whose deadline is not yet taken off.
    pub fn kept(&self) -> &[u64] {
        self.acks.as_ref().map_or(&[], |a| &a.kept)
    }

    /// The late and kept acknowledgements are written to MySQL.
    pub fn acks_marked(&mut self) {
        if let Some(acks) = self.acks.as_mut() {
            acks.late.clear();
            acks.kept.clear();
        }
    }

    /// Moves the acknowledged cursor over the acknowledged front of the window; `true` if it moved.
    fn advance(&mut self) -> bool {
        let Some(acks) = self.acks.as_mut() else {
            return false;
        };
        let before = acks.acked;
        while let Some(front) = acks.inflight.front().filter(|m| m.acked) {
            acks.acked = front.seq;
            acks.inflight.pop_front();
        }
        acks.acked > before
    }

    /// Everything up to this seq is done (plain: written; acknowledged: acknowledged).
    pub fn done(&self) -> u64 {
        match &self.acks {
            Some(acks) => acks.acked,
            None => self.sent,
        }
    }

    /// The seq to record, if MySQL is behind.
    pub fn unrecorded(&self) -> Option<u64> {
        (self.done() > self.recorded_seq).then(|| self.done())
    }

    /// How many messages are done and not yet in MySQL.
    pub fn unrecorded_count(&self) -> u64 {
        self.done().saturating_sub(self.recorded_seq)
    }

    /// MySQL now has `seq`.
    pub fn recorded(&mut self, seq: u64) {
        self.recorded_seq = self.recorded_seq.max(seq);
    }

    /// Messages written and not done (acknowledged mode: not acknowledged).
    pub fn outstanding(&self) -> u64 {
        self.sent.saturating_sub(self.done())
    }
}

/// Sessions fall into this many groups by client id; each group records at its own points of
/// the grid, so that the records of a node are spread over the period in batches of a tenth.
pub const RECORD_GROUPS: u64 = 10;

/// The first point after `now` of the grid of `period` that every session of the process in
/// group `group` shares (a group's grid is shifted by `group / RECORD_GROUPS` of the period).
fn on_grid(now: Instant, period: Duration, group: u64) -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| now);
    let step = period.max(Duration::from_millis(1)).as_nanos() as i128;
    let shift = step * i128::from(group % RECORD_GROUPS) / i128::from(RECORD_GROUPS);
    // Signed: `now` may come before the base (tests with their own paused clocks).
    let t = if now >= base {
        (now - base).as_nanos() as i128
    } else {
        -((base - now).as_nanos() as i128)
    };
    let next = (t - shift).div_euclid(step) * step + step + shift;
    let ahead = Duration::from_nanos(u64::try_from(next - t).unwrap_or(u64::MAX));
    now + ahead
}

/// The delivery state of one session: its own queue's progress, and the delivery right with the
/// timers that drive retries and records.
#[derive(Debug)]
pub struct Cursor {
    /// The client's own queue.
    pub own: Progress,
    /// Whether this session holds the delivery right in MySQL.
    pub holding: bool,
    /// Which group of record times the session is in (by client id).
    group: u8,
    /// When to try delivering again after a failure or while waiting for the handoff.
    pub retry_at: Option<Instant>,
    /// When to write the cursors to MySQL.
    pub record_at: Option<Instant>,
    backoff: Duration,
    /// Until the session holds the delivery right: the wait for the previous holder (boxed: a
    /// session that holds it carries none of this).
    handoff: Option<Box<Handoff>>,
}

/// A session's wait for the previous session of its client to hand the delivery right over.
#[derive(Debug)]
struct Handoff {
    /// After this, the right is taken even from a holder that did not release it.
    deadline: Instant,
    poll: Duration,
    /// Since when the session has been waiting, and whether the client was told.
    since: Option<Instant>,
    told: bool,
}

/// A [`Cursor`] with no retry or record time set (a parked session's): 32 bytes less.
#[derive(Debug)]
pub struct ParkedCursor {
    own: Progress,
    holding: bool,
    group: u8,
    backoff: Duration,
    handoff: Option<Box<Handoff>>,
}

impl ParkedCursor {
    /// The cursor again.
    pub fn resume(self) -> Cursor {
        Cursor {
            own: self.own,
            holding: self.holding,
            group: self.group,
            retry_at: None,
            record_at: None,
            backoff: self.backoff,
            handoff: self.handoff,
        }
    }
}

impl Cursor {
    /// The cursor of a session about to park, if nothing is timed on it (`Err`: give it back).
    pub fn park(self) -> Result<ParkedCursor, Cursor> {
        if self.retry_at.is_some() || self.record_at.is_some() {
            return Err(self);
        }
        Ok(ParkedCursor {
            own: self.own,
            holding: self.holding,
            group: self.group,
            backoff: self.backoff,
            handoff: self.handoff,
        })
    }

    /// `window`: `Some(max in flight)` for acknowledged mode, `None` for plain mode.
    pub fn new(claim: &Claim, window: Option<usize>, handoff_deadline: Instant) -> Cursor {
        Cursor {
            own: Progress::new(claim.delivered_seq, window),
            holding: claim.holding,
            group: 0,
            retry_at: None,
            record_at: None,
            backoff: FIRST_BACKOFF,
            handoff: (!claim.holding).then(|| {
                Box::new(Handoff {
                    deadline: handoff_deadline,
                    poll: HANDOFF_POLL,
                    since: None,
                    told: false,
                })
            }),
        }
    }

    /// The session records with group `group` (0..[`RECORD_GROUPS`]).
    pub fn in_group(mut self, group: u64) -> Cursor {
        self.group = (group % RECORD_GROUPS) as u8;
        self
    }

    /// Until when the previous holder may keep the delivery right (now, if there is no wait).
    pub fn handoff_deadline(&self) -> Instant {
        self.handoff
            .as_ref()
            .map_or_else(Instant::now, |h| h.deadline)
    }

    /// Whether messages need acknowledgements.
    pub fn acknowledged(&self) -> bool {
        self.own.acknowledged()
    }

    /// The session now holds the delivery right; the previous holder got as far as `delivered_seq`.
    pub fn acquired(&mut self, delivered_seq: u64) {
        self.holding = true;
        self.handoff = None;
        self.own.restart(delivered_seq);
        self.backoff = FIRST_BACKOFF;
    }

    /// Records are wanted within `delay` (the earliest wish wins), at the next point of a grid of
    /// `delay` shared by the sessions of the process in this session's group: sessions that
    /// deliver in the same period then record at the same moment, so that the group commit writes
    /// them in one statement, and the groups spread those writes over the period.
    pub fn record_within(&mut self, delay: Duration) {
        if delay.is_zero() {
            self.record_at = Some(Instant::now());
            return;
        }
        let at = on_grid(Instant::now(), delay, u64::from(self.group));
        if self.record_at.is_none_or(|t| t > at) {
            self.record_at = Some(at);
        }
    }

    /// A write to MySQL succeeded: the backoff starts over.
    pub fn succeeded(&mut self) {
        self.backoff = FIRST_BACKOFF;
    }

    /// Reading from MySQL failed: retry delivery later, backing off.
    pub fn failed(&mut self) {
        self.retry_at = Some(Instant::now() + self.next_backoff());
    }

    /// Recording failed: retry the write later, backing off.
    pub fn record_failed(&mut self) {
        self.record_at = Some(Instant::now() + self.next_backoff());
    }

    /// The previous session still holds the client: look again shortly. `true` once, when the
    /// wait has gone on long enough that the client should be told why nothing comes.
    pub fn wait_for_handoff(&mut self) -> bool {
        let handoff = self.handoff.get_or_insert_with(|| {
            Box::new(Handoff {
                deadline: Instant::now(),
                poll: HANDOFF_POLL,
                since: None,
                told: false,
            })
        });
        self.retry_at = Some(Instant::now() + handoff.poll);
        handoff.poll = (handoff.poll * 2).min(MAX_HANDOFF_POLL);
        let since = *handoff.since.get_or_insert_with(Instant::now);
        if handoff.told || since.elapsed() < HANDOFF_NOTICE_AFTER {
            return false;
        }
        handoff.told = true;
        true
    }

    fn next_backoff(&mut self) -> Duration {
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(delivered_seq: u64) -> Claim {
        Claim {
            epoch: 1,
            delivered_seq,
            holding: true,
            rooms_version: 0,
        }
    }

    fn msgs(seqs: std::ops::RangeInclusive<u64>) -> Vec<Written> {
        seqs.map(|seq| Written {
            seq,
            id: seq + 1000,
            no_ack: false,
            deadline: None,
        })
        .collect()
    }

    fn acked(advanced: bool, record: bool) -> Result<Acked, SessionError> {
        Ok(Acked { advanced, record })
    }

    #[tokio::test(start_paused = true)]
    async fn an_ack_after_the_deadline_is_late() {
        let mut p = Progress::new(0, Some(10));
        let mut page = msgs(1..=2);
        page[0].deadline = Some(Instant::now() + Duration::from_secs(1));
        page[1].deadline = Some(Instant::now() + Duration::from_secs(5));
        p.written(page);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(p.ack(1001), acked(true, true));
        assert_eq!(p.ack(1002), acked(true, true));
        assert_eq!(p.late(), &[1]);
        assert!(p.kept().is_empty());
        p.acks_marked();
        assert!(p.late().is_empty());
        assert_eq!(p.done(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ack_in_time_ahead_of_the_cursor_is_kept() {
        let mut p = Progress::new(0, Some(10));
        let mut page = msgs(1..=2);
        page[1].deadline = Some(Instant::now() + Duration::from_secs(1));
        p.written(page);
        // 2 acknowledged in time while 1 is still out: its deadline must be taken off.
        assert_eq!(p.ack(1002), acked(false, true));
        assert_eq!(p.kept(), &[2]);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(p.ack(1001), acked(true, true));
        assert!(p.late().is_empty());
        assert_eq!(p.done(), 2);
    }

    #[test]
    fn messages_without_a_line_need_no_acknowledgement() {
        let mut p = Progress::new(0, Some(10));
        let mut page = msgs(1..=4);
        page[0].no_ack = true;
        page[2].no_ack = true;
        assert!(p.written(page));
        // 1 needs none: done at once; 2 waits for its ACK, 3 (none needed) behind it.
        assert_eq!(p.done(), 1);
        assert!(!p.awaits(1003) && p.awaits(1002));
        assert_eq!(p.ack(1003), Err(SessionError::NotInFlight(1003)));
        assert_eq!(p.ack(1002), acked(true, true));
        assert_eq!(p.done(), 3);
        assert_eq!(p.ack(1004), acked(true, true));
        assert_eq!(p.done(), 4);
        assert_eq!(p.room(100), 10);
    }

    #[test]
    fn plain_mode_is_done_once_written() {
        let mut p = Progress::new(3, None);
        assert_eq!(p.room(100), 100);
        p.written(msgs(4..=6));
        assert_eq!(p.unrecorded(), Some(6));
        assert_eq!(p.unrecorded_count(), 3);
        p.recorded(6);
        assert_eq!(p.unrecorded(), None);
        assert_eq!(p.unrecorded_count(), 0);
        assert_eq!(p.ack(1004), Err(SessionError::NotAckMode));
        assert_eq!(p.outstanding(), 0);
    }

    #[test]
    fn acknowledged_mode_advances_on_contiguous_acks_within_the_window() {
        let mut p = Progress::new(0, Some(3));
        assert_eq!(p.room(100), 3);
        p.written(msgs(1..=3));
        assert_eq!(p.room(100), 0);
        assert_eq!(p.done(), 0);
        // Out of order: 2 first does not move the cursor (and nothing to record: no deadline).
        assert_eq!(p.ack(1002), acked(false, false));
        assert_eq!(p.done(), 0);
        assert_eq!(p.ack(1002), Err(SessionError::NotInFlight(1002)));
        assert_eq!(p.ack(1001), acked(true, true));
        assert_eq!(p.done(), 2);
        assert_eq!(p.room(100), 2);
        assert_eq!(p.ack(999), Err(SessionError::NotInFlight(999)));
        assert_eq!(p.unrecorded(), Some(2));
        assert_eq!(p.outstanding(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_wait_for_the_handoff_is_told_once() {
        let mut c = Cursor::new(&claim(0), None, Instant::now());
        assert!(!c.wait_for_handoff());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(!c.wait_for_handoff());
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(c.wait_for_handoff());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!c.wait_for_handoff());
        assert!(c.retry_at.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_earliest_record_wish_wins_on_a_shared_grid() {
        let mut c = Cursor::new(&claim(0), None, Instant::now());
        let now = Instant::now();
        c.record_within(Duration::from_secs(1));
        let second = c.record_at.unwrap();
        assert!(second > now && second <= now + Duration::from_secs(1));
        c.record_within(Duration::from_millis(50));
        let soon = c.record_at.unwrap();
        assert!(soon > now && soon <= now + Duration::from_millis(50));
        c.record_within(Duration::from_secs(2));
        assert_eq!(c.record_at, Some(soon));
        // Another session, a moment later in the same period, lands on the same point.
        tokio::time::advance(Duration::from_millis(1)).await;
        let mut other = Cursor::new(&claim(0), None, Instant::now());
        other.record_within(Duration::from_secs(1));
        assert!(other.record_at == Some(second) || second <= Instant::now());
        // Another group: its own point, half a period away, still within the period.
        let mut half = Cursor::new(&claim(0), None, Instant::now()).in_group(5);
        half.record_within(Duration::from_secs(1));
        let at = half.record_at.unwrap();
        assert!(at > Instant::now() && at <= Instant::now() + Duration::from_secs(1));
        let apart = if at > second {
            at - second
        } else {
            second - at
        };
        assert_eq!(apart, Duration::from_millis(500));
    }

    #[test]
    fn acquiring_adopts_the_previous_holders_cursor() {
        let mut c = Cursor::new(
            &Claim {
                epoch: 2,
                delivered_seq: 5,
                holding: false,
                rooms_version: 0,
            },
            None,
            Instant::now(),
        );
        c.acquired(9);
        assert!(c.holding);
        assert_eq!((c.own.sent, c.own.done(), c.own.unrecorded()), (9, 9, None));
    }
}
