//! `SEND` and `PRIVATE`: the one room of two clients, opened on first use, written to like any room.

use super::post::{self, Dest};
use super::{resolve, unavailable, Ctx};
use crate::protocol::chat_reply::{ChatError, ChatLine};
use crate::protocol::names::{private_label, Peer};
use crate::store::{Opened, Person};
use crate::RoomId;

/// Makes sure the private room with `peer` exists; returns where posts to it go.
async fn ensure(ctx: &mut Ctx<'_>, p: &Person) -> Result<Dest, ChatError> {
    let max = ctx.node.config.chat.max_private;
    let opened = ctx
        .node
        .store
        .open_private(ctx.me, p.id, max)
        .await
        .map_err(unavailable)?;
    match opened {
        Opened::Done { created } => {
            if created {
                // A new room for both: their sessions load their rooms again.
                ctx.signals.wake_reload();
                ctx.node.registry.wake_reload(p.id);
            }
            Ok(Dest {
                room: RoomId::private(ctx.me, p.id),
                label: private_label(&p.shown()),
                peer: Some(p.id),
            })
        }
        Opened::TooMany => Err(ChatError::TooManyPrivate(max)),
        Opened::PeerTooMany => Err(ChatError::PeerTooManyPrivate(p.shown())),
    }
}

/// `SEND <name-or-id> <text>`: a message in the private room with that person.
pub async fn send(ctx: &mut Ctx<'_>, to: Peer, text: String) -> Result<(), ChatError> {
    let p = resolve::other(ctx, &to).await?;
    // Refused for its rate before anything is made: not even the private room.
    ctx.spend_send()?;
    let dest = ensure(ctx, &p).await?;
    post::post(ctx, dest, text).await
}

/// `PRIVATE <name-or-id>`: opens the private room with that person (nothing if it is open).
pub async fn open(ctx: &mut Ctx<'_>, peer: Peer) -> Result<(), ChatError> {
    let p = resolve::other(ctx, &peer).await?;
    // Opening a private room takes a place in the other's limit: it costs a post.
    ctx.spend_send()?;
    let dest = ensure(ctx, &p).await?;
    let shown = p.shown();
    ctx.reply(ChatLine::PrivateOpened {
        label: &dest.label,
        peer: &shown,
    });
    Ok(())
}
