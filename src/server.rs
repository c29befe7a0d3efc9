//! A node's listeners: the accept loop, the connection limit, PROXY header and TLS, admission, and shutdown.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::Either;
use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::admission::Verdict;
use crate::background;
use crate::node::Node;
use crate::protocol::{Reply, SessionError};
use crate::proxy::{self, Proxied};
use crate::session;
use crate::stats;
use crate::tls::Tls;

/// Opens the listeners: each address in `binds` on `port`, or, with none given, one dual-stack
/// socket on `[::]` (IPv4 and IPv6), falling back to `0.0.0.0` where IPv6 is unavailable.
pub fn bind(binds: &[IpAddr], port: u16) -> io::Result<Vec<TcpListener>> {
    if binds.is_empty() {
        let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        return match listen(any6, true) {
            Ok(listener) => Ok(vec![listener]),
            Err(e) => {
                warn!(error = %e, "no IPv6 here; listening on IPv4 only");
                Ok(vec![listen(SocketAddr::from(([0, 0, 0, 0], port)), false)?])
            }
        };
    }
    binds
        .iter()
        .map(|ip| listen(SocketAddr::new(*ip, port), false))
        .collect()
}

fn listen(addr: SocketAddr, dual_stack: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(!dual_stack)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    // Room for a reconnect storm (10,000 clients at once after a node restart); the kernel caps it
    // at net.core.somaxconn.
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Runs the node on `listeners` until `shutdown` is cancelled, then drains its sessions.
pub async fn run(listeners: Vec<TcpListener>, node: Arc<Node>, shutdown: CancellationToken) {
    run_with_tls(listeners, Vec::new(), node, shutdown).await
}

/// Like [`run`], with `tls_listeners` speaking the same protocol inside TLS (`node.tls`).
pub async fn run_with_tls(
    listeners: Vec<TcpListener>,
    tls_listeners: Vec<TcpListener>,
    node: Arc<Node>,
    shutdown: CancellationToken,
) {
    let background = CancellationToken::new();
    let tasks = background::spawn(&node, &background);

    let sessions = node.sessions.clone();
    let permits = node.connections.clone();
    let acceptors = TaskTracker::new();
    let plain = listeners.into_iter().map(|l| (l, false));
    let tls = tls_listeners.into_iter().map(|l| (l, true));
    for (listener, tls) in plain.chain(tls) {
        if let Ok(addr) = listener.local_addr() {
            let what = if tls { "listening (TLS)" } else { "listening" };
            info!(addr = %addr, node_id = %node.config.node_id, "{what}");
        }
        acceptors.spawn(accept_loop(
            listener,
            tls,
            node.clone(),
            permits.clone(),
            sessions.clone(),
            shutdown.clone(),
        ));
    }
    acceptors.close();
    acceptors.wait().await;
    node.start_draining();
    // Established sessions hear it through their signals; those in their handshake through
    // `shutdown`, and those in between when they register.
    node.registry.close();

    info!(
        sessions = sessions.len(),
        "shutting down: saying goodbye to every session"
    );
    sessions.close();
    if tokio::time::timeout(node.config.shutdown_timeout, sessions.wait())
        .await
        .is_err()
    {
        warn!(
            left = sessions.len(),
            "shutdown timeout: closing the remaining sessions"
        );
    }
    background.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
    node.store.clone().close().await;
    info!("stopped");
}

async fn accept_loop(
    listener: TcpListener,
    tls: bool,
    node: Arc<Node>,
    permits: Arc<Semaphore>,
    sessions: TaskTracker,
    shutdown: CancellationToken,
) {
    let inherited = tune_listener(&listener);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning; sessions that end free descriptors.
                error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !inherited {
            tune(&stream);
        }
        // Taken here, so that connections still in their PROXY header or TLS handshake count too.
        let permit = permits.clone().try_acquire_owned().ok();
        sessions.spawn(connection(
            stream,
            peer,
            tls,
            permit,
            node.clone(),
            shutdown.clone(),
        ));
    }
}

/// One accepted connection's task: its PROXY header (`--proxy-protocol`) and its TLS handshake
/// (TLS listener) first, boxed, within the handshake timeout; a plain connection goes straight
/// to admission, so that its task is no bigger than its session.
fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: bool,
    permit: Option<OwnedSemaphorePermit>,
    node: Arc<Node>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send {
    if !tls && !node.config.proxy_protocol {
        Either::Left(admit(stream, peer, permit, node, shutdown))
    } else {
        Either::Right(Box::pin(unwrap(stream, peer, tls, permit, node, shutdown)))
    }
}

