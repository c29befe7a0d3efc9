//! One session's signals: why it was woken (own queue, rooms, memberships, carried messages), whether it was kicked, and the waker of its task.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use crate::store::Pending;
use crate::RoomId;

/// Most rooms remembered as woken one by one; past it, every room of the session counts as woken.
pub(super) const WOKEN_ROOMS_MAX: usize = 64;
/// Most messages carried by notifications a session keeps until its next round (more are read
/// from MySQL instead).
const CARRIED_MAX: usize = 32;
/// Most bytes of carried messages all sessions of the process keep at once.
const CARRIED_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Bytes of carried messages kept now, by every session of the process.
pub(super) static CARRIED_BYTES: AtomicUsize = AtomicUsize::new(0);

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
    pub(super) epoch: u64,
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
    pub(super) fn new(epoch: u64) -> Signals {
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
