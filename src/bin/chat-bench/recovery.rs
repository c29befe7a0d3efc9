//! The recovery workload: a node holding a client is killed (`kill -9`); the client reconnects to another node; time to its first pending message.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hdrhistogram::Histogram;
use tokio::io::AsyncBufReadExt;

use chat::config::ServiceUrls;

use super::client::Client;
use super::node::Node;
use super::params::Params;
use super::report::Row;

/// Bound on one reconnect's wait for its message.
const WAIT: Duration = Duration::from_secs(60);

/// `recovery_rounds` times: a client connects to node A, A is killed, one message is enqueued, the
/// client reconnects to node B (default settings) and reads its first line after `SET_CLIENT_ID`.
/// Reports the time from the reconnect to that message, and from the kill to it.
pub async fn run(params: &Params, urls: &ServiceUrls) -> Result<Vec<Row>> {
    let tag = std::process::id();
    let b = Node::start_named(urls, &format!("bench-rec-b-{tag}"), &[]).await?;
    let enqueuer = super::chat_side::enqueuer(urls, 1).await?;
    let mut from_reconnect = Histogram::<u64>::new(3)?;
    let mut from_kill = Histogram::<u64>::new(3)?;
    let mut notices = 0;
    for round in 0..params.recovery_rounds.max(1) {
        let a = Node::start_named(urls, &format!("bench-rec-a-{tag}-{round}"), &[]).await?;
        let held = Client::connect(a.addr, "NONE").await?;
        let id = held.id;
        a.kill().await;
        let killed = Instant::now();
        enqueuer.enqueue(id, "after the crash").await?;
        let reconnect = Instant::now();
        let mut c = Client::connect(b.addr, &id.to_string()).await?;
        let mut line = String::new();
        loop {
            line.clear();
            if tokio::time::timeout(WAIT, c.reader.read_line(&mut line)).await?? == 0 {
                bail!("node B closed the reconnected session");
            }
            if line.starts_with("NOTICE:") {
                notices += 1;
                continue;
            }
            if line.trim_end() != "MESSAGE: after the crash" {
                bail!("unexpected line {line:?}");
            }
            break;
        }
        from_reconnect.record(reconnect.elapsed().as_micros() as u64)?;
        from_kill.record(killed.elapsed().as_micros() as u64)?;
        drop(held);
    }
    b.stop().await;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let note = format!(
        "{} rounds, default --node-ttl 5 s; NOTICE lines seen: {notices}; max {:.1} ms",
        from_reconnect.len(),
        from_reconnect.max() as f64 / 1000.0
    );
    Ok(vec![
        Row::new(
            "chat",
            "recovery",
            "reconnect -> first message p50",
            ms(&from_reconnect, 0.5),
            "ms",
        )
        .note(note),
        Row::new(
            "chat",
            "recovery",
            "reconnect -> first message max",
            from_reconnect.max() as f64 / 1000.0,
            "ms",
        ),
        Row::new(
            "chat",
            "recovery",
            "kill -9 -> first message p50",
            ms(&from_kill, 0.5),
            "ms",
        ),
    ])
}
