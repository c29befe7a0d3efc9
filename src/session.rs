//! One client's life on a node: handshake, then a loop over its commands and its deliveries, then cleanup.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::bus::{Note, Owner};
use crate::codec::{LineCodec, LineError};
use crate::delivery::Cursor;
use crate::protocol::{self, ByeReason, Command, Identity, Reply, SessionError};
use crate::registry::Registration;
use crate::round::{self, Stale};
use crate::server::Node;
use crate::stats;
use crate::store::{Acquire, Claim};
use crate::ClientId;

/// Socket read buffer per connection; a longer line is assembled in the codec, up to `--max-line`.
const READ_BUFFER: usize = 128;
/// How long the goodbye line may take to leave.
const BYE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a session the node ends waits for acknowledgements already on their way.
const LAST_ACKS: Duration = Duration::from_millis(50);

/// Why a session ended.
#[derive(Debug)]
enum End {
    ClientClosed,
    Disconnect,
    Shutdown,
    TakenOver,
    Banned,
    LineTooLong,
    Io(std::io::Error),
    WriteTimeout,
}

/// Serves one accepted connection (plain TCP or TLS) from `peer` until it ends.
pub async fn run<S>(
    stream: S,
    peer: std::net::SocketAddr,
    node: Arc<Node>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let peer = Some(peer);
    let span = tracing::info_span!("session", peer = ?peer, client_id = tracing::field::Empty);
    async move {
        let (read, write) = tokio::io::split(stream);
        let mut session = Session {
            reader: FramedRead::with_capacity(
                read,
                LineCodec::new(node.config.max_line),
                READ_BUFFER,
            ),
            writer: write,
            out: BytesMut::new(),
            peer: peer.map(|p| p.ip()),
            node,
        };
        session.serve(shutdown).await;
    }
    .instrument(span)
    .await
}

struct Session<S> {
    node: Arc<Node>,
    reader: FramedRead<ReadHalf<S>, LineCodec>,
    writer: WriteHalf<S>,
    /// Lines rendered and not yet written.
    out: BytesMut,
    peer: Option<std::net::IpAddr>,
}

impl<S: AsyncRead + AsyncWrite> Session<S> {
    async fn serve(&mut self, shutdown: CancellationToken) {
        self.out_reply(Reply::GetClientId);
        if self.flush().await.is_err() {
            return;
        }
        let (id, claim, ack) = match Box::pin(self.handshake(&shutdown)).await {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(e) => {
                stats::handshake(stats::refusal(&e));
                let _ = self.send_error(&e).await;
                debug!(error = %e, "handshake refused");
                return;
            }
        };
        stats::handshake(if claim.epoch == 1 { "new" } else { "resumed" });
        tracing::Span::current().record("client_id", tracing::field::display(id));
        let reg = self.node.registry.register(id, claim.epoch);
        let owner = Owner {
            node: self.node.config.node_id.clone(),
            epoch: claim.epoch,
        };
        if !reg.kicked.is_cancelled() {
            Box::pin(self.announce(id, &owner)).await;
        }
        self.out_reply(Reply::SetClientId(id));
        info!(epoch = claim.epoch, ack, "session started");
        let config = &self.node.config;
        let window = if ack { Some(config.max_inflight) } else { None };
        let mut cursor = Cursor::new(&claim, window, Instant::now() + config.handoff_timeout);
        // First round: everything pending since the last session.
        reg.wake.notify_one();
        stats::session_opened();
        let end = match self.flush().await {
            Ok(()) => self.established(&reg, &mut cursor, &shutdown).await,
            Err(end) => end,
        };
        Box::pin(self.finish(&reg, &owner, &mut cursor, &end)).await;
        stats::redelivered(cursor.sent.saturating_sub(cursor.done()));
        stats::session_closed();
    }

