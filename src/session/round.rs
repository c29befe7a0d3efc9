//! One delivery round of a session: reads the next pages of its queue, drops what expired or was replaced, renders the lines.

use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;
use tracing::warn;

use crate::delivery::Cursor;
use crate::node::Node;
use crate::protocol::Reply;
use crate::registry::Registration;
use crate::stats;
use crate::store::{Fetch, Pending};

/// At most this many pages are read in one round to reach the end of a run of dropped messages,
/// so that the run is counted in one `DROPPED` line (up to this many pages long).
const MAX_DROPPED_PAGES: usize = 100;

/// What a round took from the queue.
pub struct Round {
    /// Every message read, in order: written (rendered into the output) or dropped (counted in
    /// a `DROPPED` line). The cursor may move over all of them once the output is written.
    pub taken: Vec<Pending>,
    /// The last page was full: more may be pending.
    pub more: bool,
    /// Reading MySQL failed: retry later (what was read before the failure is still taken).
    pub failed: bool,
}

/// The session no longer owns its client.
pub struct Stale;

/// Takes pages after the cursor and renders them into `out`: the messages their notifications
/// carried while they follow on from the cursor, else (and, with `look`, after them) pages read
/// from MySQL. A message past its deadline is marked expired in MySQL (so its producer reads
/// why) and counted with the replaced and purged ones; a run of dropped messages is one
/// `DROPPED <n>` line where it stands in the queue, read on across pages until a message follows
/// it or the queue ends.
pub async fn take(
    node: &Node,
    reg: &Registration,
    cursor: &Cursor,
    out: &mut BytesMut,
    mut carried: Vec<Pending>,
    look: bool,
) -> Result<Round, Stale> {
    let page = node.config.page_size;
    let mut round = Round {
        taken: Vec::new(),
        more: false,
        failed: false,
    };
    let mut after = cursor.own.sent;
    let mut written = 0;
    let mut run = 0u64;
    carried.sort_by_key(|m| m.seq);
    carried.dedup_by_key(|m| m.seq);
    let mut carried: std::collections::VecDeque<Pending> = carried.into();
    for _ in 0..MAX_DROPPED_PAGES {
        let room = cursor.own.room(page).saturating_sub(written);
        if room == 0 {
            break;
        }
        while carried.front().is_some_and(|m| m.seq <= after) {
            carried.pop_front();
        }
        // Deadlines count from before the read: never later than MySQL's own clock says.
        let started = Instant::now();
        let follows = carried.front().is_some_and(|m| m.seq == after + 1);
        let mut messages = if follows {
            // Carried whole by their notifications, committed, in order: no read.
            let mut next = after + 1;
            let mut page = Vec::new();
            while page.len() < room && carried.front().is_some_and(|m| m.seq == next) {
                page.extend(carried.pop_front());
                next += 1;
            }
            page
        } else if look || !carried.is_empty() {
            // Asked to look, or a gap before what was carried (a message not carried): MySQL.
            match node
                .fetches
                .call((reg.client_id, reg.epoch, after, room))
                .await
            {
                Ok(Fetch::Owned(messages)) => messages,
                Ok(Fetch::Stale) => return Err(Stale),
                Err(e) => {
                    warn!(client_id = %reg.client_id, error = %e, "could not read pending messages; will retry");
                    round.failed = true;
                    break;
                }
            }
        } else {
            break;
        };
        let Some(last) = messages.last() else {
            round.more = false;
            break;
        };
        after = last.seq;
        if follows {
            stats::carried(messages.len());
        } else {
            stats::fetched(messages.len());
        }
        let now = Instant::now();
        let mut expired = Vec::new();
        for m in &mut messages {
            m.deadline = m
                .expires_in_us
                .map(|us| started + Duration::from_micros(us.max(0) as u64));
            if !m.dropped && m.deadline.is_some_and(|d| d <= now) {
                m.dropped = true;
                expired.push(m.seq);
            }
        }
        if let Err(e) = node.store.mark_expired(reg.client_id, &expired).await {
            warn!(client_id = %reg.client_id, error = %e, "could not mark expired messages; will retry");
            round.failed = true;
            break;
        }
        for m in &messages {
            if m.dropped {
                run += 1;
                continue;
            }
            if run > 0 {
                Reply::Dropped(run).write_to(out);
                run = 0;
            }
            written += 1;
            let reply = if cursor.acknowledged() {
                Reply::AckedMessage(m.id, &m.body)
            } else {
                Reply::Message(&m.body)
            };
            reply.write_to(out);
        }
        let full = messages.len() == room;
        round.more = full && (look || !carried.is_empty());
        let run_goes_on = round.more && messages.last().is_some_and(|m| m.dropped);
        round.taken.extend(messages);
        // What was carried and not yet taken, or what is left to look at in MySQL.
        let carried_on = follows && !carried.is_empty();
        let look_on = follows && look;
        if !(run_goes_on || carried_on || look_on) {
            break;
        }
    }
    if run > 0 {
        Reply::Dropped(run).write_to(out);
    }
    Ok(round)
}

/// Plain mode, after the write: a message whose deadline passed while its write was blocked
/// (a slow reader) was not delivered within its time; it is marked expired, as `status` may
/// already have reported it.
pub async fn mark_late_writes(node: &Node, reg: &Registration, taken: &[Pending]) {
    let now = Instant::now();
    let late: Vec<u64> = taken
        .iter()
        .filter(|m| !m.dropped && m.deadline.is_some_and(|d| d <= now))
        .map(|m| m.seq)
        .collect();
    if let Err(e) = node.store.mark_expired(reg.client_id, &late).await {
        warn!(client_id = %reg.client_id, error = %e, count = late.len(), "could not mark late messages expired");
    }
}
