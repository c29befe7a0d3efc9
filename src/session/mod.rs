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

mod deliver;
mod handshake;
mod rooms;
mod round;

use crate::bus::Owner;
use crate::chat::{self, ChatState, Ctx, Effect};
use crate::codec::{LineCodec, LineError};
use crate::delivery::Cursor;
use crate::node::Node;
use crate::protocol::chat_reply::write_help;
use crate::protocol::{self, ByeReason, Command, Reply, SessionError};
use crate::registry::{Registration, Woken};
use crate::stats;

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
            chat: None,
            streams: None,
            rooms_wanted: false,
            recording: None,
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
    /// What the chat commands keep (made at the first one).
    chat: Option<Box<ChatState>>,
    /// The client's rooms (loaded once the session holds the delivery right).
    streams: Option<Box<rooms::Streams>>,
    /// The rooms must be loaded (again) when the session next delivers.
    rooms_wanted: bool,
    /// The write of the rooms' cursors under way, if any: the rooms and seqs, and the result.
    recording: Option<Recording>,
}

/// A background write of a session's cursors.
type Recording = tokio::task::JoinHandle<deliver::Recorded>;

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
        let group = u64::from(id.as_bytes()[15]);
        let mut cursor =
            Cursor::new(&claim, window, Instant::now() + config.handoff_timeout).in_group(group);
        // First round: everything pending since the last session, in its own queue and rooms.
        self.rooms_wanted = claim.rooms_version > 0;
        reg.signals.wake_own();
        stats::session_opened();
        let end = match self.flush().await {
            Ok(()) => self.established(&reg, &mut cursor, &shutdown).await,
            Err(end) => end,
        };
        Box::pin(self.finish(&reg, &owner, &mut cursor, &end)).await;
        let rooms = self.streams.as_ref().map_or(0, |s| s.outstanding());
        stats::redelivered(cursor.own.outstanding() + rooms);
        stats::session_closed();
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
                _ = reg.signals.notified() => {
                    let woken = reg.signals.take();
                    Box::pin(self.deliver(reg, cursor, woken)).await.err()
                }
                _ = sleep_until(retry_at.unwrap_or_else(Instant::now)), if retry_at.is_some() => {
                    cursor.retry_at = None;
                    let everything = Woken { own: true, all_rooms: true, ..Woken::default() };
                    Box::pin(self.deliver(reg, cursor, everything)).await.err()
                }
                _ = sleep_until(record_at.unwrap_or_else(Instant::now)), if record_at.is_some() => {
                    Box::pin(self.record(reg, cursor)).await.err()
                }
                done = async { self.recording.as_mut().expect("checked").await },
                    if self.recording.is_some() => {
                    match done {
                        Ok(done) => self.recorded(cursor, done).err(),
                        Err(e) => {
                            // The task was lost (a panic): write again on the next tick.
                            warn!(error = %e, "the record of the cursors was lost; will retry");
                            self.recording = None;
                            cursor.record_failed();
                            None
                        }
                    }
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
            Ok(Command::Help) => write_help(&mut self.out),
            Ok(Command::Disconnect) => {
                self.out_reply(Reply::Bye(ByeReason::Disconnect));
                let _ = self.flush_within(BYE_TIMEOUT).await;
                return Some(End::Disconnect);
            }
            Ok(Command::Ack(id)) => match self.ack(reg, cursor, id) {
                Ok(()) => return None,
                Err(e) => self.out_reply(Reply::Error(&e)),
            },
            Ok(Command::Chat(cmd)) => {
                if cmd.reads_cursors() {
                    // What the client posted counts as read before the counts are read.
                    if let Err(end) = self.record_reads(reg, cursor).await {
                        return Some(end);
                    }
                }
                let send_rate = self.node.config.chat.send_rate;
                let state = self
                    .chat
                    .get_or_insert_with(|| Box::new(ChatState::new(send_rate)));
                let mut effects = Vec::new();
                let mut ctx = Ctx {
                    node: &self.node,
                    me: reg.client_id,
                    ack: cursor.acknowledged(),
                    signals: &reg.signals,
                    state,
                    out: &mut self.out,
                    effects: &mut effects,
                };
                if let Err(e) = chat::apply(&mut ctx, cmd).await {
                    self.out_reply(Reply::Error(&e));
                }
                self.follow(reg, cursor, effects);
            }
            Err(e) => self.out_reply(Reply::Error(&e)),
        }
        self.flush().await.err()
    }

    /// Cleanup, in one place: goodbye line, final cursors, registry, hub, Redis lease.
    async fn finish(&mut self, reg: &Registration, owner: &Owner, cursor: &mut Cursor, end: &End) {
        let reason = match end {
            End::Shutdown => Some(ByeReason::Shutdown),
            End::TakenOver => Some(ByeReason::TakenOver),
            End::Banned => Some(ByeReason::Banned),
            _ => None,
        };
        if let Some(reason) = reason {
            if cursor.acknowledged() {
                self.read_last_acks(reg, cursor).await;
            }
            self.out_reply(Reply::Bye(reason));
            let _ = self.flush_within(BYE_TIMEOUT).await;
        }
        let _ = self.writer.shutdown().await;
        self.node.registry.unregister(reg.client_id, reg.epoch);
        self.leave_rooms(reg);
        // A background record of the cursors first: the release writes the same rows.
        if let Some(recording) = self.recording.take() {
            if let Ok(Ok(done)) = timeout(BYE_TIMEOUT * 10, recording).await {
                let _ = self.recorded(cursor, done);
            }
        }
        if cursor.holding {
            if let Err(e) = self.mark_acks(reg, cursor).await {
                warn!(error = %e, "could not record acknowledgements against deadlines");
            }
            let done = cursor.own.done();
            let rooms = self
                .streams
                .as_ref()
                .map(|s| s.unrecorded())
                .unwrap_or_default();
            if let Err(e) = self
                .node
                .store
                .release_client(
                    reg.client_id,
                    reg.epoch,
                    done,
                    cursor.acknowledged(),
                    &rooms,
                )
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

    /// Follows what a chat command changed: read cursors to move, rooms left.
    fn follow(&mut self, reg: &Registration, cursor: &mut Cursor, effects: Vec<Effect>) {
        if effects.is_empty() {
            return;
        }
        let streams = self.streams.get_or_insert_with(Box::default);
        for effect in effects {
            match effect {
                Effect::Posted(room, seq) => {
                    streams.posted(room, seq);
                    cursor.record_within(rooms::ROOM_RECORD_DELAY);
                }
                Effect::Left(room) => {
                    if streams.remove(room) {
                        self.node.hub.leave(room, &reg.signals);
                    }
                }
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
        if self.out.is_empty() {
            return Ok(());
        }
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
