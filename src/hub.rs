//! This node's rooms: which local sessions are in which room, each room's latest messages (so that a live post reaches every local member without a read), and which room channels the node should listen to.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::registry::Signals;
use crate::store::RoomMessage;
use crate::RoomId;

/// Most messages a room keeps in memory for its local members.
const RECENT_MAX: usize = 64;
/// Most bytes of message bodies a room keeps in memory.
const RECENT_BYTES: usize = 32 * 1024;
/// Most bytes of message bodies all rooms of the node keep in memory.
const ALL_RECENT_BYTES: usize = 64 * 1024 * 1024;

struct Room {
    /// A group room (its posts come on its Redis channel); private rooms' posts come addressed to
    /// the client, on the node's channel.
    group: bool,
    /// The local sessions in the room.
    members: Vec<Arc<Signals>>,
    /// The highest seq known to exist.
    head: u64,
    /// The latest messages, contiguous seqs, oldest first.
    recent: VecDeque<Arc<RoomMessage>>,
    recent_bytes: usize,
}

impl Room {
    fn forget_recent(&mut self, total: &mut usize) {
        *total -= self.recent_bytes;
        self.recent.clear();
        self.recent_bytes = 0;
    }
}

#[derive(Default)]
struct State {
    rooms: HashMap<RoomId, Room>,
    /// Rooms whose channel subscription may need to change.
    dirty: HashSet<RoomId>,
    /// Rooms whose channel the node listens to now.
    subscribed: HashSet<RoomId>,
    /// Whether the node's Redis subscription is up (else nobody waits for a room's).
    connected: bool,
    recent_bytes: usize,
}

