//! A Rust producer on the library API: one message with a TTL and a dedupe key, a batch, then
//! waiting for delivery and reading the states back.
//!
//! ```text
//! CHAT_DATABASE_URL=mysql://root@127.0.0.1:13306/chat CHAT_REDIS_URL=redis://127.0.0.1:16379/ \
//!     cargo run --example producer -- <client_id> [<client_id>...]
//! ```
#![forbid(unsafe_code)]

use std::time::Duration;

use chat::bus::Bus;
use chat::enqueue::{Enqueuer, MessageOptions, DEFAULT_MAX_BYTES};
use chat::store::Store;
use chat::ClientId;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let db = std::env::var("CHAT_DATABASE_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/chat".into());
    let redis =
        std::env::var("CHAT_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let clients: Vec<ClientId> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(!clients.is_empty(), "usage: producer <client_id>...");

    let store = Store::new(&db, 4)?;
    // Redis is only the fast path: without it messages are still stored, and delivered later.
    let bus = Bus::connect_with_retries(&redis, 0).await.ok();
    let enqueuer = Enqueuer::new(store, bus, DEFAULT_MAX_BYTES);

    // One message: expires after a minute undelivered; retrying with the same key is safe.
    let options = MessageOptions {
        ttl: Some(Duration::from_secs(60)),
        dedupe_key: Some("example-welcome".into()),
        collapse_key: None,
    };
    let first = enqueuer
        .enqueue_with(clients[0], "welcome (from examples/producer.rs)", &options)
        .await?;
    let retry = enqueuer
        .enqueue_with(clients[0], "welcome (from examples/producer.rs)", &options)
        .await?;
    assert_eq!(first.message_id, retry.message_id);
    println!(
        "message {} stored (the retry was a duplicate: {})",
        first.message_id, retry.duplicate
    );

    // A batch: one transaction for all, one notification per node.
    let items: Vec<(ClientId, &str)> = clients.iter().map(|c| (*c, "batch hello")).collect();
    let (results, _notified) = enqueuer.enqueue_batch(&items).await?;
    let mut ids = vec![first.message_id];
    for result in results {
        ids.push(result?.id);
    }

    // Wait up to 5 s for delivery (or acknowledgement), then print each state.
    for status in enqueuer.wait(&ids, Duration::from_secs(5)).await? {
        println!(
            "message {} to {}: {}",
            status.id,
            status.client_id,
            status.state.as_str()
        );
    }
    enqueuer.close().await;
    Ok(())
}
