//! This node's live sessions by client id: wake one (for its own queue, a room, or its memberships), kick one, list them for sweeps and lease renewal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use crate::store::Pending;
use crate::{ClientId, RoomId};

/// Most rooms remembered as woken one by one; past it, every room of the session counts as woken.
const WOKEN_ROOMS_MAX: usize = 64;
/// Most messages carried by notifications a session keeps until its next round (more are read
/// from MySQL instead).
const CARRIED_MAX: usize = 32;
/// Most bytes of carried messages all sessions of the process keep at once.
const CARRIED_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Bytes of carried messages kept now, by every session of the process.
static CARRIED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// What a session was woken for, one lock for both lists.
#[derive(Debug, Default)]
struct Lists {
    /// Rooms with new messages.
    rooms: Vec<RoomId>,
    /// Messages of the own queue carried by their notifications, in arrival order; their bytes
    /// count in `CARRIED_BYTES` until taken or dropped.
    carried: Vec<Pending>,
}

impl Lists {
    /// The carried messages, no longer counted in `CARRIED_BYTES`.
    fn take_carried(&mut self) -> Vec<Pending> {
        let carried = std::mem::take(&mut self.carried);
        let size: usize = carried.iter().map(|m| m.body.len()).sum();
        CARRIED_BYTES.fetch_sub(size, Ordering::Relaxed);
        carried
    }
}

impl Drop for Lists {
    /// A session that ends with carried messages it never took gives their bytes back.
    fn drop(&mut self) {
        self.take_carried();
    }
}

/// Why the node ends a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// A newer session of the same client took it over.
    TakenOver,
    /// The client was banned.
    Banned,
    /// The node is shutting down.
    Shutdown,
}

impl Kick {
    fn code(self) -> u8 {
        match self {
            Kick::TakenOver => 1,
            Kick::Banned => 2,
            Kick::Shutdown => 3,
        }
    }

    fn from_code(code: u8) -> Option<Kick> {
        match code {
            1 => Some(Kick::TakenOver),
            2 => Some(Kick::Banned),
            3 => Some(Kick::Shutdown),
            _ => None,
        }
    }
}

/// Why a session was woken, coalesced until it looks: many wakes, one round. Also how the node
/// ends it (a kick), so that an idle session waits on one thing besides its socket.
#[derive(Debug, Default)]
pub struct Signals {
    /// The session's task, woken when `woken` is set (one waiter: no wait list, no future).
    waker: AtomicWaker,
    woken: AtomicBool,
    /// The session's epoch (its claim in MySQL).
    epoch: u64,
    /// Why the node ends the session, if it does ([`Kick`] code; 0: it does not). The first
    /// reason stays.
    kick: AtomicU8,
    /// Messages may be pending in the client's own queue.
    own: AtomicBool,
    /// The client's memberships changed: load its rooms again.
    reload: AtomicBool,
    /// Rooms with new messages (every room when `all_rooms`), and carried messages; boxed and
    /// taken whole, so that a session with nothing waiting keeps no lists.
    lists: Mutex<Option<Box<Lists>>>,
    all_rooms: AtomicBool,
    /// The rooms version the session has loaded (the sweep compares it with MySQL's).
    rooms_version: AtomicU64,
}

/// What a session was woken for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Woken {
    /// Messages may be pending in the own queue: look in MySQL.
    pub own: bool,
    /// Messages of the own queue their notifications carried.
    pub carried: Vec<Pending>,
    pub reload: bool,
    pub rooms: Vec<RoomId>,
    pub all_rooms: bool,
}

impl Signals {
    fn new(epoch: u64) -> Signals {
        Signals {
            epoch,
            ..Signals::default()
        }
    }

    /// Ends the session for `why` (the first reason given stays).
    pub fn kick(&self, why: Kick) {
        let _ = self
            .kick
            .compare_exchange(0, why.code(), Ordering::AcqRel, Ordering::Acquire);
        self.wake();
    }

    /// Why the node ends the session, if it does.
    pub fn kicked(&self) -> Option<Kick> {
        Kick::from_code(self.kick.load(Ordering::Acquire))
    }

    /// Messages may be pending in the client's own queue.
    pub fn wake_own(&self) {
        self.own.store(true, Ordering::Relaxed);
        self.wake();
    }

    fn lists(&self) -> std::sync::MutexGuard<'_, Option<Box<Lists>>> {
        self.lists.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `room` has new messages.
    pub fn wake_room(&self, room: RoomId) {
        {
            let mut guard = self.lists();
            let lists = guard.get_or_insert_with(Box::default);
            if !lists.rooms.contains(&room) {
                if lists.rooms.len() < WOKEN_ROOMS_MAX {
                    lists.rooms.push(room);
                } else {
                    self.all_rooms.store(true, Ordering::Relaxed);
                }
            }
        }
        self.wake();
    }

