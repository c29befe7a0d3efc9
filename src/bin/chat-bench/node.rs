//! The `chat-server` processes a benchmark starts: spawn, wait until listening, stop or kill.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use chat::config::ServiceUrls;

/// A `chat-server` process started for the benchmark.
pub struct Node {
    child: Child,
    pub addr: SocketAddr,
    pub pid: u32,
}

impl Node {
    /// A node named after this benchmark process.
    pub async fn start(urls: &ServiceUrls) -> Result<Node> {
        Node::start_named(urls, &format!("bench-{}", std::process::id()), &[]).await
    }

    /// A node with id `node_id` and `extra` flags.
    pub async fn start_named(urls: &ServiceUrls, node_id: &str, extra: &[&str]) -> Result<Node> {
        let exe = sibling("chat-server")?;
        let mut child = Command::new(exe)
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--log-format",
                "json",
                "--log-level",
                "warn,chat::server=info",
            ])
            .args([
                "--database-url",
                &urls.database_url,
                "--redis-url",
                &urls.redis_url,
            ])
            .args(["--node-id", node_id, "--max-connections", "20000"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("start chat-server")?;
        let pid = child.id().ok_or_else(|| anyhow!("chat-server exited"))?;
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let port = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.split("\"addr\":\"").nth(1) {
                    let addr = rest.split('"').next().unwrap_or_default();
                    return Ok::<u16, anyhow::Error>(
                        addr.rsplit(':').next().unwrap_or("").parse()?,
                    );
                }
                eprintln!("chat-server: {line}");
            }
            bail!("chat-server exited before listening")
        })
        .await
        .context("chat-server did not start within 60 s")??;
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Node {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            pid,
        })
    }

    /// SIGTERM, then waits (bounded) for the graceful exit.
    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .arg(self.pid.to_string())
            .status()
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
    }

    /// SIGKILL: a crash.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A binary next to this one.
pub fn sibling(name: &str) -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found (build all binaries: cargo build --release --bins)",
            path.display()
        );
    }
    Ok(path)
}
