//! The chat commands, one module per family, applied for one session.
//!
//! - [`accounts`]: `REGISTER`, `WHOAMI`/`NAME`, `PASSWORD`, and `LOGIN` at the handshake.
//! - [`private`]: `SEND` and `PRIVATE` (the one room of two clients).
//! - [`rooms`]: `CREATE`, `JOIN`, `LEAVE`, `INVITE`, `SAY`, `MEMBERS`, `LIST`.
//! - [`history`]: `ROOMS` (the chat list), `HISTORY`, `READ`.
//! - [`people`]: `ONLINE`, `CONTACT ADD`/`DEL`, `CONTACTS`.
//! - [`post`]: storing a message in a room and telling the nodes of its members.
//! - [`resolve`]: names on the wire to clients and rooms.

use std::time::Duration;

use bytes::BytesMut;
use tracing::warn;

use crate::node::Node;
use crate::protocol::chat_reply::{ChatError, ChatLine};
use crate::protocol::ChatCommand;
use crate::registry::Signals;
use crate::store::{Person, StoreError};
use crate::ClientId;

pub mod accounts;
pub mod history;
pub mod people;
pub mod post;
pub mod private;
pub mod resolve;
pub mod rooms;

mod bucket;

pub use bucket::Bucket;

/// Chat commands per second a client may send (a burst of twice as many), besides the posting
/// limit `--send-rate`: far above what a person types, a bound on what a script can ask of MySQL.
pub const COMMAND_RATE: u32 = 100;
/// Lines of one page of `ONLINE`, `CONTACTS`, `MEMBERS`, `ROOMS`, `LIST`.
pub const PAGE: u32 = 50;
/// Longest wait for a turn at MySQL (the share of the pool that chat commands may use).
const QUERY_TURN: Duration = Duration::from_secs(10);

/// What a session keeps for its chat commands (made at its first one).
#[derive(Debug)]
pub struct ChatState {
    /// The client as others see it, once looked up.
    me: Option<Person>,
    /// `--send-rate`: posts.
    sends: Bucket,
    /// [`COMMAND_RATE`]: every chat command.
    commands: Bucket,
}

impl ChatState {
    pub fn new(send_rate: u32) -> ChatState {
        ChatState {
            me: None,
            sends: Bucket::new(send_rate),
            commands: Bucket::new(COMMAND_RATE),
        }
    }
}

/// What a chat command works with: the node, who is asking, and where replies go.
pub struct Ctx<'a> {
    pub node: &'a Node,
    pub me: ClientId,
    /// Acknowledged mode.
    pub ack: bool,
    /// The session's wake-ups (a membership change asks it to load its rooms again).
    pub signals: &'a Signals,
    pub state: &'a mut ChatState,
    pub out: &'a mut BytesMut,
    /// What the command changed that the session must follow at once.
    pub effects: &'a mut Vec<Effect>,
}

/// A change a chat command made that its session follows at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The client posted message `seq` in the room: its read cursor moves there.
    Posted(crate::RoomId, u64),
    /// The client left the room: nothing more of it is delivered, from now.
    Left(crate::RoomId),
}

impl Ctx<'_> {
    /// Appends a reply line.
    pub fn reply(&mut self, line: ChatLine<'_>) {
        line.write_to(self.out);
    }

    /// The client as the store knows it, looked up once per session.
    async fn myself(&mut self) -> Result<&Person, ChatError> {
        if self.state.me.is_none() {
            let person = self.node.store.person(self.me).await.map_err(unavailable)?;
            self.state.me = Some(person.ok_or(ChatError::Unavailable)?);
        }
        Ok(self.state.me.as_ref().expect("just set"))
    }

    /// The client's name, if it has one.
    pub async fn name(&mut self) -> Result<Option<String>, ChatError> {
        Ok(self.myself().await?.name.clone())
    }

    /// How this client is shown to others: its name, or its public id.
    pub async fn shown(&mut self) -> Result<String, ChatError> {
        Ok(self.myself().await?.shown())
    }

    /// The client took a name.
    fn named(&mut self, name: String) {
        if let Some(me) = self.state.me.as_mut() {
            me.name = Some(name.clone());
            me.public = name;
        }
    }

    /// Takes a post from the `--send-rate` allowance.
    pub fn spend_send(&mut self) -> Result<(), ChatError> {
        if self.state.sends.take() {
            Ok(())
        } else {
            Err(ChatError::TooFast(self.state.sends.rate()))
        }
    }
}

/// A MySQL failure, as the client sees it.
pub fn unavailable(e: StoreError) -> ChatError {
    warn!(error = %e, "chat command failed in MySQL");
    ChatError::Unavailable
}

/// Applies one chat command; its reply lines go to `ctx.out`.
pub async fn apply(ctx: &mut Ctx<'_>, cmd: ChatCommand) -> Result<(), ChatError> {
    if !ctx.state.commands.take() {
        return Err(ChatError::TooManyCommands(COMMAND_RATE));
    }
    // Chat commands share at most half the pool, so that deliveries always find connections.
    // Those that hash a password wait for the hashing instead (one at a time per process) and
    // must not hold a turn at MySQL meanwhile.
    let _turn = if cmd.hashes_password() {
        None
    } else {
        let gate = ctx.node.chat_queries.clone();
        let turn = tokio::time::timeout(QUERY_TURN, gate.acquire_owned())
            .await
            .map_err(|_| ChatError::Unavailable)?
            .map_err(|_| ChatError::Unavailable)?;
        Some(turn)
    };
    match cmd {
        ChatCommand::Register { name, password } => accounts::register(ctx, name, password).await,
        ChatCommand::WhoAmI => accounts::whoami(ctx).await,
        ChatCommand::Password { old, new } => accounts::password(ctx, old, new).await,
        ChatCommand::Send { to, text } => private::send(ctx, to, text).await,
        ChatCommand::Private(peer) => private::open(ctx, peer).await,
        ChatCommand::Say { to, text } => rooms::say(ctx, to, text).await,
        ChatCommand::Create { room, invite_only } => rooms::create(ctx, room, invite_only).await,
        ChatCommand::Join(room) => rooms::join(ctx, room).await,
        ChatCommand::Leave(room) => rooms::leave(ctx, room).await,
        ChatCommand::Invite { room, who } => rooms::invite(ctx, room, who).await,
        ChatCommand::Members { room, page } => rooms::members(ctx, room, page).await,
        ChatCommand::List { page } => rooms::list(ctx, page).await,
        ChatCommand::Rooms { page } => history::rooms(ctx, page).await,
        ChatCommand::History { of, count, before } => {
            history::history(ctx, of, count, before).await
        }
        ChatCommand::Read { of, up_to } => history::read(ctx, of, up_to).await,
        ChatCommand::Online { page } => people::online(ctx, page).await,
        ChatCommand::ContactAdd(who) => people::contact_add(ctx, who).await,
        ChatCommand::ContactDel(who) => people::contact_del(ctx, who).await,
        ChatCommand::Contacts { page } => people::contacts(ctx, page).await,
    }
}

/// The number of pages for `total` lines (at least one).
pub fn pages(total: u64) -> u32 {
    total.div_ceil(u64::from(PAGE)).max(1) as u32
}

/// The offset of page `page` (1-based).
pub fn offset(page: u32) -> u64 {
    u64::from(page.saturating_sub(1)) * u64::from(PAGE)
}