    /// Reads the answer to `GET_CLIENT_ID` and claims the client. `Ok(None)`: the peer left.
    async fn handshake(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Option<(ClientId, Claim, bool)>, SessionError> {
        let limit = self.node.config.handshake_timeout;
        let line = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            line = timeout(limit, self.reader.next()) => line,
        };
        let line = match line {
            Err(_) => return Err(SessionError::HandshakeTimeout(limit.as_secs())),
            Ok(None) | Ok(Some(Err(LineError::Io(_)))) => return Ok(None),
            Ok(Some(Err(LineError::TooLong(n)))) => return Err(SessionError::LineTooLong(n)),
            Ok(Some(Ok(line))) => line,
        };
        let hello = protocol::parse_hello(&line).inspect_err(|_| self.failed())?;
        if let Identity::Resume(id) = hello.identity {
            if self.node.admission.is_banned(id) {
                return Err(SessionError::Banned);
            }
        }
        let store = &self.node.store;
        let node_id = &self.node.config.node_id;
        // Boxed: a connection waiting for its answer then holds only the small waiting state.
        let claimed = match hello.identity {
            Identity::New => Box::pin(store.create_client(node_id)).await.map(Some),
            Identity::Resume(id) => Box::pin(self.node.claims.call(id))
                .await
                .map(|c| c.map(|claim| (id, claim))),
        };
        match claimed {
            Ok(Some((id, claim))) => Ok(Some((id, claim, hello.ack))),
            Ok(None) => {
                self.failed();
                Err(SessionError::UnknownClient)
            }
            Err(e) => {
                warn!(error = %e, "MySQL unavailable during handshake");
                Err(SessionError::Unavailable)
            }
        }
    }

    /// Counts a failed handshake against the peer's address.
    fn failed(&self) {
        if let Some(ip) = self.peer {
            self.node.admission.failed(ip);
        }
    }

    /// Records this node as the client's holder in Redis and kicks the previous holder elsewhere.
    /// Failures only delay notifications (the sweep still finds pending messages).
    async fn announce(&self, id: ClientId, owner: &Owner) {
        let bus = &self.node.bus;
        match bus.claim(id, owner, self.node.config.lease).await {
            Ok(Some(previous)) if previous.node != owner.node && previous.epoch < owner.epoch => {
                if let Err(e) = bus.send(&previous.node, Note::Kick(id, owner.epoch)).await {
                    warn!(error = %e, node = %previous.node, "could not tell the previous node");
                }
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "could not record ownership in Redis"),
        }
    }

    /// The command/delivery loop of an established session.
    async fn established(
        &mut self,
        reg: &Registration,
        cursor: &mut Cursor,
        shutdown: &CancellationToken,
    ) -> End {
        loop {
            let retry_at = cursor.retry_at;
            let record_at = cursor.record_at;
            let end = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Some(End::Shutdown),
                _ = reg.kicked.cancelled() => {
                    Some(if reg.banned() { End::Banned } else { End::TakenOver })
                }
                // The handlers are boxed: an idle session then keeps only the small waiting state
                // in memory, not the largest handler's (thousands of idle sessions per node).
                line = self.reader.next() => Box::pin(self.on_line(line, reg, cursor)).await,
                _ = reg.wake.notified() => Box::pin(self.deliver(reg, cursor)).await.err(),
                _ = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    cursor.retry_at = None;
                    Box::pin(self.deliver(reg, cursor)).await.err()
                }
                _ = sleep_until(record_at.unwrap_or_else(Instant::now)), if record_at.is_some() => {
                    Box::pin(self.record(reg, cursor)).await.err()
                }
            };
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// Handles one client line; `Some` ends the session.
    async fn on_line(
        &mut self,
        line: Option<Result<bytes::Bytes, LineError>>,
        reg: &Registration,
        cursor: &mut Cursor,
    ) -> Option<End> {
        let line = match line {
            None => return Some(End::ClientClosed),
            Some(Err(LineError::Io(e))) => return Some(End::Io(e)),
            Some(Err(LineError::TooLong(n))) => {
                let _ = self.send_error(&SessionError::LineTooLong(n)).await;
                return Some(End::LineTooLong);
            }
            Some(Ok(line)) => line,
        };
        match protocol::parse_command(&line) {
            Ok(Command::Empty) => return None,
            Ok(Command::Ping) => self.out_reply(Reply::Pong),
            Ok(Command::Disconnect) => {
                self.out_reply(Reply::Bye(ByeReason::Disconnect));
                let _ = self.flush_within(BYE_TIMEOUT).await;
                return Some(End::Disconnect);
            }
            Ok(Command::Ack(id)) => match cursor.ack(id) {
                Ok(window_opened) => {
                    stats::acknowledged();
                    if window_opened {
                        reg.wake.notify_one();
                    }
                    return None;
                }
                Err(e) => self.out_reply(Reply::Error(&e)),
            },
            Err(e) => self.out_reply(Reply::Error(&e)),
        }
        self.flush().await.err()
    }

