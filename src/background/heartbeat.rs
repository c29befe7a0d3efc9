//! The node's heartbeat key in Redis, rewritten every fifth of `--node-ttl` while the node lives (for operators: `chat-admin nodes`).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::node::Node;

/// Keeps `chat:alive:<node>` in Redis while this node runs, so that `chat-admin nodes` can list the
/// live nodes. (Sessions tell a live node from a dead one by its lock in MySQL: `node_lock`.)
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
