//! The background purge: every `--retention-interval`, delivered messages older than `--retention` are deleted, by one node at a time.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::node::Node;
use crate::store::Purge;

/// Rows deleted per statement.
pub const BATCH: u64 = 1000;
/// Pause after each statement that deleted rows, so that the purge leaves MySQL room for enqueues
/// and deliveries.
pub const PAUSE: Duration = Duration::from_millis(100);

/// Purges every `retention_interval` until `stop`; does nothing when retention is off.
pub async fn run(node: Arc<Node>, stop: CancellationToken) {
    let Some(keep) = node.config.retention else {
        debug!("retention is off: delivered messages are kept");
        return;
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(node.config.retention_interval) => {}
        }
        let purge = tokio::select! {
            _ = stop.cancelled() => return,
            purge = node.store.purge_delivered(keep, BATCH, PAUSE, false) => purge,
        };
        match purge {
            Ok(Purge::Done { deleted: 0, .. }) => debug!("retention: nothing to purge"),
            Ok(Purge::Done { deleted, .. }) => {
                info!(deleted, "retention: purged delivered messages")
            }
            Ok(Purge::Busy) => debug!("retention: another node is purging"),
            Err(e) => warn!(error = %e, "retention: purge failed; trying again next interval"),
        }
    }
}