/// The PROXY header and the TLS handshake, before admission.
async fn unwrap(
    mut stream: TcpStream,
    mut peer: SocketAddr,
    tls: bool,
    permit: Option<OwnedSemaphorePermit>,
    node: Arc<Node>,
    shutdown: CancellationToken,
) {
    let limit = node.config.handshake_timeout;
    if node.config.proxy_protocol {
        let header = tokio::select! {
            _ = shutdown.cancelled() => return,
            header = tokio::time::timeout(limit, proxy::read_header(&mut stream)) => header,
        };
        match header {
            Ok(Ok(Proxied::Source(source))) => peer = source,
            Ok(Ok(Proxied::Unknown)) => {}
            Ok(Err(e)) => {
                stats::proxy_header_rejected();
                warn!(peer = %peer, error = %e, "connection closed: no valid PROXY header");
                return;
            }
            Err(_) => {
                stats::proxy_header_rejected();
                warn!(peer = %peer, "connection closed: no PROXY header within the handshake timeout");
                return;
            }
        }
    }
    // Boxed: the session's state does not carry the handshake's, nor the other way round.
    if !tls {
        return Box::pin(admit(stream, peer, permit, node, shutdown)).await;
    }
    let Some(acceptor) = node.tls.as_ref().map(Tls::acceptor) else {
        return;
    };
    let accepted = tokio::select! {
        _ = shutdown.cancelled() => return,
        accepted = tokio::time::timeout(limit, Box::pin(acceptor.accept(stream))) => accepted,
    };
    match accepted {
        Ok(Ok(stream)) => Box::pin(admit(stream, peer, permit, node, shutdown)).await,
        Ok(Err(e)) => {
            stats::handshake("tls_failed");
            debug!(peer = %peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            stats::handshake("tls_failed");
            debug!(peer = %peer, "TLS handshake timed out");
        }
    }
}

/// Refuses a banned, rate-limited or surplus connection with one line; serves the others.
fn admit<S>(
    stream: S,
    peer: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
    node: Arc<Node>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send
where
    S: session::Stream,
{
    let refusal = match node.admission.check_addr(peer.ip()) {
        Verdict::Allow if permit.is_none() => Some(SessionError::ServerFull),
        Verdict::Allow => None,
        Verdict::Banned => Some(SessionError::Banned),
        Verdict::RateLimited => Some(SessionError::RateLimited),
    };
    match refusal {
        Some(why) => {
            drop(permit);
            stats::handshake(stats::refusal(&why));
            debug!(peer = %peer, reason = %why, "connection refused");
            Either::Left(refuse(stream, why))
        }
        None => Either::Right(session::run(stream, peer, permit, node, shutdown)),
    }
}

/// Low latency for small lines, and keepalive probes to find peers that vanished.
fn socket_options(socket: SockRef<'_>) -> io::Result<()> {
    socket.set_tcp_nodelay(true)?;
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(5);
    socket.set_tcp_keepalive(&keepalive)
}

/// The socket options, set once on the listener. Linux copies them into every socket it accepts,
/// which saves five of the twelve system calls a connection cost in a drain. Returns whether the
/// accepted sockets have them that way; if not, the accept loop sets them on each one ([`tune`]).
fn tune_listener(listener: &TcpListener) -> bool {
    match socket_options(SockRef::from(listener)) {
        Ok(()) => cfg!(target_os = "linux"),
        Err(e) => {
            warn!(error = %e, "could not set the socket options on the listener; setting them per connection");
            false
        }
    }
}

/// The socket options of one accepted connection, where the listener's are not inherited.
fn tune(stream: &TcpStream) {
    let _ = socket_options(SockRef::from(stream));
}

/// Answers a connection that is not admitted with one `ERROR:` line, then closes it.
async fn refuse<S: AsyncWrite>(stream: S, why: SessionError) {
    let mut stream = std::pin::pin!(stream);
    let line = Reply::Error(&why).to_bytes();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&line).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the accept loop relies on: a socket accepted from a tuned listener has the options.
    #[tokio::test]
    async fn an_accepted_socket_has_the_listeners_options() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let inherited = tune_listener(&listener);
        assert_eq!(inherited, cfg!(target_os = "linux"));
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        if !inherited {
            tune(&stream);
        }
        let socket = SockRef::from(&stream);
        assert!(socket.tcp_nodelay().unwrap());
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 5);
    }
}
