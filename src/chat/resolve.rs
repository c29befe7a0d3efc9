//! Names on the wire to what they name: people (by name or id), rooms (by name), conversations.

use super::{unavailable, Ctx};
use crate::protocol::chat_reply::ChatError;
use crate::protocol::names::{private_label, room_label, Name, Peer, Target};
use crate::store::{Person, RoomInfo};
use crate::RoomId;

/// The person `peer` names; an unknown name that is a room's says so.
pub async fn person(ctx: &Ctx<'_>, peer: &Peer) -> Result<Person, ChatError> {
    let store = &ctx.node.store;
    match peer {
        Peer::Id(id) => store
            .person(*id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ChatError::NoSuchClient(id.to_string())),
        Peer::Public(public) => store
            .person_public(public)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ChatError::NoSuchClient(peer.to_string())),
        Peer::Name(name) => {
            if let Some(p) = store.person_named(&name.key()).await.map_err(unavailable)? {
                return Ok(p);
            }
            let room = store.room_named(&name.key()).await.map_err(unavailable)?;
            Err(match room {
                Some(_) => ChatError::NoSuchPersonMaybeRoom(name.to_string()),
                None => ChatError::NoSuchPerson(name.to_string()),
            })
        }
    }
}

/// Someone else: `peer` must not be the asking client.
pub async fn other(ctx: &Ctx<'_>, peer: &Peer) -> Result<Person, ChatError> {
    let p = person(ctx, peer).await?;
    if p.id == ctx.me {
        return Err(ChatError::Yourself(p.shown()));
    }
    Ok(p)
}

/// The named room `name`.
pub async fn room(ctx: &Ctx<'_>, name: &Name) -> Result<RoomInfo, ChatError> {
    ctx.node
        .store
        .room_named(&name.key())
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ChatError::NoSuchRoom(room_label(name.as_str())))
}

/// A conversation the asking client is in: a room it is a member of, or its private room with a
/// person. Returns the room and how it is shown to the client (`#general`, `@bob`).
pub async fn conversation(ctx: &Ctx<'_>, target: &Target) -> Result<(RoomId, String), ChatError> {
    let (room, label, missing) = match target {
        Target::Room(name) => {
            let info = room(ctx, name).await?;
            let label = room_label(&info.name);
            (info.id, label.clone(), ChatError::NotMember(label))
        }
        Target::Person(peer) => {
            let p = other(ctx, peer).await?;
            let shown = p.shown();
            (
                RoomId::private(ctx.me, p.id),
                private_label(&shown),
                ChatError::NoPrivate(shown),
            )
        }
    };
    let member = ctx
        .node
        .store
        .is_member(room, ctx.me)
        .await
        .map_err(unavailable)?;
    if member {
        Ok((room, label))
    } else {
        Err(missing)
    }
}
