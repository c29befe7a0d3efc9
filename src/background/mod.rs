//! The loops a node runs beside its sessions, one module each, started together and stopped together.
//!
//! - [`notifications`]: this node's Redis channel (wakes and kicks for its sessions).
//! - [`sweep`]: the path that needs no Redis: MySQL asked for pending messages and stale sessions.
//! - [`leases`]: the Redis ownership leases of this node's sessions, renewed.
//! - [`node_lock`]: the MySQL lock that proves this node lives (a new session takes over the
//!   clients of a node whose lock is free).
//! - [`heartbeat`]: `chat:alive:<node>` in Redis, for operators (`chat-admin nodes`).
//! - [`bans`]: the cluster-wide bans kept current.
//! - [`retention`]: the purge of old delivered messages.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::node::Node;

pub mod bans;
pub mod heartbeat;
pub mod leases;
pub mod node_lock;
pub mod notifications;
pub mod retention;
pub mod sweep;

/// Starts every background loop of `node`; they run until `stop` is cancelled. Wait for them on the
/// returned tracker.
pub fn spawn(node: &Arc<Node>, stop: &CancellationToken) -> TaskTracker {
    let tasks = TaskTracker::new();
    tasks.spawn(notifications::run(node.clone(), stop.clone()));
    tasks.spawn(sweep::run(node.clone(), stop.clone()));
    tasks.spawn(leases::run(node.clone(), stop.clone()));
    tasks.spawn(heartbeat::run(node.clone(), stop.clone()));
    tasks.spawn(node_lock::run(node.clone(), stop.clone()));
    tasks.spawn(bans::watch(node.clone(), stop.clone()));
    tasks.spawn(retention::run(node.clone(), stop.clone()));
    tasks.close();
    tasks
}
