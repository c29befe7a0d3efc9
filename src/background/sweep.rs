//! The safety net that needs no Redis: every `--sweep-interval`, MySQL says which local sessions have pending messages or were taken over.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::node::Node;
use crate::stats;
use crate::store;

/// The safety net that needs no Redis: every interval, asks MySQL which local clients have
/// pending messages (wakes them) and which were claimed by a newer session (kicks them).
pub async fn run(node: Arc<Node>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(node.config.sweep_interval) => {}
            _ = node.nudges.sweep.notified() => {}
        }
        let sessions = node.registry.snapshot();
        if sessions.is_empty() {
            stats::pending(0);
            continue;
        }
        let ids: Vec<_> = sessions.iter().map(|(id, _)| *id).collect();
        let (mut woken, mut kicked) = (0usize, 0usize);
        let (mut pending, mut found) = (0u64, 0u64);
        // Chunk by chunk, so that one failed query skips only its own sessions.
        for chunk in ids.chunks(store::SWEEP_CHUNK) {
            let rows = match node.store.sweep(chunk).await {
                Ok(rows) => rows,
                Err(e) => {
                    warn!(error = %e, sessions = chunk.len(), "sweep could not read MySQL");
                    continue;
                }
            };
            for row in rows {
                if node.registry.kick(row.client_id, row.epoch) {
                    kicked += 1;
                } else {
                    pending += row.pending;
                    if row.has_pending && node.registry.wake(row.client_id) {
                        woken += 1;
                        found += row.pending;
                    }
                }
            }
        }
        stats::pending(pending);
        stats::sweep(found);
        debug!(sessions = ids.len(), woken, kicked, "sweep done");
    }
}
