//! The Redis ownership leases of this node's sessions, renewed every third of `--lease`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::bus::Owner;
use crate::node::Node;

/// Most leases renewed per Redis pipeline.
const RENEW_CHUNK: usize = 250;

/// Renews the Redis ownership lease of every local session, every third of the lease.
pub async fn run(node: Arc<Node>, stop: CancellationToken) {
    let every = node.config.lease / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
            _ = node.nudges.renew.notified() => {}
        }
        // List by list: a pass holds one list of leases at a time.
        for list in node.registry.pass(RENEW_CHUNK) {
            let leases: Vec<_> = list
                .iter()
                .map(|s| {
                    let owner = Owner {
                        node: node.config.node_id.clone(),
                        epoch: s.epoch,
                    };
                    (s.client_id, owner)
                })
                .collect();
            if let Err(e) = node.bus.renew(&leases, node.config.lease).await {
                warn!(error = %e, "could not renew Redis leases");
                break;
            }
        }
    }
}