    /// A message of the own queue was committed, and here it is: kept for the next round, which
    /// it wakes. Past the bounds it is not kept, and the round looks in MySQL instead.
    pub fn carry(&self, message: Pending) {
        let size = message.body.len();
        let kept = {
            let mut guard = self.lists();
            let lists = guard.get_or_insert_with(Box::default);
            let room = CARRIED_BYTES.fetch_add(size, Ordering::Relaxed) + size <= CARRIED_BYTES_MAX;
            if room && lists.carried.len() < CARRIED_MAX {
                lists.carried.push(message);
                true
            } else {
                CARRIED_BYTES.fetch_sub(size, Ordering::Relaxed);
                false
            }
        };
        if kept {
            self.wake();
        } else {
            self.wake_own();
        }
    }

    /// Every room may have new messages (after a lost subscription, say).
    pub fn wake_all_rooms(&self) {
        self.all_rooms.store(true, Ordering::Relaxed);
        self.wake();
    }

    /// The memberships changed: load the rooms again.
    pub fn wake_reload(&self) {
        self.reload.store(true, Ordering::Relaxed);
        self.wake();
    }

    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready once a wake came since it was last ready (the session's task is woken for it).
    pub fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.woken.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.woken.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Registers `cx` for the next wake without taking one: `true` when a wake came since the
    /// session last looked (a parked session then goes on instead of waiting).
    pub fn watch(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.woken.load(Ordering::Acquire)
    }

    /// Waits for a wake (returns at once if one came since it was last ready).
    pub async fn woken(&self) {
        std::future::poll_fn(|cx| self.poll_woken(cx)).await
    }

    /// Takes what the session was woken for, clearing it.
    pub fn take(&self) -> Woken {
        let (rooms, carried) = match self.lists().take() {
            Some(mut lists) => (std::mem::take(&mut lists.rooms), lists.take_carried()),
            None => (Vec::new(), Vec::new()),
        };
        Woken {
            own: self.own.swap(false, Ordering::Relaxed),
            carried,
            reload: self.reload.swap(false, Ordering::Relaxed),
            all_rooms: self.all_rooms.swap(false, Ordering::Relaxed),
            rooms,
        }
    }

    /// The session loaded its rooms as of `version`.
    pub fn loaded(&self, version: u64) {
        self.rooms_version.store(version, Ordering::Relaxed);
    }

    /// The rooms version the session has loaded.
    pub fn rooms_version(&self) -> u64 {
        self.rooms_version.load(Ordering::Relaxed)
    }
}

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

/// The registered sessions, and whether the node is shutting down.
#[derive(Debug, Default)]
struct Sessions {
    by_client: HashMap<ClientId, Arc<Signals>>,
    closed: bool,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// A registry with room for `sessions` without growing (a map that grows under a flood of
    /// connections copies itself and leaves the old tables behind in the allocator).
    pub fn with_capacity(sessions: usize) -> Registry {
        Registry {
            sessions: Mutex::new(Sessions {
                by_client: HashMap::with_capacity(sessions),
                closed: false,
            }),
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
            match sessions.by_client.get(&id) {
                Some(current) if current.epoch > epoch => signals.kick(Kick::TakenOver),
                _ => {
                    if let Some(old) = sessions.by_client.insert(id, signals.clone()) {
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
        for signals in sessions.by_client.values() {
            signals.kick(Kick::Shutdown);
        }
        sessions.by_client.len()
    }

    /// Removes session `epoch` of `id`, unless a newer one replaced it.
    pub fn unregister(&self, id: ClientId, epoch: u64) {
        let mut sessions = self.lock();
        if sessions
            .by_client
            .get(&id)
            .is_some_and(|s| s.epoch == epoch)
        {
            sessions.by_client.remove(&id);
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
        self.lock().by_client.get(&id).cloned()
    }

    fn with(&self, id: ClientId, f: impl FnOnce(&Signals)) -> bool {
        match self.lock().by_client.get(&id) {
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
        match sessions.by_client.get(&id) {
            Some(signals) if signals.epoch < newer_epoch => {
                signals.kick(Kick::TakenOver);
                sessions.by_client.remove(&id);
                true
            }
            _ => false,
        }
    }

    /// Closes the session of `id`, if any, because the client was banned.
    pub fn ban(&self, id: ClientId) -> bool {
        match self.lock().by_client.remove(&id) {
            Some(signals) => {
                signals.kick(Kick::Banned);
                true
            }
            None => false,
        }
    }

    /// Every session as (client id, epoch).
    pub fn snapshot(&self) -> Vec<(ClientId, u64)> {
        self.lock()
            .by_client
            .iter()
            .map(|(id, s)| (*id, s.epoch))
            .collect()
    }

    /// The sessions that have loaded rooms, with the rooms version each loaded.
    pub fn room_versions(&self) -> Vec<(ClientId, u64)> {
        self.lock()
            .by_client
            .iter()
            .map(|(id, s)| (*id, s.rooms_version()))
            .collect()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().by_client.len()
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
    use super::*;

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
        assert_eq!(reg.snapshot(), vec![(id, 2)]);
        // A late registration of an older epoch is refused at once.
        let late = reg.register(id, 1);
        assert!(late.kicked().is_some());
        assert_eq!(reg.len(), 1);
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
