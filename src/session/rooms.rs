//! A session's rooms: each room's delivery progress, loaded from MySQL, fed from the hub's memory (or MySQL when memory does not reach back), recorded together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::{End, Session};
use crate::delivery::{Cursor, Progress, Written};
use crate::protocol::chat_reply::ChatLine;
use crate::protocol::names::{private_label, room_label};
use crate::registry::{Registration, Woken};
use crate::stats;
use crate::store::{RoomCursor, RoomFetch, RoomKind, RoomMessage, StoreError};
use crate::RoomId;

/// Plain mode: room cursors are recorded at most this long after a delivery (one write for all
/// the rooms and messages of that time; a crash may deliver that much again).
pub const ROOM_RECORD_DELAY: Duration = Duration::from_secs(1);
/// How long a session waits for the node to listen to a room's channel before reading the room.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

/// One room of the session.
pub(super) struct Stream {
    group: bool,
    /// How the room is shown: `#general`, `@bob`.
    label: String,
    progress: Progress,
}

/// The session's rooms.
#[derive(Default)]
pub(super) struct Streams {
    rooms: HashMap<RoomId, Stream>,
    /// Read cursors to move, not yet recorded: the client posted up to there (a post reads what
    /// came before it).
    reads: HashMap<RoomId, u64>,
}

impl Streams {
    /// Whether an `ACK` for message `id` belongs to one of the rooms: its room.
    pub(super) fn awaiting(&self, id: u64) -> Option<RoomId> {
        self.rooms
            .iter()
            .find(|(_, s)| s.progress.awaits(id))
            .map(|(room, _)| *room)
    }

    pub(super) fn progress(&mut self, room: RoomId) -> Option<&mut Progress> {
        self.rooms.get_mut(&room).map(|s| &mut s.progress)
    }

    /// The client left `room`: its stream goes (its cursor row went with the membership).
    /// `true` if it was there.
    pub(super) fn remove(&mut self, room: RoomId) -> bool {
        self.reads.remove(&room);
        self.rooms.remove(&room).is_some()
    }

    /// The client posted `seq` in `room`: its read cursor moves there with the next record.
    pub(super) fn posted(&mut self, room: RoomId, seq: u64) {
        let read = self.reads.entry(room).or_default();
        *read = (*read).max(seq);
    }

    /// Whether read cursors wait to be recorded (`ROOMS` and `READ` record them first).
    pub(super) fn reads_pending(&self) -> bool {
        !self.reads.is_empty()
    }

    /// The rooms whose cursors MySQL has not recorded yet, and how far (0: unchanged).
    pub(super) fn unrecorded(&self) -> Vec<RoomCursor> {
        let mut out: Vec<RoomCursor> = self
            .rooms
            .iter()
            .filter_map(|(room, s)| {
                let delivered = s.progress.unrecorded();
                let read = self.reads.get(room).copied();
                (delivered.is_some() || read.is_some()).then(|| RoomCursor {
                    room: *room,
                    delivered: delivered.unwrap_or(0),
                    read: read.unwrap_or(0),
                })
            })
            .collect();
        // Posted to a room not loaded yet (a new private room): its read cursor all the same.
        out.extend(
            self.reads
                .iter()
                .filter(|(room, _)| !self.rooms.contains_key(room))
                .map(|(room, read)| RoomCursor {
                    room: *room,
                    delivered: 0,
                    read: *read,
                }),
        );
        out
    }

    /// MySQL has these cursors.
    pub(super) fn recorded(&mut self, done: &[RoomCursor]) {
        for c in done {
            if let Some(s) = self.rooms.get_mut(&c.room) {
                s.progress.recorded(c.delivered);
            }
            if self.reads.get(&c.room) == Some(&c.read) {
                self.reads.remove(&c.room);
            }
        }
    }

    /// Messages written and not done, in all rooms.
    pub(super) fn outstanding(&self) -> u64 {
        self.rooms.values().map(|s| s.progress.outstanding()).sum()
    }

    pub(super) fn ids(&self) -> Vec<RoomId> {
        self.rooms.keys().copied().collect()
    }
}

