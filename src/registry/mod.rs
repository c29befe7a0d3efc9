//! This node's live sessions by client id: wake one (for its own queue, a room, or its memberships), kick one, list them for sweeps and lease renewal.

mod signals;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::Pending;
use crate::ClientId;

pub use signals::{Kick, Signals, Woken};

/// What a session holds of its registration.
#[derive(Debug)]
pub struct Registration {
    pub client_id: ClientId,
    pub epoch: u64,
    /// Why it was woken (coalesces: many wakes, one round), and whether it was kicked.
    pub signals: Arc<Signals>,
}

impl Registration {
    /// Why the node ends the session, if it does.
    pub fn kicked(&self) -> Option<Kick> {
        self.signals.kicked()
    }
}

/// The sessions of this node. The lock is never held across an await.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<Sessions>,
}

/// Shards of the session map, by a byte folded from the client id. A pass over every
/// session (sweeps, lease renewal) takes a few shards at a time, never one list of them all: a
/// list of every session, made every few seconds, kept its size in the allocator's dirty pages
/// (some 250 bytes per idle session in RSS, docs/BENCHMARKS.md).
const SHARDS: usize = 256;

/// The registered sessions, and whether the node is shutting down.
#[derive(Debug)]
struct Sessions {
    shards: Vec<HashMap<ClientId, Arc<Signals>>>,
    closed: bool,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions::with_capacity(0)
    }
}

impl Sessions {
    fn with_capacity(sessions: usize) -> Sessions {
        // A shard holds 1/256 of the sessions, give or take: a quarter more covers the spread.
        let each = sessions.div_ceil(SHARDS) * 5 / 4;
        Sessions {
            shards: (0..SHARDS).map(|_| HashMap::with_capacity(each)).collect(),
            closed: false,
        }
    }

    /// The shard of `id`: its 16 bytes folded by XOR, so that ids with a fixed part (a time-ordered
    /// UUID, say) still spread over every shard; the node's ids are random (v4) today.
    fn index(id: &ClientId) -> usize {
        usize::from(id.as_bytes().iter().fold(0u8, |acc, b| acc ^ b))
    }

    fn shard(&self, id: &ClientId) -> &HashMap<ClientId, Arc<Signals>> {
        &self.shards[Sessions::index(id)]
    }

    fn shard_mut(&mut self, id: &ClientId) -> &mut HashMap<ClientId, Arc<Signals>> {
        &mut self.shards[Sessions::index(id)]
    }

    fn get(&self, id: &ClientId) -> Option<&Arc<Signals>> {
        self.shard(id).get(id)
    }

    fn insert(&mut self, id: ClientId, signals: Arc<Signals>) -> Option<Arc<Signals>> {
        self.shard_mut(&id).insert(id, signals)
    }

    fn remove(&mut self, id: &ClientId) -> Option<Arc<Signals>> {
        self.shard_mut(id).remove(id)
    }

    fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }
}

/// One session as a pass over them lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    pub client_id: ClientId,
    pub epoch: u64,
    /// The rooms version the session has loaded.
    pub rooms_version: u64,
}

/// A pass over every session, list by list ([`Registry::pass`]).
#[derive(Debug)]
pub struct Pass<'a> {
    registry: &'a Registry,
    next_shard: usize,
    about: usize,
    /// What is left of a shard larger than `about`, handed out before the next shard.
    rest: Vec<Listed>,
}

