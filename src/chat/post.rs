//! Posting: the message committed in its room's log (group commit), then the nodes of its members told, with the message itself.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{debug, warn};

use super::{unavailable, Ctx};
use crate::bus::{Note, Post};
use crate::node::Node;
use crate::protocol::chat_reply::{ChatError, ChatLine};
use crate::store::{PostRefused, RoomMessage};
use crate::{ClientId, RoomId};

/// Where a post goes.
pub struct Dest {
    pub room: RoomId,
    /// How the client shows it (`#general`, `@bob`).
    pub label: String,
    /// For a private room: the other member (told through its own node, not a room channel).
    pub peer: Option<ClientId>,
}

/// Posts `text` for the client to `dest` (the caller took it from `--send-rate`); replies
/// `SENT <id>` once it is committed.
pub async fn post(ctx: &mut Ctx<'_>, dest: Dest, text: String) -> Result<(), ChatError> {
    let shown = ctx.shown().await?;
    let body = text.into_bytes();
    let stored = ctx
        .node
        .posts
        .call((dest.room, ctx.me, body.clone()))
        .await
        .map_err(unavailable)?;
    let row = match stored {
        Ok(row) => row,
        Err(PostRefused::NotMember | PostRefused::NoRoom) => {
            return Err(ChatError::NotMember(dest.label))
        }
    };
    ctx.reply(ChatLine::Sent(row.id));
    ctx.effects.push(super::Effect::Posted(dest.room, row.seq));
    let message = RoomMessage {
        room: dest.room,
        seq: row.seq,
        id: row.id,
        sender: Some(ctx.me),
        shown,
        body,
        at_us: now_us(),
    };
    announce(ctx.node, message, dest.peer).await;
    Ok(())
}

/// Tells the members of the message's room, after the commit: the local ones at once, the others
/// through Redis (a group room's channel, or the node of a private room's other member). A lost
/// notification only delays the message until the node's sweep.
pub async fn announce(node: &Node, message: RoomMessage, peer: Option<ClientId>) {
    let room = message.room;
    let message = Arc::new(message);
    let known_here = node.hub.posted(message.clone());
    let note = Note::Post(Box::new(Post {
        to: peer,
        message: (*message).clone(),
    }));
    let sent = match peer {
        None => node.bus.publish_room(&note, room).await.map(|_| ()),
        // Held here, but not yet in this room (a new private room): it loads its rooms.
        Some(peer) if node.registry.signals(peer).is_some() => {
            if !known_here {
                node.registry.wake_reload(peer);
            }
            Ok(())
        }
        Some(peer) => node.bus.send_post(peer, &note).await.map(|_| ()),
    };
    match sent {
        Ok(()) => debug!(room = %room, "post announced"),
        Err(e) => warn!(error = %e, "could not announce a post over Redis; the sweep will find it"),
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