impl<S: super::Stream> Session<S> {
    /// Loads the client's rooms (again): new ones join the node's hub (the node listens to their
    /// channels before their heads are read), rooms left are dropped. Progress kept in memory wins
    /// over MySQL's for rooms already loaded.
    pub(super) async fn load_rooms(
        &mut self,
        reg: &Registration,
        window: Option<usize>,
    ) -> Result<(), StoreError> {
        let node = self.node.clone();
        let (version, list) = node.store.memberships(reg.client_id).await?;
        let streams = self.streams.get_or_insert_with(Box::default);
        let mut fresh = Vec::new();
        let mut keep = std::collections::HashSet::new();
        for m in list {
            keep.insert(m.room);
            if streams.rooms.contains_key(&m.room) {
                continue;
            }
            let group = m.kind != RoomKind::Private;
            let label = if group {
                room_label(&m.shown)
            } else {
                private_label(&m.shown)
            };
            node.hub
                .join(m.room, group, reg.signals.clone(), m.last_seq);
            streams.rooms.insert(
                m.room,
                Stream {
                    group,
                    label,
                    progress: Progress::new(m.delivered_seq, window),
                },
            );
            fresh.push((m.room, group));
        }
        let gone: Vec<RoomId> = streams
            .rooms
            .keys()
            .filter(|r| !keep.contains(r))
            .copied()
            .collect();
        for room in gone {
            streams.rooms.remove(&room);
            node.hub.leave(room, &reg.signals);
        }
        // Subscribe, then read: a post committed before the node listened is in the heads read
        // after it.
        for (room, group) in &fresh {
            if *group {
                node.hub.subscribed(*room, SUBSCRIBE_WAIT).await;
            }
        }
        let ids: Vec<RoomId> = fresh.iter().map(|(r, _)| *r).collect();
        for chunk in ids.chunks(500) {
            match node.store.room_heads(chunk).await {
                Ok(heads) => {
                    for (room, head) in heads {
                        node.hub.advance(room, head);
                    }
                }
                Err(e) => {
                    // The next load takes these rooms as new again, heads and all.
                    for room in &ids {
                        streams.rooms.remove(room);
                        node.hub.leave(*room, &reg.signals);
                    }
                    return Err(e);
                }
            }
        }
        reg.signals.loaded(version);
        for room in ids {
            reg.signals.wake_room(room);
        }
        debug!(version, rooms = streams.rooms.len(), "rooms loaded");
        Ok(())
    }

    /// One round over the woken rooms: up to a page each, from the hub's memory or MySQL,
    /// rendered into the output. `Ok(true)` when something was rendered.
    pub(super) async fn room_round(
        &mut self,
        reg: &Registration,
        cursor: &mut Cursor,
        woken: &Woken,
    ) -> Result<bool, End> {
        let Some(streams) = self.streams.as_mut() else {
            return Ok(false);
        };
        let rooms: Vec<RoomId> = if woken.all_rooms {
            streams.ids()
        } else {
            woken.rooms.clone()
        };
        let node = self.node.clone();
        let page = node.config.page_size;
        let ack = cursor.acknowledged();
        let mut rendered = false;
        // One page in all per round, however many rooms woke: the session holds at most a page
        // in memory; the rooms left wait for the next round.
        let mut budget = page;
        for (i, room) in rooms.iter().copied().enumerate() {
            if budget == 0 || reg.kicked().is_some() {
                for left in &rooms[i..] {
                    reg.signals.wake_room(*left);
                }
                break;
            }
            let Some(stream) = streams.rooms.get_mut(&room) else {
                continue;
            };
            let room_for = stream.progress.room(budget);
            let after = stream.progress.sent;
            if room_for == 0 || after >= node.hub.head(room) {
                continue;
            }
            let messages: Vec<Arc<RoomMessage>> = match node.hub.take(room, after, room_for) {
                Some(kept) if !kept.is_empty() => {
                    stats::carried(kept.len());
                    kept
                }
                _ => {
                    let asked = (reg.client_id, reg.epoch, room, after, room_for);
                    match node.room_fetches.call(asked).await {
                        Ok(RoomFetch::Owned(page)) => {
                            stats::fetched(page.len());
                            page.into_iter().map(Arc::new).collect()
                        }
                        Ok(RoomFetch::Stale) => return Err(End::TakenOver),
                        Err(e) => {
                            warn!(client_id = %reg.client_id, error = %e, "could not read a room; will retry");
                            cursor.failed();
                            continue;
                        }
                    }
                }
            };
            let Some(last) = messages.last() else {
                continue;
            };
            budget = budget.saturating_sub(messages.len());
            for m in &messages {
                if m.sender == Some(reg.client_id) {
                    continue;
                }
                ChatLine::Message {
                    ack_id: ack.then_some(m.id),
                    label: &stream.label,
                    sender: &m.shown,
                    body: &m.body,
                }
                .write_to(&mut self.out);
                rendered = true;
            }
            let more = last.seq < node.hub.head(room);
            let mine = |m: &RoomMessage| m.sender == Some(reg.client_id);
            stream.progress.written(messages.iter().map(|m| Written {
                seq: m.seq,
                id: m.id,
                no_ack: mine(m),
                deadline: None,
            }));
            let written = messages.iter().filter(|m| !mine(m));
            stats::delivered(written.map(|m| m.at_us), 0, ack);
            if more {
                // The rest next round, after commands and other rooms had a turn.
                reg.signals.wake_room(room);
            }
            if !stream.group {
                debug!(room = %room, upto = last.seq, "private room delivered");
            }
        }
        Ok(rendered)
    }

    /// The session ends: its rooms leave the node's hub.
    pub(super) fn leave_rooms(&mut self, reg: &Registration) {
        if let Some(streams) = self.streams.as_ref() {
            for room in streams.rooms.keys() {
                self.node.hub.leave(*room, &reg.signals);
            }
        }
    }
}
