//! The Redis ownership leases of this node's sessions, renewed every third of `--lease`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::bus::Owner;
use crate::node::Node;

/// Renews the Redis ownership lease of every local session, every third of the lease.
pub async fn run(node: Arc<Node>, stop: CancellationToken) {
    let every = node.config.lease / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
            _ = node.nudges.renew.notified() => {}
        }
        let sessions: Vec<_> = node
            .registry
            .snapshot()
            .into_iter()
            .map(|(id, epoch)| {
                let owner = Owner {
                    node: node.config.node_id.clone(),
                    epoch,
                };
                (id, owner)
            })
            .collect();
        for chunk in sessions.chunks(1000) {
            if let Err(e) = node.bus.renew(chunk, node.config.lease).await {
                warn!(error = %e, "could not renew Redis leases");
                break;
            }
        }
    }
}
