//! A node: its listeners and accept loop, the background tasks (notifications, sweep, leases), and shutdown.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use socket2::{Domain, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::admission::{Admission, Verdict};
use crate::batcher::{Batcher, Claims, Cursors, Fetches};
use crate::bus::{Bus, Note, Owner};
use crate::config::NodeConfig;
use crate::protocol::{Reply, SessionError};
use crate::proxy::{self, Proxied};
use crate::registry::Registry;
use crate::session;
use crate::stats;
use crate::store::{self, Store};
use crate::tls::Tls;
use crate::{bans, retention};

/// Everything the sessions of one node share.
pub struct Node {
    pub config: NodeConfig,
    pub store: Store,
    pub bus: Bus,
    pub registry: Registry,
    pub admission: Admission,
    /// Claims clients for many new sessions per transaction.
    pub claims: Batcher<Claims>,
    /// Reads pending messages for many sessions per statement.
    pub fetches: Batcher<Fetches>,
    /// Writes the cursors of many sessions per statement.
    pub cursors: Batcher<Cursors>,
    /// Asks the sweeper for a sweep now (after a Redis resubscription, notifications may be lost).
    sweep_now: Notify,
    /// Asks for the leases to be written now (after Redis came back, possibly without its keys).
    renew_now: Notify,
    /// Asks for the heartbeat to be written now (same reason).
    heartbeat_now: Notify,
    /// The certificate of the TLS listeners, if any.
    pub tls: Option<Tls>,
    /// Set when a graceful shutdown begins: `/readyz` answers 503 from then on.
    draining: AtomicBool,
    /// One permit per connection up to `--max-connections` (shared by every listener).
    connections: Arc<Semaphore>,
}

impl Node {
    pub fn new(config: NodeConfig, store: Store, bus: Bus, admission: Admission) -> Node {
        Node {
            claims: Batcher::spawn(Claims {
                store: store.clone(),
                node: config.node_id.clone(),
            }),
            fetches: Batcher::spawn(Fetches(store.clone())),
            cursors: Batcher::spawn(Cursors(store.clone())),
            store,
            bus,
            registry: Registry::new(),
            admission,
            sweep_now: Notify::new(),
            renew_now: Notify::new(),
            heartbeat_now: Notify::new(),
            tls: None,
            draining: AtomicBool::new(false),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            config,
        }
    }

    /// Marks the node as shutting down, for `/readyz` (load balancers stop sending clients).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether every connection slot (`--max-connections`) is taken: new connections get
    /// `ERROR: server full`, so `/readyz` answers 503.
    pub fn full(&self) -> bool {
        self.connections.available_permits() == 0
    }

    /// Whether a graceful shutdown has begun.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Re-reads the TLS certificate and key (SIGHUP); on error the previous ones stay in use.
    pub fn reload_tls(&self) {
        let Some(tls) = &self.tls else { return };
        match tls.reload() {
            Ok(()) => {
                stats::tls_reload(true);
                info!("TLS certificate reloaded");
            }
            Err(e) => {
                stats::tls_reload(false);
                error!(error = %e, "TLS certificate not reloaded; the previous one stays");
            }
        }
    }

    /// Re-reads the ban list (SIGHUP) and closes the live sessions of banned clients.
    pub fn reload_bans(&self) {
        match self.admission.reload() {
            Ok(entries) => {
                let kicked = self.kick_banned();
                info!(entries, kicked, "ban list reloaded");
            }
            Err(e) => error!(error = %e, "ban list not reloaded; the previous one stays"),
        }
    }

    /// Closes the live sessions of banned clients (after any change of the bans); returns how many.
    pub fn kick_banned(&self) -> usize {
        self.admission
            .banned_clients()
            .into_iter()
            .filter(|id| self.registry.ban(*id))
            .count()
    }
}

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
    let tasks = TaskTracker::new();
    tasks.spawn(listen_notifications(node.clone(), background.clone()));
    tasks.spawn(sweep(node.clone(), background.clone()));
    tasks.spawn(renew_leases(node.clone(), background.clone()));
    tasks.spawn(heartbeat(node.clone(), background.clone()));
    tasks.spawn(bans::watch(node.clone(), background.clone()));
    tasks.spawn(retention::run(node.clone(), background.clone()));
    tasks.close();

    let sessions = TaskTracker::new();
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
        tune(&stream);
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

