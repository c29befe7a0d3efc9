//! This node's live sessions by client id: wake one, kick one, list them for sweeps and lease renewal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::ClientId;

#[derive(Debug)]
struct Entry {
    epoch: u64,
    wake: Arc<Notify>,
    kick: CancellationToken,
    banned: Arc<AtomicBool>,
}

/// What a session holds of its registration.
#[derive(Debug)]
pub struct Registration {
    pub client_id: ClientId,
    pub epoch: u64,
    /// Signalled when messages may be pending (coalesces: many wakes, one fetch).
    pub wake: Arc<Notify>,
    /// Cancelled when a newer session took the client over, or the client was banned.
    pub kicked: CancellationToken,
    banned: Arc<AtomicBool>,
}

impl Registration {
    /// Whether the kick was a ban (rather than a takeover).
    pub fn banned(&self) -> bool {
        self.banned.load(Ordering::Relaxed)
    }
}

/// The sessions of this node. The lock is never held across an await.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<HashMap<ClientId, Entry>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers session `epoch` of `id`. An older session of the same client on this node is
    /// kicked; if a newer one is already here, the new registration comes back kicked.
    pub fn register(&self, id: ClientId, epoch: u64) -> Registration {
        let wake = Arc::new(Notify::new());
        let kick = CancellationToken::new();
        let banned = Arc::new(AtomicBool::new(false));
        let mut sessions = self.lock();
        match sessions.get(&id) {
            Some(current) if current.epoch > epoch => kick.cancel(),
            _ => {
                let old = sessions.insert(
                    id,
                    Entry {
                        epoch,
                        wake: wake.clone(),
                        kick: kick.clone(),
                        banned: banned.clone(),
                    },
                );
                if let Some(old) = old {
                    old.kick.cancel();
                }
            }
        }
        Registration {
            client_id: id,
            epoch,
            wake,
            kicked: kick,
            banned,
        }
    }

    /// Removes session `epoch` of `id`, unless a newer one replaced it.
    pub fn unregister(&self, id: ClientId, epoch: u64) {
        let mut sessions = self.lock();
        if sessions.get(&id).is_some_and(|e| e.epoch == epoch) {
            sessions.remove(&id);
        }
    }

    /// Wakes the session of `id`; `false` if this node has none.
    pub fn wake(&self, id: ClientId) -> bool {
        match self.lock().get(&id) {
            Some(entry) => {
                entry.wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// Kicks the session of `id` if it is older than `newer_epoch`.
    pub fn kick(&self, id: ClientId, newer_epoch: u64) -> bool {
        let mut sessions = self.lock();
        match sessions.get(&id) {
            Some(entry) if entry.epoch < newer_epoch => {
                entry.kick.cancel();
                sessions.remove(&id);
                true
            }
            _ => false,
        }
    }

    /// Closes the session of `id`, if any, because the client was banned.
    pub fn ban(&self, id: ClientId) -> bool {
        match self.lock().remove(&id) {
            Some(entry) => {
                entry.banned.store(true, Ordering::Relaxed);
                entry.kick.cancel();
                true
            }
            None => false,
        }
    }

    /// Every session as (client id, epoch).
    pub fn snapshot(&self) -> Vec<(ClientId, u64)> {
        self.lock().iter().map(|(id, e)| (*id, e.epoch)).collect()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are no live sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, Entry>> {
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
        assert!(old.kicked.is_cancelled());
        assert!(!new.kicked.is_cancelled());
        // The old session's cleanup must not remove the new one.
        reg.unregister(id, 1);
        assert_eq!(reg.snapshot(), vec![(id, 2)]);
        // A late registration of an older epoch is refused at once.
        let late = reg.register(id, 1);
        assert!(late.kicked.is_cancelled());
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn kick_only_hits_older_epochs() {
        let reg = Registry::new();
        let id = ClientId::random();
        let s = reg.register(id, 5);
        assert!(!reg.kick(id, 5));
        assert!(!s.kicked.is_cancelled());
        assert!(reg.kick(id, 6));
        assert!(s.kicked.is_cancelled());
        assert!(reg.is_empty());
        assert!(!reg.wake(id));
    }

    #[test]
    fn a_ban_kicks_whatever_the_epoch() {
        let reg = Registry::new();
        let id = ClientId::random();
        let s = reg.register(id, 9);
        assert!(reg.ban(id));
        assert!(s.kicked.is_cancelled() && s.banned());
        assert!(!reg.ban(id));
    }
}