impl Iterator for Pass<'_> {
    type Item = Vec<Listed>;

    fn next(&mut self) -> Option<Vec<Listed>> {
        let mut list = std::mem::take(&mut self.rest);
        if list.is_empty() {
            let sessions = self.registry.lock();
            while let Some(shard) = sessions.shards.get(self.next_shard) {
                // Whole shards, as many as fit.
                if !list.is_empty() && list.len() + shard.len() > self.about {
                    break;
                }
                list.extend(shard.iter().map(|(id, s)| Listed {
                    client_id: *id,
                    epoch: s.epoch,
                    rooms_version: s.rooms_version(),
                }));
                self.next_shard += 1;
            }
        }
        // A shard larger than `about` goes out in pieces.
        if list.len() > self.about {
            self.rest = list.split_off(self.about);
        }
        (!list.is_empty()).then_some(list)
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// A registry with room for `sessions` without growing (a map that grows under a flood of
    /// connections copies itself and leaves the old tables behind in the allocator).
    pub fn with_capacity(sessions: usize) -> Registry {
        Registry {
            sessions: Mutex::new(Sessions::with_capacity(sessions)),
        }
    }

    /// Registers session `epoch` of `id`. An older session of the same client on this node is
    /// kicked; if a newer one is already here, or the node is shutting down, the new registration
    /// comes back kicked.
    pub fn register(&self, id: ClientId, epoch: u64) -> Registration {
        let signals = Arc::new(Signals::new(epoch));
        let mut sessions = self.lock();
        if sessions.closed {
            signals.kick(Kick::Shutdown);
        } else {
            match sessions.get(&id) {
                Some(current) if current.epoch > epoch => signals.kick(Kick::TakenOver),
                _ => {
                    if let Some(old) = sessions.insert(id, signals.clone()) {
                        old.kick(Kick::TakenOver);
                    }
                }
            }
        }
        Registration {
            client_id: id,
            epoch,
            signals,
        }
    }

    /// Shutdown: kicks every session, and every session registered from now on.
    pub fn close(&self) -> usize {
        let mut sessions = self.lock();
        sessions.closed = true;
        for signals in sessions.shards.iter().flat_map(HashMap::values) {
            signals.kick(Kick::Shutdown);
        }
        sessions.len()
    }

    /// Removes session `epoch` of `id`, unless a newer one replaced it.
    pub fn unregister(&self, id: ClientId, epoch: u64) {
        let mut sessions = self.lock();
        if sessions.get(&id).is_some_and(|s| s.epoch == epoch) {
            sessions.remove(&id);
        }
    }

    /// Wakes the session of `id` for its own queue; `false` if this node has none.
    pub fn wake(&self, id: ClientId) -> bool {
        self.with(id, Signals::wake_own)
    }

    /// Hands a committed message of its own queue to the session of `id`; `false` if this node
    /// has none.
    pub fn carry(&self, id: ClientId, message: Pending) -> bool {
        self.with(id, |s| s.carry(message))
    }

    /// Wakes the session of `id` to load its rooms again; `false` if this node has none.
    pub fn wake_reload(&self, id: ClientId) -> bool {
        self.with(id, Signals::wake_reload)
    }

    /// The signals of the session of `id`, if this node has one.
    pub fn signals(&self, id: ClientId) -> Option<Arc<Signals>> {
        self.lock().get(&id).cloned()
    }

    fn with(&self, id: ClientId, f: impl FnOnce(&Signals)) -> bool {
        match self.lock().get(&id) {
            Some(signals) => {
                f(signals);
                true
            }
            None => false,
        }
    }

    /// Kicks the session of `id` if it is older than `newer_epoch`.
    pub fn kick(&self, id: ClientId, newer_epoch: u64) -> bool {
        let mut sessions = self.lock();
        match sessions.get(&id) {
            Some(signals) if signals.epoch < newer_epoch => {
                signals.kick(Kick::TakenOver);
                sessions.remove(&id);
                true
            }
            _ => false,
        }
    }

    /// Closes the session of `id`, if any, because the client was banned.
    pub fn ban(&self, id: ClientId) -> bool {
        match self.lock().remove(&id) {
            Some(signals) => {
                signals.kick(Kick::Banned);
                true
            }
            None => false,
        }
    }

    /// Every session, in lists of at most `about` (whole shards, as many as fit; a shard that
    /// alone holds more is handed out in pieces), each taken under the lock on its own, so that a
    /// pass holds at most one shard at a time. A session that comes or goes during the pass may be
    /// listed or not; the next pass sees it as it is then.
    pub fn pass(&self, about: usize) -> Pass<'_> {
        Pass {
            registry: self,
            next_shard: 0,
            about: about.max(1),
            rest: Vec::new(),
        }
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are no live sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // A panic while holding this lock cannot leave the map half-updated; keep serving.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::signals::{CARRIED_BYTES, WOKEN_ROOMS_MAX};
    use super::*;
    use crate::RoomId;
    use std::sync::atomic::Ordering;

    #[test]
    fn a_newer_session_kicks_the_older_one() {
        let reg = Registry::new();
        let id = ClientId::random();
        let old = reg.register(id, 1);
        let new = reg.register(id, 2);
        assert!(old.kicked() == Some(Kick::TakenOver));
        assert!(new.kicked().is_none());
        // The old session's cleanup must not remove the new one.
        reg.unregister(id, 1);
        let listed: Vec<_> = reg
            .pass(10)
            .flatten()
            .map(|s| (s.client_id, s.epoch))
            .collect();
        assert_eq!(listed, vec![(id, 2)]);
        // A late registration of an older epoch is refused at once.
        let late = reg.register(id, 1);
        assert!(late.kicked().is_some());
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn a_pass_lists_every_session_once_a_few_shards_at_a_time() {
        let reg = Registry::with_capacity(3000);
        let mut ids: Vec<_> = (0..3000).map(|_| ClientId::random()).collect();
        let _held: Vec<_> = ids.iter().map(|id| reg.register(*id, 7)).collect();
        let lists: Vec<_> = reg.pass(500).collect();
        let lens: Vec<_> = lists.iter().map(Vec::len).collect();
        // Whole shards, as many as fit in 500: a shard holds about 12 of 3,000, so every list but
        // the last is nearly full.
        let (last, full) = lens.split_last().expect("lists");
        assert!(full.iter().all(|n| (400..=500).contains(n)), "{lens:?}");
        assert!((1..=500).contains(last), "{lens:?}");
        let mut listed: Vec<_> = lists.concat().iter().map(|s| s.client_id).collect();
        listed.sort();
        ids.sort();
        assert_eq!(listed, ids);
        assert_eq!(reg.pass(500).count(), lists.len());
        assert_eq!(Registry::new().pass(500).count(), 0);
        // A shard larger than `about` goes out in pieces, every session still once.
        let mut in_pieces: Vec<_> = reg.pass(5).flatten().map(|s| s.client_id).collect();
        in_pieces.sort();
        assert_eq!(in_pieces, ids);
        assert!(reg.pass(5).all(|l| (1..=5).contains(&l.len())));
    }

    #[test]
    fn kick_only_hits_older_epochs() {
        let reg = Registry::new();
        let id = ClientId::random();
        let s = reg.register(id, 5);
        assert!(!reg.kick(id, 5));
        assert!(s.kicked().is_none());
        assert!(reg.kick(id, 6));
        assert_eq!(s.kicked(), Some(Kick::TakenOver));
        assert!(reg.is_empty());
        assert!(!reg.wake(id));
    }

    #[test]
    fn wakes_say_why_and_coalesce() {
        let reg = Registry::new();
        let id = ClientId::random();
        let s = reg.register(id, 1);
        let room = RoomId::random();
        assert!(reg.wake(id));
        s.signals.wake_room(room);
        s.signals.wake_room(room);
        let woken = s.signals.take();
        assert_eq!(
            woken,
            Woken {
                own: true,
                rooms: vec![room],
                ..Woken::default()
            }
        );
        assert_eq!(s.signals.take(), Woken::default());
        for _ in 0..WOKEN_ROOMS_MAX + 1 {
            s.signals.wake_room(RoomId::random());
        }
        let woken = s.signals.take();
        assert!(woken.all_rooms && woken.rooms.len() == WOKEN_ROOMS_MAX);
        assert!(reg.wake_reload(id) && s.signals.take().reload);
        assert!(!reg.wake_reload(ClientId::random()));
    }

    #[test]
    fn a_ban_kicks_whatever_the_epoch() {
        let reg = Registry::new();
        let id = ClientId::random();
        let s = reg.register(id, 9);
        assert!(reg.ban(id));
        assert_eq!(s.kicked(), Some(Kick::Banned));
        assert!(!reg.ban(id));
    }

    #[test]
    fn carried_bytes_are_given_back_when_taken_or_when_the_session_goes() {
        // The only test that carries: the process-wide count is ours to compare.
        let before = CARRIED_BYTES.load(Ordering::Relaxed);
        let reg = Registry::new();
        let (a, b) = (ClientId::random(), ClientId::random());
        let sa = reg.register(a, 1);
        let sb = reg.register(b, 1);
        assert!(reg.carry(a, Pending::carried(1, 10, b"hello".to_vec(), 0)));
        assert!(reg.carry(b, Pending::carried(1, 11, b"unread".to_vec(), 0)));
        assert_eq!(CARRIED_BYTES.load(Ordering::Relaxed), before + 11);
        assert_eq!(sa.signals.take().carried.len(), 1);
        assert_eq!(CARRIED_BYTES.load(Ordering::Relaxed), before + 6);
        // b's session ends without taking its message.
        reg.unregister(b, 1);
        drop(sb);
        assert_eq!(CARRIED_BYTES.load(Ordering::Relaxed), before);
    }

    #[test]
    fn closing_kicks_every_session_and_every_later_one() {
        let reg = Registry::new();
        let s = reg.register(ClientId::random(), 1);
        assert_eq!(reg.close(), 1);
        assert_eq!(s.kicked(), Some(Kick::Shutdown));
        // A kick keeps its first reason.
        s.signals.kick(Kick::Banned);
        assert_eq!(s.kicked(), Some(Kick::Shutdown));
        let late = reg.register(ClientId::random(), 1);
        assert_eq!(late.kicked(), Some(Kick::Shutdown));
        assert_eq!(reg.len(), 1);
    }
}
