//! The cluster-wide bans on a node: loaded from MySQL at start, again on a `chat:bans` broadcast and every `--bans-poll`.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::server::Node;
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

/// Keeps the cluster bans current until `stop`: reloads on every broadcast and every poll
/// interval (MySQL is the truth; a lost broadcast only delays a ban until the next poll).
pub async fn watch(node: Arc<Node>, stop: CancellationToken) {
    let mut broadcasts: Option<Broadcasts> = None;
    let mut current: Option<Vec<String>> = None;
    loop {
        if broadcasts.is_none() {
            match node.bus.subscribe_bans().await {
                Ok(stream) => {
                    info!("subscribed to ban broadcasts");
                    broadcasts = Some(Box::pin(stream));
                }
                Err(e) => debug!(error = %e, "cannot subscribe to ban broadcasts; polling only"),
            }
        }
        match load(&node).await {
            Ok(entries) => {
                if current.as_ref() != Some(&entries) {
                    if current.is_some() {
                        info!(bans = entries.len(), "cluster bans changed");
                    }
                    current = Some(entries);
                }
            }
            Err(e) => warn!(error = %e, "could not load the cluster bans; the previous ones stay"),
        }
        let next = async {
            match broadcasts.as_mut() {
                Some(stream) => stream.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(node.config.bans_poll) => {}
            got = next => {
                if got.is_none() {
                    warn!("lost the ban broadcast subscription; resubscribing");
                    broadcasts = None;
                }
            }
        }
    }
}
