//! This node's Redis channel: wakes for its sessions, kicks of stale ones; resubscribed with backoff.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bus::Note;
use crate::node::Node;
use crate::stats;

/// Receives this node's notifications from Redis; resubscribes with backoff when Redis goes away.
pub async fn run(node: Arc<Node>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        match node.bus.subscribe(&node.config.node_id).await {
            Ok(notes) => {
                info!("subscribed to this node's channel");
                if !std::mem::take(&mut first) {
                    stats::redis_reconnected();
                }
                backoff = Duration::from_millis(100);
                // Anything published while we were not subscribed is lost: look in MySQL now. And
                // a Redis that restarted lost the leases and the heartbeat: write them again, so
                // that enqueuers find this node, and other nodes see it alive, at once.
                node.nudges.sweep.notify_one();
                node.nudges.renew.notify_one();
                node.nudges.heartbeat.notify_one();
                let mut notes = std::pin::pin!(notes);
                loop {
                    let note = tokio::select! {
                        _ = stop.cancelled() => return,
                        note = notes.next() => note,
                    };
                    match note {
                        Some(Some(Note::Wake(ids))) => {
                            stats::notifications(ids.len());
                            for id in ids {
                                node.registry.wake(id);
                            }
                        }
                        Some(Some(Note::Kick(id, epoch))) => {
                            node.registry.kick(id, epoch);
                        }
                        Some(None) => warn!("ignored a malformed notification"),
                        None => break,
                    }
                }
                warn!("lost the Redis subscription; resubscribing");
            }
            Err(e) => warn!(error = %e, retry_in = ?backoff, "cannot subscribe to Redis"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
