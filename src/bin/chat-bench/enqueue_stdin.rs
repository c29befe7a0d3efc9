//! The `--stdin` workload: how many messages per second `chat-enqueue --stdin` stores from a pipe.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Result};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use chat::config::ServiceUrls;

use super::client::register;
use super::node::sibling;
use super::params::Params;
use super::report::Row;

/// Pipes `stdin_messages` lines spread over `stdin_clients` clients into one `chat-enqueue
/// --stdin` (default batch size) and times it from spawn to exit.
pub async fn run(addr: SocketAddr, params: &Params, urls: &ServiceUrls) -> Result<Vec<Row>> {
    let ids = register(addr, params.stdin_clients.max(1)).await?;
    let mut input = Vec::with_capacity(params.stdin_messages * 64);
    for n in 0..params.stdin_messages {
        let id = ids[n % ids.len()];
        input.extend_from_slice(format!("{id}\tstdin message {n}\n").as_bytes());
    }
    let exe = sibling("chat-enqueue")?;
    let start = Instant::now();
    let mut child = Command::new(&exe)
        .args([
            "--database-url",
            &urls.database_url,
            "--redis-url",
            &urls.redis_url,
            "--stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = tokio::spawn(async move {
        stdin.write_all(&input).await?;
        stdin.shutdown().await
    });
    let out = child.wait_with_output().await?;
    let secs = start.elapsed().as_secs_f64();
    writer.await??;
    if !out.status.success() {
        bail!(
            "chat-enqueue --stdin failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rate = params.stdin_messages as f64 / secs;
    Ok(vec![Row::new(
        "chat",
        "enqueue-stdin",
        "msgs_per_sec",
        rate,
        "msg/s",
    )
    .note(format!(
        "{} lines over {} offline clients, batches of 5000, process start to exit {secs:.2} s",
        params.stdin_messages,
        ids.len()
    ))])
}