    /// One delivery round: takes the delivery right if needed, reads the next page of pending
    /// messages from MySQL, writes them, then records the cursor (plain mode). A MySQL failure
    /// schedules a retry; it never ends the session.
    async fn deliver(&mut self, reg: &Registration, cursor: &mut Cursor) -> Result<(), End> {
        if !cursor.holding && !self.take_over(reg, cursor).await? {
            return Ok(());
        }
        let node = self.node.clone();
        let round = match round::take(&node, reg, cursor, &mut self.out).await {
            Ok(round) => round,
            Err(Stale) => return Err(End::TakenOver),
        };
        if round.failed {
            cursor.failed();
        }
        if round.taken.is_empty() {
            return Ok(());
        }
        self.flush().await?;
        if !cursor.acknowledged() {
            round::mark_late_writes(&node, reg, &round.taken).await;
        }
        stats::delivered(&round.taken, cursor.acknowledged());
        cursor.written(&round.taken);
        debug!(count = round.taken.len(), seq = cursor.sent, "written");
        if round.more && !round.failed {
            // More may wait: come back after giving commands and shutdown a turn.
            reg.wake.notify_one();
        }
        self.record(reg, cursor).await
    }

    /// Takes the delivery right from the previous session of this client. `Ok(false)`: not yet
    /// (the previous holder is still finishing); a retry is scheduled.
    async fn take_over(&mut self, reg: &Registration, cursor: &mut Cursor) -> Result<bool, End> {
        let node = &self.node;
        let node_id = &node.config.node_id;
        let mut force = Instant::now() >= cursor.handoff_deadline;
        loop {
            match node
                .store
                .acquire(reg.client_id, reg.epoch, node_id, force)
                .await
            {
                Ok(Acquire::Acquired { delivered_seq }) => {
                    cursor.acquired(delivered_seq);
                    return Ok(true);
                }
                Ok(Acquire::Stale) => return Err(End::TakenOver),
                Ok(Acquire::Busy { holder_node }) if !force => {
                    // A holder on a node that stopped its heartbeat will never release: take over,
                    // once the heartbeat has been missing for a whole node TTL (a live node
                    // rewrites it every fifth of that, also right after Redis comes back), so
                    // that a Redis restart alone does not make a live holder look dead.
                    let missing = match holder_node {
                        Some(holder) => matches!(node.bus.node_alive(&holder).await, Ok(false)),
                        None => true,
                    };
                    if cursor.holder_dead(missing, node.config.node_ttl) {
                        force = true;
                        continue;
                    }
                    cursor.wait_for_handoff();
                    return Ok(false);
                }
                Ok(Acquire::Busy { .. }) => {
                    cursor.wait_for_handoff();
                    return Ok(false);
                }
                Err(e) => {
                    warn!(error = %e, "could not take the delivery right; will retry");
                    cursor.failed();
                    return Ok(false);
                }
            }
        }
    }

    /// Writes the cursor to MySQL if it moved.
    async fn record(&mut self, reg: &Registration, cursor: &mut Cursor) -> Result<(), End> {
        cursor.record_at = None;
        // Acknowledged too late: expired, marked so before the cursor passes them; in time but
        // ahead of the cursor: their deadline taken off.
        if let Err(e) = self.mark_acks(reg, cursor).await {
            warn!(error = %e, "could not record acknowledgements against deadlines; will retry");
            cursor.record_failed();
            return Ok(());
        }
        let Some(done) = cursor.unrecorded() else {
            return Ok(());
        };
        match self
            .node
            .cursors
            .call((reg.client_id, reg.epoch, done, cursor.acknowledged()))
            .await
        {
            Ok(true) => cursor.recorded(done),
            Ok(false) => return Err(End::TakenOver),
            Err(e) => {
                warn!(error = %e, "could not record delivery; will retry");
                cursor.record_failed();
            }
        }
        Ok(())
    }

