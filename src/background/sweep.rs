//! The safety net that needs no Redis: every `--sweep-interval`, MySQL says which local sessions have pending messages, new rooms or were taken over, and which local rooms have new posts.

use std::collections::HashMap;
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
        let (mut sessions, mut woken, mut kicked) = (0usize, 0usize, 0usize);
        let (mut pending, mut found) = (0u64, 0u64);
        // List by list, so that a pass holds one list at a time, and one failed query skips only
        // its own sessions.
        for list in node.registry.pass(store::SWEEP_CHUNK) {
            sessions += list.len();
            let ids: Vec<_> = list.iter().map(|s| s.client_id).collect();
            let rows = match node.store.sweep(&ids).await {
                Ok(rows) => rows,
                Err(e) => {
                    warn!(error = %e, sessions = ids.len(), "sweep could not read MySQL");
                    continue;
                }
            };
            let loaded: HashMap<_, _> = list
                .iter()
                .map(|s| (s.client_id, s.rooms_version))
                .collect();
            for row in rows {
                if node.registry.kick(row.client_id, row.epoch) {
                    kicked += 1;
                } else {
                    pending += row.pending;
                    if row.has_pending && node.registry.wake(row.client_id) {
                        woken += 1;
                        found += row.pending;
                    }
                    // Its memberships changed and its session missed the word (a new private
                    // room opened by someone else, say).
                    let seen = loaded.get(&row.client_id).copied().unwrap_or(0);
                    if row.rooms_version > seen {
                        node.registry.wake_reload(row.client_id);
                    }
                }
            }
        }
        if sessions == 0 {
            stats::pending(0);
            continue;
        }
        let rooms = sweep_rooms(&node).await;
        stats::pending(pending);
        stats::sweep(found);
        debug!(sessions, woken, kicked, rooms, "sweep done");
    }
}

/// Reads the heads of the rooms of this node's sessions (one query per 500 rooms); the members of
/// a room with posts the node was not told about are woken. Returns how many rooms were looked at.
async fn sweep_rooms(node: &Node) -> usize {
    let rooms: Vec<_> = node.hub.rooms().into_iter().map(|(id, _)| id).collect();
    for chunk in rooms.chunks(store::SWEEP_CHUNK) {
        match node.store.room_heads(chunk).await {
            Ok(heads) => {
                for (room, head) in heads {
                    node.hub.advance(room, head);
                }
            }
            Err(e) => warn!(error = %e, rooms = chunk.len(), "sweep could not read room heads"),
        }
    }
    rooms.len()
}