/// The rooms of this node's sessions. The lock is never held across an await.
pub struct Hub {
    state: Mutex<State>,
    /// Wakes the subscriber when `dirty` gained a room.
    changed: Notify,
    /// Bumped after every pass of the subscriber over `dirty`.
    settled: watch::Sender<u64>,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub {
            state: Mutex::default(),
            changed: Notify::new(),
            settled: watch::Sender::new(0),
        }
    }
}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session with `signals` is in `room`, known to exist up to `head`.
    pub fn join(&self, room: RoomId, group: bool, signals: Arc<Signals>, head: u64) {
        let mut state = self.lock();
        let entry = state.rooms.entry(room).or_insert_with(|| Room {
            group,
            members: Vec::new(),
            head,
            recent: VecDeque::new(),
            recent_bytes: 0,
        });
        entry.head = entry.head.max(head);
        entry.members.retain(|m| !Arc::ptr_eq(m, &signals));
        entry.members.push(signals);
        if group {
            state.dirty.insert(room);
            drop(state);
            self.changed.notify_one();
        }
    }

    /// The session with `signals` is no longer in `room` (it left, or it ended; a newer session
    /// of the same client on this node keeps its own membership).
    pub fn leave(&self, room: RoomId, signals: &Arc<Signals>) {
        let mut state = self.lock();
        let State {
            rooms,
            dirty,
            recent_bytes,
            ..
        } = &mut *state;
        let Some(entry) = rooms.get_mut(&room) else {
            return;
        };
        entry.members.retain(|m| !Arc::ptr_eq(m, signals));
        if entry.members.is_empty() {
            entry.forget_recent(recent_bytes);
            let group = entry.group;
            rooms.remove(&room);
            if group {
                dirty.insert(room);
                drop(state);
                self.changed.notify_one();
            }
        }
    }

    /// Waits (at most `limit`) until the node listens to `room`'s channel, so that a read of the
    /// room made after this sees everything a notification would not bring. Returns at once when
    /// Redis is down (the sweep covers the room then).
    pub async fn subscribed(&self, room: RoomId, limit: Duration) {
        let mut settled = self.settled.subscribe();
        let _ = tokio::time::timeout(limit, async {
            loop {
                {
                    let state = self.lock();
                    if state.subscribed.contains(&room) || !state.connected {
                        return;
                    }
                }
                if settled.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// A message was posted: kept for the local members if it follows what is kept, and the
    /// members woken. `false` when no local session is in the room.
    pub fn posted(&self, message: Arc<RoomMessage>) -> bool {
        let id = message.room;
        let mut state = self.lock();
        let State {
            rooms,
            recent_bytes,
            ..
        } = &mut *state;
        let Some(room) = rooms.get_mut(&id) else {
            return false;
        };
        if message.seq <= room.head {
            // Seen already (the poster's node hears its own post again from Redis).
            return true;
        }
        let follows = match room.recent.back() {
            Some(last) => last.seq + 1 == message.seq,
            None => message.seq == room.head + 1,
        };
        if !follows {
            room.forget_recent(recent_bytes);
        }
        room.head = message.seq;
        let size = message.body.len();
        // After a gap the kept run starts over with this message.
        if *recent_bytes + size <= ALL_RECENT_BYTES && size <= RECENT_BYTES {
            room.recent.push_back(message);
            room.recent_bytes += size;
            *recent_bytes += size;
            while room.recent.len() > RECENT_MAX || room.recent_bytes > RECENT_BYTES {
                if let Some(old) = room.recent.pop_front() {
                    room.recent_bytes -= old.body.len();
                    *recent_bytes -= old.body.len();
                }
            }
        } else {
            room.forget_recent(recent_bytes);
        }
        for m in &room.members {
            m.wake_room(id);
        }
        true
    }

    /// MySQL says `room` has messages up to `head` (a sweep, a reload): members are woken if that
    /// is news.
    pub fn advance(&self, room: RoomId, head: u64) {
        let mut state = self.lock();
        if let Some(entry) = state.rooms.get_mut(&room) {
            if head > entry.head {
                entry.head = head;
                for m in &entry.members {
                    m.wake_room(room);
                }
            }
        }
    }

    /// The highest seq of `room` known here.
    pub fn head(&self, room: RoomId) -> u64 {
        self.lock().rooms.get(&room).map_or(0, |r| r.head)
    }

    /// Up to `max` messages of `room` after `after`, from memory; `None` when memory does not
    /// hold the next one (read MySQL instead). `None` too while the node's Redis subscription is
    /// down: a session taken over meanwhile learns it only from MySQL (a kick cannot come), and
    /// MySQL's read is fenced by the session's epoch.
    pub fn take(&self, room: RoomId, after: u64, max: usize) -> Option<Vec<Arc<RoomMessage>>> {
        let state = self.lock();
        if !state.connected {
            return None;
        }
        let entry = state.rooms.get(&room)?;
        let first = entry.recent.front()?.seq;
        let last = entry.recent.back()?.seq;
        if after + 1 < first || after >= last {
            return None;
        }
        let skip = (after + 1 - first) as usize;
        Some(entry.recent.iter().skip(skip).take(max).cloned().collect())
    }

    /// Every room with a local member, and the head known for it.
    pub fn rooms(&self) -> Vec<(RoomId, u64)> {
        self.lock()
            .rooms
            .iter()
            .map(|(id, r)| (*id, r.head))
            .collect()
    }

    /// The node's Redis subscription is up (`true`, with nothing subscribed yet) or lost.
    pub fn connected(&self, up: bool) {
        let mut state = self.lock();
        state.connected = up;
        state.subscribed.clear();
        let groups: Vec<RoomId> = state
            .rooms
            .iter()
            .filter(|(_, r)| r.group)
            .map(|(id, _)| *id)
            .collect();
        state.dirty.extend(groups);
        drop(state);
        self.settled.send_modify(|g| *g += 1);
        self.changed.notify_one();
        if !up {
            // Posts published meanwhile are lost: every member looks again once woken by the sweep.
            for signals in self.all_members() {
                signals.wake_all_rooms();
            }
        }
    }

    fn all_members(&self) -> Vec<Arc<Signals>> {
        self.lock()
            .rooms
            .values()
            .flat_map(|r| r.members.iter().cloned())
            .collect()
    }

    /// Waits until a room's subscription may need to change.
    pub async fn changes(&self) {
        self.changed.notified().await
    }

    /// The subscription changes to make: (rooms to subscribe, rooms to unsubscribe).
    pub fn pending_changes(&self) -> (Vec<RoomId>, Vec<RoomId>) {
        let mut state = self.lock();
        let dirty: Vec<RoomId> = state.dirty.drain().collect();
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for room in dirty {
            let wanted = state.rooms.get(&room).is_some_and(|r| r.group);
            let has = state.subscribed.contains(&room);
            if wanted && !has {
                on.push(room);
            } else if !wanted && has {
                off.push(room);
            }
        }
        // No longer counted as listened to from now on: a session joining meanwhile waits for the
        // subscription that follows the unsubscription.
        for room in &off {
            state.subscribed.remove(room);
        }
        (on, off)
    }

    /// The subscriber made these changes.
    pub fn applied(&self, on: &[RoomId], off: &[RoomId]) {
        let mut state = self.lock();
        state.subscribed.extend(on.iter().copied());
        // Joined again while being unsubscribed: subscribe it again.
        let rejoined: Vec<RoomId> = off
            .iter()
            .filter(|r| state.rooms.get(r).is_some_and(|e| e.group))
            .copied()
            .collect();
        let again = !rejoined.is_empty();
        state.dirty.extend(rejoined);
        drop(state);
        self.settled.send_modify(|g| *g += 1);
        if again {
            self.changed.notify_one();
        }
    }

    /// Changes the subscriber could not make (Redis failed): to be tried again.
    pub fn retry(&self, rooms: &[RoomId]) {
        self.lock().dirty.extend(rooms.iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientId;

    fn message(room: RoomId, seq: u64) -> Arc<RoomMessage> {
        Arc::new(RoomMessage {
            room,
            seq,
            id: seq + 100,
            sender: Some(ClientId::random()),
            shown: "x".into(),
            body: vec![b'a'; 10],
            at_us: 0,
        })
    }

    #[test]
    fn posts_are_kept_in_order_and_members_woken() {
        let hub = Hub::new();
        let room = RoomId::random();
        let signals = Arc::new(Signals::default());
        hub.connected(true);
        hub.join(room, true, signals.clone(), 5);
        assert!(hub.posted(message(room, 6)));
        assert!(hub.posted(message(room, 7)));
        assert!(hub.posted(message(room, 7)), "a repeat is ignored");
        assert_eq!(signals.take().rooms, vec![room]);
        assert_eq!(hub.head(room), 7);
        let seqs = |v: Option<Vec<Arc<RoomMessage>>>| {
            v.map(|v| v.iter().map(|m| m.seq).collect::<Vec<_>>())
        };
        assert_eq!(seqs(hub.take(room, 5, 10)), Some(vec![6, 7]));
        assert_eq!(seqs(hub.take(room, 6, 10)), Some(vec![7]));
        assert_eq!(seqs(hub.take(room, 7, 10)), None, "nothing newer kept");
        assert_eq!(
            seqs(hub.take(room, 4, 10)),
            None,
            "older than kept: read MySQL"
        );
        // A gap (a post the node missed): the kept run starts over.
        assert!(hub.posted(message(room, 9)));
        assert_eq!(seqs(hub.take(room, 7, 10)), None);
        assert_eq!(seqs(hub.take(room, 8, 10)), Some(vec![9]));
        // The sweep finds a newer head.
        hub.advance(room, 12);
        assert_eq!(hub.head(room), 12);
        // Redis down: no kick could reach a session taken over, so memory serves nobody.
        hub.connected(false);
        assert_eq!(seqs(hub.take(room, 8, 10)), None);
        assert!(!hub.posted(message(RoomId::random(), 1)), "no member here");
    }

    #[test]
    fn subscriptions_follow_the_members() {
        let hub = Hub::new();
        let (room, private) = (RoomId::random(), RoomId::random());
        let a = Arc::new(Signals::default());
        let b = Arc::new(Signals::default());
        hub.join(room, true, a.clone(), 0);
        hub.join(room, true, b.clone(), 0);
        hub.join(private, false, a.clone(), 0);
        assert_eq!(hub.pending_changes(), (vec![room], vec![]));
        hub.applied(&[room], &[]);
        hub.leave(room, &a);
        assert_eq!(hub.pending_changes(), (vec![], vec![]), "b is still in");
        hub.leave(room, &b);
        assert_eq!(hub.pending_changes(), (vec![], vec![room]));
        hub.applied(&[], &[room]);
        assert_eq!(hub.rooms(), vec![(private, 0)]);
    }
}
