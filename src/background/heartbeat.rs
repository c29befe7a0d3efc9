//! The node's heartbeat key in Redis, rewritten every fifth of `--node-ttl` while the node lives.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::node::Node;

/// Keeps `chat:alive:<node>` in Redis while this node runs, so that a new session of a client
/// whose previous session was here can tell a live node (wait for its handoff) from a dead one.
pub async fn run(node: Arc<Node>, stop: CancellationToken) {
    let ttl = node.config.node_ttl;
    loop {
        if let Err(e) = node.bus.heartbeat(&node.config.node_id, ttl).await {
            warn!(error = %e, "could not send the heartbeat to Redis");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(ttl / 5) => {}
            _ = node.nudges.heartbeat.notified() => {}
        }
    }
}
