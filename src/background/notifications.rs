//! This node's Redis subscription: its own channel (wakes, kicks, private-room posts) and the channels of the rooms its sessions are in; resubscribed with backoff.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bus::{From, Listener, Note};
use crate::node::Node;
use crate::stats;

/// Receives this node's notifications from Redis and keeps its room subscriptions in step with
/// the hub; resubscribes with backoff when Redis goes away.
pub async fn run(node: Arc<Node>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        match node.bus.subscribe(&node.config.node_id).await {
            Ok((mut listener, notes)) => {
                info!("subscribed to this node's channel");
                if !std::mem::take(&mut first) {
                    stats::redis_reconnected();
                }
                backoff = Duration::from_millis(100);
                // A new connection listens to no room yet: the hub lists them all again.
                node.hub.connected(true);
                // Anything published while we were not subscribed is lost: look in MySQL now. And
                // a Redis that restarted lost the leases and the heartbeat: write them again, so
                // that enqueuers find this node, and other nodes see it alive, at once.
                node.nudges.sweep.notify_one();
                node.nudges.renew.notify_one();
                node.nudges.heartbeat.notify_one();
                let mut notes = std::pin::pin!(notes);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        note = notes.next() => match note {
                            Some((from, Some(note))) => handle(&node, from, note),
                            Some((_, None)) => warn!("ignored a malformed notification"),
                            None => break,
                        },
                        _ = node.hub.changes() => {
                            if !listen(&node, &mut listener).await {
                                break;
                            }
                        }
                    }
                }
                node.hub.connected(false);
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

/// Subscribes to the rooms the hub now wants and unsubscribes from the others; `false` when
/// Redis failed (the connection is then given up and made again).
async fn listen(node: &Node, listener: &mut Listener) -> bool {
    let (on, off) = node.hub.pending_changes();
    let result = async {
        listener.listen(&on).await?;
        listener.unlisten(&off).await
    }
    .await;
    match result {
        Ok(()) => {
            node.hub.applied(&on, &off);
            true
        }
        Err(e) => {
            warn!(error = %e, "could not change the room subscriptions");
            node.hub.retry(&on);
            node.hub.retry(&off);
            false
        }
    }
}

fn handle(node: &Node, from: From, note: Note) {
    match note {
        Note::Wake(ids) => {
            stats::notifications(ids.len());
            for id in ids {
                node.registry.wake(id);
            }
        }
        Note::Kick(id, epoch) => {
            node.registry.kick(id, epoch);
        }
        Note::Carry(messages) => {
            stats::notifications(messages.len());
            for m in messages {
                let client = m.client;
                node.registry.carry(
                    client,
                    crate::store::Pending::carried(m.seq, m.id, m.body, m.at_us),
                );
            }
        }
        Note::Post(post) => {
            stats::notifications(1);
            let to = post.to;
            let known = node.hub.posted(Arc::new(post.message));
            // A private room this node's session of `to` has not loaded yet (it is new).
            if let (false, Some(to), From::Node) = (known, to, from) {
                node.registry.wake_reload(to);
            }
        }
    }
}
