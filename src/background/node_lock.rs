//! Keeps this node's lock in MySQL (the proof that it lives), pinged every fifth of `--node-ttl`, and gives it back at the end.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::node::Node;
use crate::store::{Kept, StoreError};

/// Keeps the lock taken at start (`Node::node_lock`) until `stop`, then releases it. A lost
/// connection is replaced and the lock taken again; meanwhile other nodes may count this one as
/// dead and take over its clients (their sessions here are then fenced off by MySQL).
pub async fn run(node: Arc<Node>, stop: CancellationToken) {
    let taken = node
        .node_lock
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let Some(mut lock) = taken else {
        return;
    };
    let every = node.config.node_ttl / 5;
    let mut lost = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        match lock.keep().await {
            Ok(Kept::Held) => lost = false,
            Ok(Kept::Retaken) => {
                warn!("the MySQL connection holding the node lock was lost; lock taken again");
                lost = false;
            }
            Err(e @ StoreError::NodeIdInUse(_)) => {
                error!(error = %e, "cannot take the node lock again")
            }
            Err(e) if !lost => {
                lost = true;
                warn!(error = %e, "lost the node lock in MySQL; other nodes may take over this node's clients");
            }
            Err(_) => {}
        }
    }
    lock.release().await;
}