    /// Cleanup, in one place: goodbye line, final cursor, registry, Redis lease.
    async fn finish(&mut self, reg: &Registration, owner: &Owner, cursor: &mut Cursor, end: &End) {
        let reason = match end {
            End::Shutdown => Some(ByeReason::Shutdown),
            End::TakenOver => Some(ByeReason::TakenOver),
            End::Banned => Some(ByeReason::Banned),
            _ => None,
        };
        if let Some(reason) = reason {
            if cursor.acknowledged() {
                self.read_last_acks(cursor).await;
            }
            self.out_reply(Reply::Bye(reason));
            let _ = self.flush_within(BYE_TIMEOUT).await;
        }
        let _ = self.writer.shutdown().await;
        self.node.registry.unregister(reg.client_id, reg.epoch);
        if cursor.holding {
            if let Err(e) = self.mark_acks(reg, cursor).await {
                warn!(error = %e, "could not record acknowledgements against deadlines");
            }
            let done = cursor.done();
            if let Err(e) = self
                .node
                .store
                .release_client(reg.client_id, reg.epoch, done, cursor.acknowledged())
                .await
            {
                warn!(error = %e, done,
                    "could not record the final cursor; unrecorded messages will be delivered again");
            }
        }
        if let Err(e) = self.node.bus.release(reg.client_id, owner).await {
            debug!(error = %e, "could not release the Redis lease; it will expire");
        }
        match end {
            End::Io(e) => info!(error = %e, "session ended by a socket error"),
            End::WriteTimeout => info!("session ended: client stopped reading"),
            other => info!(reason = ?other, "session ended"),
        }
    }

    /// Acknowledged mode: marks the messages acknowledged after their deadline expired, and takes
    /// the deadline off those acknowledged in time ahead of the cursor.
    async fn mark_acks(
        &self,
        reg: &Registration,
        cursor: &mut Cursor,
    ) -> Result<(), crate::store::StoreError> {
        let store = &self.node.store;
        store.mark_expired(reg.client_id, cursor.late()).await?;
        store.clear_deadlines(reg.client_id, cursor.kept()).await?;
        cursor.acks_marked();
        Ok(())
    }

    /// Before a session the node ends, takes in the acknowledgements the client already sent, so
    /// they are recorded instead of lost (and the messages not delivered again).
    async fn read_last_acks(&mut self, cursor: &mut Cursor) {
        let deadline = Instant::now() + LAST_ACKS;
        while let Ok(Some(Ok(line))) = tokio::time::timeout_at(deadline, self.reader.next()).await {
            if let Ok(Command::Ack(id)) = protocol::parse_command(&line) {
                let _ = cursor.ack(id);
            }
        }
    }

    fn out_reply(&mut self, reply: Reply<'_>) {
        reply.write_to(&mut self.out);
    }

    async fn send_error(&mut self, e: &(dyn std::fmt::Display + Sync)) -> Result<(), End> {
        self.out_reply(Reply::Error(e));
        self.flush_within(BYE_TIMEOUT).await
    }

    async fn flush(&mut self) -> Result<(), End> {
        self.flush_within(self.node.config.write_timeout).await
    }

    /// Writes every rendered line, within `limit`.
    async fn flush_within(&mut self, limit: Duration) -> Result<(), End> {
        let result = timeout(limit, self.writer.write_all(&self.out)).await;
        self.out.clear();
        if self.out.capacity() > 64 * 1024 {
            // Give back a page-sized buffer once it is written.
            self.out = BytesMut::new();
        }
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Io(e)),
            Err(_) => Err(End::WriteTimeout),
        }
    }
}
