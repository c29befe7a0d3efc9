//! The context every part of a node receives: its settings, MySQL, Redis, registry, admission and batchers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{Notify, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::admission::Admission;
use crate::batcher::{Batcher, Claims, Cursors, Fetches, Posts, RoomCursors, RoomFetches};
use crate::bus::Bus;
use crate::config::NodeConfig;
use crate::hub::Hub;
use crate::park::Park;
use crate::registry::Registry;
use crate::stats;
use crate::store::{NodeLock, Store};
use crate::tls::Tls;

/// Requests from one part of the node to a background loop: "do your work now, do not wait for
/// your interval" (after Redis came back, say).
#[derive(Debug, Default)]
pub struct Nudges {
    /// A sweep of MySQL for pending messages (notifications may have been lost).
    pub sweep: Notify,
    /// The leases of every session written again (Redis may have lost its keys).
    pub renew: Notify,
    /// The heartbeat written again (same reason).
    pub heartbeat: Notify,
}

/// Most sessions the per-session maps (registry, park) make room for at the start
/// (`--max-connections`, up to this); past it they grow.
const MAP_CAPACITY_MAX: usize = 1 << 20;

/// Everything the sessions and background loops of one node share.
pub struct Node {
    pub config: NodeConfig,
    pub store: Store,
    pub bus: Bus,
    pub registry: Registry,
    pub admission: Admission,
    /// Claims clients for many new sessions per transaction.
    pub claims: Batcher<Claims>,
    /// Reads pending messages for many sessions per statement.
    pub fetches: Batcher<Fetches>,
    /// Writes the cursors of many sessions per statement.
    pub cursors: Batcher<Cursors>,
    /// Stores the posts of many sessions per transaction.
    pub posts: Batcher<Posts>,
    /// Reads room pages for many sessions per statement.
    pub room_fetches: Batcher<RoomFetches>,
    /// Writes the room cursors of many sessions per statement.
    pub room_cursors: Batcher<RoomCursors>,
    /// This node's rooms: local members, latest messages, room channels.
    pub hub: Hub,
    /// Turns at MySQL for chat commands: at most half the pool, so deliveries always find
    /// connections.
    pub chat_queries: Arc<Semaphore>,
    /// Wake-ups for the background loops.
    pub nudges: Nudges,
    /// The certificate of the TLS listeners, if any.
    pub tls: Option<Tls>,
    /// This node's lock in MySQL, taken at start; the `node_lock` background loop keeps it.
    pub node_lock: std::sync::Mutex<Option<NodeLock>>,
    /// Set when a graceful shutdown begins: `/readyz` answers 503 from then on.
    draining: AtomicBool,
    /// One permit per connection up to `--max-connections` (shared by every listener).
    pub connections: Arc<Semaphore>,
    /// The connections' tasks: a graceful shutdown waits for them (and for parked sessions,
    /// which hold a token of it).
    pub sessions: TaskTracker,
    /// Idle sessions waiting without a task.
    pub park: Arc<Park>,
}

impl Node {
    pub fn new(config: NodeConfig, store: Store, bus: Bus, admission: Admission) -> Node {
        Node {
            claims: Batcher::spawn(Claims {
                store: store.clone(),
                bus: bus.clone(),
                node: config.node_id.clone(),
                lease: config.lease,
            }),
            fetches: Batcher::spawn(Fetches(store.clone())),
            cursors: Batcher::spawn(Cursors(store.clone())),
            posts: Batcher::spawn(Posts(store.clone())),
            room_fetches: Batcher::spawn(RoomFetches(store.clone())),
            room_cursors: Batcher::spawn(RoomCursors(store.clone())),
            hub: Hub::new(),
            chat_queries: Arc::new(Semaphore::new((config.db_pool / 2).max(1))),
            store,
            bus,
            registry: Registry::with_capacity(config.max_connections.min(MAP_CAPACITY_MAX)),
            admission,
            nudges: Nudges::default(),
            tls: None,
            node_lock: std::sync::Mutex::new(None),
            draining: AtomicBool::new(false),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            sessions: TaskTracker::new(),
            park: Park::new(
                tokio::runtime::Handle::current(),
                config.max_connections.min(MAP_CAPACITY_MAX),
            ),
            config,
        }
    }

    /// Marks the node as shutting down, for `/readyz` (load balancers stop sending clients).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether every connection slot (`--max-connections`) is taken: new connections get
    /// `ERROR: server full`, so `/readyz` answers 503.
    pub fn full(&self) -> bool {
        self.connections.available_permits() == 0
    }

    /// Whether a graceful shutdown has begun.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Re-reads the TLS certificate and key (SIGHUP); on error the previous ones stay in use.
    pub fn reload_tls(&self) {
        let Some(tls) = &self.tls else { return };
        match tls.reload() {
            Ok(()) => {
                stats::tls_reload(true);
                info!("TLS certificate reloaded");
            }
            Err(e) => {
                stats::tls_reload(false);
                error!(error = %e, "TLS certificate not reloaded; the previous one stays");
            }
        }
    }

    /// Re-reads the ban list (SIGHUP) and closes the live sessions of banned clients.
    pub fn reload_bans(&self) {
        match self.admission.reload() {
            Ok(entries) => {
                let kicked = self.kick_banned();
                info!(entries, kicked, "ban list reloaded");
            }
            Err(e) => error!(error = %e, "ban list not reloaded; the previous one stays"),
        }
    }

    /// Closes the live sessions of banned clients (after any change of the bans); returns how many.
    pub fn kick_banned(&self) -> usize {
        self.admission
            .banned_clients()
            .into_iter()
            .filter(|id| self.registry.ban(*id))
            .count()
    }
}
