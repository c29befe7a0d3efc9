//! Idle sessions without a task: each waits in a map, keyed, until its socket or its signals wake it, and then gets a task again.
//!
//! A task costs an idle session its whole future, in a cell rounded up to the cache line (768
//! bytes for a session). Parked, the session is a box of its state (its socket, cursor and
//! registration, about 400 bytes) and a small waker that knows its key. The waker is registered
//! with the socket (readable) and with the session's signals (wakes and kicks); the first wake
//! takes the session out of the map and spawns its task again on the session tracker, so that a
//! graceful shutdown still waits for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};

use tokio::runtime::Handle;

/// A session that can wait without a task.
pub trait Parked: Send + 'static {
    /// Registers `cx` with everything that can wake the session; `true` when something already
    /// has (the session goes on in its task instead).
    fn register(&mut self, cx: &mut Context<'_>) -> bool;
    /// Gives the session its task again, on `handle`.
    fn resume(self: Box<Self>, handle: &Handle);
}

/// The parked sessions of a node.
pub struct Park {
    parked: Mutex<HashMap<u64, Box<dyn Parked>>>,
    next_key: AtomicU64,
    /// Where woken sessions get their tasks (a waker may run on any thread).
    handle: Handle,
}

impl Park {
    /// A park with room for `sessions` without growing, whose sessions resume on `handle`.
    pub fn new(handle: Handle, sessions: usize) -> Arc<Park> {
        Arc::new(Park {
            parked: Mutex::new(HashMap::with_capacity(sessions)),
            next_key: AtomicU64::new(0),
            handle,
        })
    }

    /// Parks `session` until something wakes it. `Err` gives it back when something already
    /// has: it goes on in its task.
    pub fn park<P: Parked>(self: &Arc<Self>, mut session: P) -> Result<(), P> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            key,
            fired: AtomicBool::new(false),
            park: self.clone(),
        });
        let waker = Waker::from(slot.clone());
        if session.register(&mut Context::from_waker(&waker)) {
            return Err(session);
        }
        let mut parked = self.lock();
        // A wake between the registration and now found nothing to take: the session goes on.
        if slot.fired.load(Ordering::Acquire) {
            return Err(session);
        }
        parked.insert(key, Box::new(session));
        Ok(())
    }

    /// How many sessions wait here.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session waits here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Box<dyn Parked>>> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The waker of one parked session: its first wake resumes it; later ones (the other source,
/// or a source that kept the waker after the session left) find nothing.
struct Slot {
    key: u64,
    fired: AtomicBool,
    park: Arc<Park>,
}

impl Wake for Slot {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.fired.swap(true, Ordering::AcqRel) {
            return;
        }
        // Taken out under the lock, resumed outside it (the spawn may run code of its own).
        let session = self.park.lock().remove(&self.key);
        if let Some(session) = session {
            session.resume(&self.park.handle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A session whose wake source is a test-held waker slot.
    struct Fake {
        source: Arc<Mutex<Option<Waker>>>,
        ready: bool,
        resumed: Arc<AtomicUsize>,
    }

    impl Parked for Fake {
        fn register(&mut self, cx: &mut Context<'_>) -> bool {
            *self.source.lock().unwrap() = Some(cx.waker().clone());
            self.ready
        }
        fn resume(self: Box<Self>, _handle: &Handle) {
            self.resumed.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn fake(ready: bool) -> (Fake, Arc<Mutex<Option<Waker>>>, Arc<AtomicUsize>) {
        let source = Arc::new(Mutex::new(None));
        let resumed = Arc::new(AtomicUsize::new(0));
        let session = Fake {
            source: source.clone(),
            ready,
            resumed: resumed.clone(),
        };
        (session, source, resumed)
    }

    #[tokio::test]
    async fn a_parked_session_resumes_once_on_its_first_wake() {
        let park = Park::new(Handle::current(), 4);
        let (session, source, resumed) = fake(false);
        assert!(park.park(session).is_ok());
        assert_eq!(park.len(), 1);
        let waker = source.lock().unwrap().clone().unwrap();
        waker.wake_by_ref();
        waker.wake_by_ref();
        waker.wake();
        assert_eq!(resumed.load(Ordering::SeqCst), 1);
        assert!(park.is_empty());
    }

    #[tokio::test]
    async fn a_session_already_woken_is_given_back() {
        let park = Park::new(Handle::current(), 4);
        let (session, _source, resumed) = fake(true);
        assert!(park.park(session).is_err());
        assert!(park.is_empty());
        assert_eq!(resumed.load(Ordering::SeqCst), 0);
    }

    /// A wake that comes after the registration and before the session is in the map finds
    /// nothing to take; the park gives the session back instead of losing the wake.
    #[tokio::test]
    async fn a_wake_during_parking_is_not_lost() {
        struct WakesItself;
        impl Parked for WakesItself {
            fn register(&mut self, cx: &mut Context<'_>) -> bool {
                cx.waker().wake_by_ref();
                false
            }
            fn resume(self: Box<Self>, _handle: &Handle) {
                panic!("never in the map");
            }
        }
        let park = Park::new(Handle::current(), 4);
        assert!(park.park(WakesItself).is_err());
        assert!(park.is_empty());
    }
}
