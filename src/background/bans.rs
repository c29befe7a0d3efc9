//! The cluster-wide bans on a node: loaded from MySQL at start, again on a `chat:bans` broadcast and every `--bans-poll`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::node::Node;
use crate::store::StoreError;

/// Loads the `bans` table into the node's admission control and closes the live sessions of
/// banned clients. Returns the entries loaded.
pub async fn load(node: &Node) -> Result<Vec<String>, StoreError> {
    let entries: Vec<String> = node
        .store
        .bans()
        .await?
        .into_iter()
        .map(|row| row.entry)
        .collect();
    let (count, errors) = node.admission.set_cluster_bans(&entries);
    for error in errors {
        warn!(error = %error, "ignored an entry of the bans table");
    }
    let kicked = node.kick_banned();
    debug!(bans = count, kicked, "cluster bans loaded");
    Ok(entries)
}

type Broadcasts = Pin<Box<dyn Stream<Item = ()> + Send>>;

/// First wait before subscribing again to the ban broadcasts after a failure; doubles up to
/// `RESUBSCRIBE_MAX` (as the node's own channel does, `super::notifications`).
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(2);

/// Keeps the cluster bans current until `stop`: reloads on every broadcast, every poll interval
/// and after every (re)subscription (MySQL is the truth; a lost broadcast only delays a ban until
/// the next poll). A lost subscription is retried with a short backoff, logged once at warn.
pub async fn watch(node: Arc<Node>, stop: CancellationToken) {
    let mut broadcasts: Option<Broadcasts> = None;
    let mut current: Option<Vec<String>> = None;
    let mut backoff = RESUBSCRIBE_MIN;
    let mut retry_at = Instant::now();
    // Whether the loss of the subscription was already logged at warn.
    let mut warned = false;
    let mut reload = true;
    let mut next_poll = Instant::now();
    loop {
        if broadcasts.is_none() && Instant::now() >= retry_at {
            match node.bus.subscribe_bans().await {
                Ok(stream) => {
                    info!("subscribed to ban broadcasts");
                    broadcasts = Some(Box::pin(stream));
                    backoff = RESUBSCRIBE_MIN;
                    warned = false;
                    // Broadcasts sent while unsubscribed are lost: read the table now.
                    reload = true;
                }
                Err(e) => {
                    if warned {
                        debug!(error = %e, retry_in = ?backoff, "cannot subscribe to ban broadcasts");
                    } else {
                        warn!(error = %e, "cannot subscribe to ban broadcasts; polling MySQL and retrying");
                        warned = true;
                    }
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(RESUBSCRIBE_MAX);
                }
            }
        }
        if reload || Instant::now() >= next_poll {
            reload = false;
            next_poll = Instant::now() + node.config.bans_poll;
            match load(&node).await {
                Ok(entries) => {
                    if current.as_ref() != Some(&entries) {
                        if current.is_some() {
                            info!(bans = entries.len(), "cluster bans changed");
                        }
                        current = Some(entries);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "could not load the cluster bans; the previous ones stay")
                }
            }
        }
        let subscribed = broadcasts.is_some();
        let next = async {
            match broadcasts.as_mut() {
                Some(stream) => stream.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next_poll) => {}
            _ = tokio::time::sleep_until(retry_at), if !subscribed => {}
            got = next => match got {
                Some(()) => reload = true,
                None => {
                    warn!("lost the ban broadcast subscription; resubscribing");
                    warned = true;
                    broadcasts = None;
                    backoff = RESUBSCRIBE_MIN;
                    retry_at = Instant::now();
                }
            },
        }
    }
}