/// One accepted connection: its PROXY header (`--proxy-protocol`), its TLS handshake (TLS
/// listener), both within the handshake timeout, then admission and the session.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: bool,
    permit: Option<OwnedSemaphorePermit>,
    node: Arc<Node>,
    shutdown: CancellationToken,
) {
    if !tls && !node.config.proxy_protocol {
        return admit(stream, peer, permit, node, shutdown).await;
    }
    // Boxed: a plain connection's task then carries none of this state.
    Box::pin(unwrap(stream, peer, tls, permit, node, shutdown)).await
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
async fn admit<S>(
    stream: S,
    peer: SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
    node: Arc<Node>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let refusal = match node.admission.check_addr(peer.ip()) {
        Verdict::Allow if permit.is_none() => Some(SessionError::ServerFull),
        Verdict::Allow => None,
        Verdict::Banned => Some(SessionError::Banned),
        Verdict::RateLimited => Some(SessionError::RateLimited),
    };
    if let Some(why) = refusal {
        drop(permit);
        stats::handshake(stats::refusal(&why));
        debug!(peer = %peer, reason = %why, "connection refused");
        return refuse(stream, why).await;
    }
    session::run(stream, peer, node, shutdown).await;
    drop(permit);
}

/// Low latency for small lines, and keepalive probes to find peers that vanished.
fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(5);
    let _ = SockRef::from(stream).set_tcp_keepalive(&keepalive);
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

/// Receives this node's notifications from Redis; resubscribes with backoff when Redis goes away.
async fn listen_notifications(node: Arc<Node>, stop: CancellationToken) {
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
                node.sweep_now.notify_one();
                node.renew_now.notify_one();
                node.heartbeat_now.notify_one();
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

/// The safety net that needs no Redis: every interval, asks MySQL which local clients have
/// pending messages (wakes them) and which were claimed by a newer session (kicks them).
async fn sweep(node: Arc<Node>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(node.config.sweep_interval) => {}
            _ = node.sweep_now.notified() => {}
        }
        let sessions = node.registry.snapshot();
        if sessions.is_empty() {
            stats::pending(0);
            continue;
        }
        let ids: Vec<_> = sessions.iter().map(|(id, _)| *id).collect();
        let (mut woken, mut kicked) = (0usize, 0usize);
        let (mut pending, mut found) = (0u64, 0u64);
        // Chunk by chunk, so that one failed query skips only its own sessions.
        for chunk in ids.chunks(store::SWEEP_CHUNK) {
            let rows = match node.store.sweep(chunk).await {
                Ok(rows) => rows,
                Err(e) => {
                    warn!(error = %e, sessions = chunk.len(), "sweep could not read MySQL");
                    continue;
                }
            };
            for row in rows {
                if node.registry.kick(row.client_id, row.epoch) {
                    kicked += 1;
                } else {
                    pending += row.pending;
                    if row.has_pending && node.registry.wake(row.client_id) {
                        woken += 1;
                        found += row.pending;
                    }
                }
            }
        }
        stats::pending(pending);
        stats::sweep(found);
        debug!(sessions = ids.len(), woken, kicked, "sweep done");
    }
}

/// Keeps `chat:alive:<node>` in Redis while this node runs, so that a new session of a client
/// whose previous session was here can tell a live node (wait for its handoff) from a dead one.
async fn heartbeat(node: Arc<Node>, stop: CancellationToken) {
    let ttl = node.config.node_ttl;
    loop {
        if let Err(e) = node.bus.heartbeat(&node.config.node_id, ttl).await {
            warn!(error = %e, "could not send the heartbeat to Redis");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(ttl / 5) => {}
            _ = node.heartbeat_now.notified() => {}
        }
    }
}

/// Renews the Redis ownership lease of every local session, every third of the lease.
async fn renew_leases(node: Arc<Node>, stop: CancellationToken) {
    let every = node.config.lease / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
            _ = node.renew_now.notified() => {}
        }
        let sessions: Vec<_> = node
            .registry
            .snapshot()
            .into_iter()
            .map(|(id, epoch)| {
                let owner = Owner {
                    node: node.config.node_id.clone(),
                    epoch,
                };
                (id, owner)
            })
            .collect();
        for chunk in sessions.chunks(1000) {
            if let Err(e) = node.bus.renew(chunk, node.config.lease).await {
                warn!(error = %e, "could not renew Redis leases");
                break;
            }
        }
    }
}
