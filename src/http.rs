//! The operations port (`--metrics-addr`): `/metrics`, `/healthz` and `/readyz` over minimal HTTP/1.
//!
//! One request per connection (`Connection: close`), a request head of at most 8 KiB read within
//! 1 s, at most 512 connections at once: slow or idle connections hold a slot for at most 1 s, so
//! a health check waits at most about that long for one even under a flood of them, well inside
//! HAProxy's 3 s check timeout (deploy/haproxy.cfg).

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::node::Node;
use crate::stats;

/// Longest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// Time to read the request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(1);
/// Time to write the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 512;
/// How long `/readyz` waits for MySQL and Redis, probed at the same time: one budget for both.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// Serves the operations port until the process exits.
pub async fn serve(listener: TcpListener, node: Arc<Node>, metrics: PrometheusHandle) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "metrics port: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (node, metrics) = (node.clone(), metrics.clone());
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &node, &metrics).await {
                debug!(error = %e, "metrics port: request failed");
            }
            drop(permit);
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    node: &Node,
    metrics: &PrometheusHandle,
) -> std::io::Result<()> {
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"))??;
    let request = request_path(&head);
    let head_only = matches!(request, Ok((Method::Head, _)));
    let (status, content_type, body) = match request.map(|(_, path)| path) {
        Err(status) => (status, "text/plain", format!("{status}\n")),
        Ok("/metrics") => {
            stats::parked(node.park.len());
            ("200 OK", "text/plain; version=0.0.4", metrics.render())
        }
        Ok("/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
        Ok("/readyz") => match ready(node).await {
            Ok(()) => ("200 OK", "text/plain", "ready\n".to_string()),
            Err(why) => ("503 Service Unavailable", "text/plain", format!("{why}\n")),
        },
        Ok(_) => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    // A HEAD answer has the headers of the GET answer and no body (RFC 9110, 9.3.2).
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{}",
        body.len(),
        if head_only { "" } else { body.as_str() }
    );
    tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(response.as_bytes()))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))??;
    let _ = stream.shutdown().await;
    Ok(())
}

/// Reads up to the blank line that ends the request head (at most `MAX_REQUEST` bytes).
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(head);
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(head);
        }
        if head.len() > MAX_REQUEST {
            return Ok(head);
        }
    }
}

/// The methods answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
}

/// The method and path of a `GET` or `HEAD` request, or the status to answer.
fn request_path(head: &[u8]) -> Result<(Method, &str), &'static str> {
    if head.len() > MAX_REQUEST {
        return Err("431 Request Header Fields Too Large");
    }
    let line_end = head
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("400 Bad Request")?;
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| "400 Bad Request")?;
    let mut words = line.trim_end_matches('\r').split(' ');
    let (method, target, version) = (words.next(), words.next(), words.next());
    if !version.is_some_and(|v| v.starts_with("HTTP/1.")) || words.next().is_some() {
        return Err("400 Bad Request");
    }
    let method = match method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        _ => return Err("405 Method Not Allowed"),
    };
    let target = target.ok_or("400 Bad Request")?;
    Ok((method, target.split('?').next().unwrap_or(target)))
}

/// Ready: not shutting down, not at `--max-connections`, MySQL and Redis answer (both probed at
/// once, within `PROBE_TIMEOUT` in all).
async fn ready(node: &Node) -> Result<(), &'static str> {
    if node.draining() {
        return Err("shutting down");
    }
    if node.full() {
        return Err("at --max-connections");
    }
    let (mysql, redis) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, node.store.ping()),
        tokio::time::timeout(PROBE_TIMEOUT, node.bus.ping()),
    );
    match (mysql, redis) {
        (Ok(Ok(())), Ok(Ok(()))) => Ok(()),
        (Ok(Ok(())), _) => Err("Redis unreachable"),
        (_, Ok(Ok(()))) => Err("MySQL unreachable"),
        _ => Err("MySQL and Redis unreachable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_are_parsed() {
        assert_eq!(
            request_path(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok((Method::Get, "/metrics"))
        );
        assert_eq!(
            request_path(b"GET /readyz?x=1 HTTP/1.0\r\n\r\n"),
            Ok((Method::Get, "/readyz"))
        );
        assert_eq!(
            request_path(b"HEAD /healthz HTTP/1.1\r\n\r\n"),
            Ok((Method::Head, "/healthz"))
        );
        assert_eq!(
            request_path(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Err("405 Method Not Allowed")
        );
        assert_eq!(
            request_path(b"GET /metrics\r\n\r\n"),
            Err("400 Bad Request")
        );
        assert_eq!(request_path(b"garbage"), Err("400 Bad Request"));
        assert_eq!(
            request_path(&vec![b'a'; MAX_REQUEST + 1]),
            Err("431 Request Header Fields Too Large")
        );
    }
}
