//! One client's life on a node: handshake, then a loop over its commands and its deliveries, then cleanup.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::runtime::Handle;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{sleep_until, timeout, Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{debug, info, warn};

mod conn;
mod deliver;
mod handshake;
mod rooms;
mod round;

use self::conn::Conn;
pub use self::conn::Stream;
use crate::bus::Owner;
use crate::chat::{self, ChatState, Ctx, Effect};
use crate::codec::LineCodec;
use crate::codec::LineError;
use crate::delivery::{Cursor, ParkedCursor};
use crate::node::Node;
use crate::park::Parked;
use crate::protocol::chat_reply::write_help;
use crate::protocol::{self, ByeReason, Command, Reply, SessionError};
use crate::registry::{Kick, Registration, Woken};
use crate::stats;

/// How long the goodbye line may take to leave.
const BYE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a session the node ends waits for acknowledgements already on their way.
const LAST_ACKS: Duration = Duration::from_millis(50);

/// What woke an established session.
enum Event {
    /// Its signals: messages to deliver, rooms to load, or a kick.
    Woken,
    Line(Option<Result<bytes::Bytes, LineError>>),
    Timer,
    Recorded(Result<Box<deliver::Recorded>, tokio::task::JoinError>),
}

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

/// Serves one accepted connection (plain TCP or TLS) from `peer` until it ends; `permit` is its
/// connection slot, held as long.
///
/// The handshake, the handlers and the cleanup are boxed while they run. An established session
/// with nothing under way (no timer, no write of its cursors) on plain TCP parks without a task
/// ([`crate::park`]) and gets one again when its socket or its signals wake it.
pub fn run<S: Stream>(
    stream: S,
    peer: std::net::SocketAddr,
    permit: Option<OwnedSemaphorePermit>,
    node: Arc<Node>,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send {
    let session = Session {
        conn: Conn::new(stream, node.config.max_line),
        out: BytesMut::new(),
        peer,
        chat: None,
        streams: None,
        rooms_wanted: false,
        recording: None,
        timer: None,
        _permit: permit,
        node,
    };
    // No tracing span: an enabled one costs every idle session a slot in the subscriber's
    // registry; the session's events name the client and the peer themselves.
    session.serve(shutdown)
}

/// An established session with nothing under way, waiting without a task: its parts, without
/// what is empty while it waits (output, timer, background record, read-ahead), so that the box
/// stays in a small size class.
struct Idle<S> {
    stream: S,
    codec: LineCodec,
    node: Arc<Node>,
    peer: std::net::SocketAddr,
    chat: Option<Box<ChatState>>,
    streams: Option<Box<rooms::Streams>>,
    permit: Option<OwnedSemaphorePermit>,
    reg: Registration,
    cursor: ParkedCursor,
    rooms_wanted: bool,
    /// Keeps a graceful shutdown waiting for the session while it has no task.
    _token: TaskTrackerToken,
}

impl<S: Stream> Idle<S> {
    /// A session about to park, in parts; `Err` gives it back when something in it cannot wait
    /// without a task (then it keeps its task).
    // Both variants are the session moved by value (it is the task's own state); boxing the
    // give-back would allocate on a path `may_park` already rules out.
    #[allow(clippy::result_large_err)]
    fn new(
        session: Session<S>,
        reg: Registration,
        cursor: Cursor,
    ) -> Result<Idle<S>, (Session<S>, Registration, Cursor)> {
        if !session.may_park() {
            return Err((session, reg, cursor));
        }
        let cursor = match cursor.park() {
            Ok(cursor) => cursor,
            Err(cursor) => return Err((session, reg, cursor)),
        };
        let Session {
            node,
            conn,
            peer,
            chat,
            streams,
            rooms_wanted,
            _permit: permit,
            ..
        } = session;
        let (stream, codec) = conn.into_parts();
        let _token = node.sessions.token();
        Ok(Idle {
            stream,
            codec,
            node,
            peer,
            chat,
            streams,
            permit,
            reg,
            cursor,
            rooms_wanted,
            _token,
        })
    }

    /// The session again, with its registration and cursor.
    fn into_session(self) -> (Session<S>, Registration, Cursor) {
        let session = Session {
            node: self.node,
            conn: Conn::from_parts(self.stream, self.codec),
            out: BytesMut::new(),
            peer: self.peer,
            chat: self.chat,
            streams: self.streams,
            rooms_wanted: self.rooms_wanted,
            recording: None,
            timer: None,
            _permit: self.permit,
        };
        (session, self.reg, self.cursor.resume())
    }
}

impl<S: Stream> Parked for Idle<S> {
    fn register(&mut self, cx: &mut Context<'_>) -> bool {
        let readable = self.stream.poll_readable(cx).is_ready();
        let woken = self.reg.signals.watch(cx);
        readable || woken || self.reg.kicked().is_some()
    }

    fn resume(self: Box<Self>, handle: &Handle) {
        let sessions = self.node.sessions.clone();
        let (session, reg, cursor) = self.into_session();
        sessions.spawn_on(session.live(reg, cursor), handle);
    }
}

struct Session<S> {
    node: Arc<Node>,
    conn: Conn<S>,
    /// Lines rendered and not yet written (unallocated between writes).
    out: BytesMut,
    /// The client's address (from the PROXY header behind a proxy).
    peer: std::net::SocketAddr,
    /// What the chat commands keep (made at the first one).
    chat: Option<Box<ChatState>>,
    /// The client's rooms (loaded once the session holds the delivery right).
    streams: Option<Box<rooms::Streams>>,
    /// The rooms must be loaded (again) when the session next delivers.
    rooms_wanted: bool,
    /// The write of the rooms' cursors under way, if any: the rooms and seqs, and the result.
    recording: Option<Recording>,
    /// The next retry or record time, armed only while there is one (an idle session has none).
    timer: Option<Pin<Box<Sleep>>>,
    /// The connection's slot under `--max-connections`.
    _permit: Option<OwnedSemaphorePermit>,
}

/// A background write of a session's cursors.
type Recording = tokio::task::JoinHandle<Box<deliver::Recorded>>;

impl<S: Stream> Session<S> {
    async fn serve(mut self, shutdown: CancellationToken) {
        let Some((reg, cursor, flushed)) = Box::pin(self.start(&shutdown)).await else {
            return;
        };
        drop(shutdown);
        match flushed {
            Ok(()) => Box::pin(self.live(reg, cursor)).await,
            Err(end) => self.end(reg, cursor, end).await,
        }
    }

    /// The established session until it ends. When it has nothing under way it parks, and the
    /// wake that resumes it runs this again in a new task.
    async fn live(mut self, mut reg: Registration, mut cursor: Cursor) {
        let mut parkable = true;
        loop {
            let Some(end) = self.established(&reg, &mut cursor, parkable).await else {
                let park = self.node.park.clone();
                let idle = match Idle::new(self, reg, cursor) {
                    Ok(idle) => idle,
                    Err(back) => {
                        // Something cannot wait without the task after all: this session
                        // waits in it from now on.
                        (self, reg, cursor) = back;
                        parkable = false;
                        continue;
                    }
                };
                match park.park(idle) {
                    Ok(()) => return,
                    // Woken meanwhile: go on here.
                    Err(idle) => {
                        (self, reg, cursor) = idle.into_session();
                        continue;
                    }
                }
            };
            return self.end(reg, cursor, end).await;
        }
    }

    /// The end of a session: its cleanup, then the counts.
    async fn end(mut self, reg: Registration, mut cursor: Cursor, end: End) {
        Box::pin(self.finish(&reg, &mut cursor, &end)).await;
        let rooms = self.streams.as_ref().map_or(0, |s| s.outstanding());
        stats::redelivered(cursor.own.outstanding() + rooms);
        stats::session_closed();
    }

    /// `GET_CLIENT_ID`, the handshake, the registration on this node and the lease in Redis, and
    /// whether `SET_CLIENT_ID` went out; `None` if the session ends before it registers.
    async fn start(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Option<(Registration, Cursor, Result<(), End>)> {
        self.out_reply(Reply::GetClientId);
        self.flush().await.ok()?;
        let (id, claimed, ack) = match self.handshake(shutdown).await {
            Ok(Some(found)) => found,
            Ok(None) => return None,
            Err(e) => {
                stats::handshake(stats::refusal(&e));
                let _ = self.send_error(&e).await;
                debug!(peer = %self.peer, error = %e, "handshake refused");
                return None;
            }
        };
        let claim = claimed.claim;
        stats::handshake(if claim.epoch == 1 { "new" } else { "resumed" });
        let reg = self.node.registry.register(id, claim.epoch);
        if reg.kicked().is_none() {
            let owner = self.owner(claim.epoch);
            self.announce(id, &owner, claimed.lease).await;
        }
        self.out_reply(Reply::SetClientId(id));
        info!(client_id = %id, peer = %self.peer, epoch = claim.epoch, ack, "session started");
        let config = &self.node.config;
        let window = if ack { Some(config.max_inflight) } else { None };
        let group = u64::from(id.as_bytes()[15]);
        let cursor =
            Cursor::new(&claim, window, Instant::now() + config.handoff_timeout).in_group(group);
        // First round: everything pending since the last session, in its own queue and rooms. A
        // new client has nothing yet (nobody knows its id before this line reaches it).
        let new = claim.epoch == 1;
        self.rooms_wanted = claim.rooms_version > 0;
        if !new {
            reg.signals.wake_own();
        }
        stats::session_opened();
        // A session that holds the delivery right runs its first round at once: `SET_CLIENT_ID`
        // leaves with the first page, in one write. One that waits for the previous holder, or
        // has nothing to read, says it now.
        let flushed = if cursor.holding && !new {
            Ok(())
        } else {
            self.flush().await
        };
        Some((reg, cursor, flushed))
    }

    /// The command/delivery loop of an established session. It waits on the socket, the
    /// session's signals (wakes and kicks: takeover, ban, shutdown) and, when one is due, a timer.
    /// `None`: nothing is under way and nothing has come; the session may park.
    async fn established(
        &mut self,
        reg: &Registration,
        cursor: &mut Cursor,
        parkable: bool,
    ) -> Option<End> {
        loop {
            if let Some(kick) = reg.kicked() {
                return Some(match kick {
                    Kick::TakenOver => End::TakenOver,
                    Kick::Banned => End::Banned,
                    Kick::Shutdown => End::Shutdown,
                });
            }
            self.arm_timer(cursor);
            let event = if parkable && self.may_park() {
                match poll_fn(|cx| Poll::Ready(self.poll_event(cx, reg))).await {
                    Poll::Ready(event) => event,
                    Poll::Pending => return None,
                }
            } else {
                poll_fn(|cx| self.poll_event(cx, reg)).await
            };
            let end = match event {
                Event::Woken => {
                    if reg.kicked().is_some() {
                        continue;
                    }
                    let woken = reg.signals.take();
                    // The handlers are boxed: the session's own state stays small.
                    Box::pin(self.deliver(reg, cursor, woken)).await.err()
                }
                Event::Line(line) => Box::pin(self.on_line(line, reg, cursor)).await,
                Event::Timer => Box::pin(self.on_timer(reg, cursor)).await.err(),
                Event::Recorded(Ok(done)) => self.recorded(cursor, *done).err(),
                Event::Recorded(Err(e)) => {
                    // The task was lost (a panic): write again on the next tick.
                    warn!(client_id = %reg.client_id, error = %e,
                        "the record of the cursors was lost; will retry");
                    self.recording = None;
                    cursor.record_failed();
                    None
                }
            };
            if let Some(end) = end {
                return Some(end);
            }
        }
    }

    /// Whether the session may wait without its task: plain TCP, no timer, no write of its
    /// cursors under way, nothing left to write, nothing read ahead.
    fn may_park(&self) -> bool {
        S::PARKS
            && self.timer.is_none()
            && self.recording.is_none()
            && self.out.is_empty()
            && self.conn.parks()
    }

    /// What comes first: a client line, a wake or kick, the timer, the end of the background
    /// record. A hand-written poll (no select state, no wait-list entry).
    fn poll_event(&mut self, cx: &mut Context<'_>, reg: &Registration) -> Poll<Event> {
        // The client's lines first: acknowledgements open the window the next round fills.
        if let Poll::Ready(line) = self.conn.poll_line(cx) {
            return Poll::Ready(Event::Line(line));
        }
        if reg.signals.poll_woken(cx).is_ready() {
            return Poll::Ready(Event::Woken);
        }
        if let Some(timer) = self.timer.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Timer);
            }
        }
        if let Some(recording) = self.recording.as_mut() {
            if let Poll::Ready(done) = Pin::new(recording).poll(cx) {
                return Poll::Ready(Event::Recorded(done));
            }
        }
        Poll::Pending
    }

    /// Sets the timer to the next retry or record time; drops it when there is none.
    fn arm_timer(&mut self, cursor: &Cursor) {
        let next = match (cursor.retry_at, cursor.record_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (next, self.timer.as_mut()) {
            (None, _) => self.timer = None,
            (Some(at), Some(timer)) => {
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
            }
            (Some(at), None) => self.timer = Some(Box::pin(sleep_until(at))),
        }
    }

    /// The timer fired: retry delivering, write the cursors, or both.
    async fn on_timer(&mut self, reg: &Registration, cursor: &mut Cursor) -> Result<(), End> {
        let now = Instant::now();
        if cursor.retry_at.is_some_and(|at| at <= now) {
            cursor.retry_at = None;
            let everything = Woken {
                own: true,
                all_rooms: true,
                ..Woken::default()
            };
            self.deliver(reg, cursor, everything).await?;
        }
        if cursor.record_at.is_some_and(|at| at <= now) {
            self.record(reg, cursor).await?;
        }
        Ok(())
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
            // The goodbye comes once the session's deliveries are recorded (`finish`).
            Ok(Command::Disconnect) => return Some(End::Disconnect),
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

    /// Cleanup, in one place: goodbye line, final cursors, registry, hub, Redis lease. The node
    /// ends the session (shutdown, takeover, ban): the goodbye first. The client does
    /// (`DISCONNECT`): the goodbye last, so that once it reads `BYE: disconnected` its deliveries
    /// are recorded and its delivery right is free for its next session.
    async fn finish(&mut self, reg: &Registration, cursor: &mut Cursor, end: &End) {
        let asked = matches!(end, End::Disconnect);
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
        if !asked {
            let _ = self.conn.shutdown().await;
        }
        self.node.registry.unregister(reg.client_id, reg.epoch);
        self.leave_rooms(reg);
        // A background record of the cursors first: the release writes the same rows.
        if let Some(recording) = self.recording.take() {
            if let Ok(Ok(done)) = timeout(BYE_TIMEOUT * 10, recording).await {
                let _ = self.recorded(cursor, *done);
            }
        }
        if cursor.holding {
            if let Err(e) = self.mark_acks(reg, cursor).await {
                warn!(client_id = %reg.client_id, error = %e, "could not record acknowledgements against deadlines");
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
                warn!(client_id = %reg.client_id, error = %e, done,
                    "could not record the final cursor; unrecorded messages will be delivered again");
            }
        }
        let owner = self.owner(reg.epoch);
        if let Err(e) = self.node.bus.release(reg.client_id, &owner).await {
            debug!(error = %e, "could not release the Redis lease; it will expire");
        }
        if asked {
            self.out_reply(Reply::Bye(ByeReason::Disconnect));
            let _ = self.flush_within(BYE_TIMEOUT).await;
            let _ = self.conn.shutdown().await;
        }
        match end {
            End::Io(e) => {
                info!(client_id = %reg.client_id, error = %e, "session ended by a socket error")
            }
            End::WriteTimeout => {
                info!(client_id = %reg.client_id, "session ended: client stopped reading")
            }
            other => info!(client_id = %reg.client_id, reason = ?other, "session ended"),
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

    /// This session as the owner of its client's Redis lease.
    fn owner(&self, epoch: u64) -> Owner {
        Owner {
            node: self.node.config.node_id.clone(),
            epoch,
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
        let result = timeout(limit, self.conn.write_all(&self.out)).await;
        // Given back once written: an idle session keeps no output buffer.
        self.out = BytesMut::new();
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Io(e)),
            Err(_) => Err(End::WriteTimeout),
        }
    }
}
