//! `CREATE`, `JOIN`, `LEAVE`, `INVITE`, `SAY`, `MEMBERS` and `LIST`: group rooms.

use tracing::warn;

use super::post::{self, Dest};
use super::{offset, pages, resolve, unavailable, Ctx, PAGE};
use crate::protocol::chat_reply::{ChatError, ChatLine};
use crate::protocol::names::{private_label, room_label, Name, Peer, Target};
use crate::store::{Created, Joined, RoomKind};

/// `CREATE <room> [INVITE]`.
pub async fn create(ctx: &mut Ctx<'_>, room: Name, invite_only: bool) -> Result<(), ChatError> {
    let limits = &ctx.node.config.chat;
    let created = ctx
        .node
        .store
        .create_room(
            ctx.me,
            room.as_str(),
            &room.key(),
            invite_only,
            limits.max_rooms,
        )
        .await
        .map_err(unavailable)?;
    let label = room_label(room.as_str());
    match created {
        Created::Done(_) => {
            ctx.signals.wake_reload();
            ctx.reply(ChatLine::Created {
                label: &label,
                invite_only,
            });
            Ok(())
        }
        Created::NameTaken => {
            let existing = resolve::room(ctx, &room).await?;
            Err(ChatError::RoomTaken(room_label(&existing.name)))
        }
        Created::TooManyRooms => Err(ChatError::TooManyRooms(limits.max_rooms)),
    }
}

/// `JOIN <room>`.
pub async fn join(ctx: &mut Ctx<'_>, room: Name) -> Result<(), ChatError> {
    let info = resolve::room(ctx, &room).await?;
    let label = room_label(&info.name);
    let limits = &ctx.node.config.chat;
    let joined = ctx
        .node
        .store
        .join_room(ctx.me, info.id, limits.max_rooms, limits.max_room_members)
        .await
        .map_err(unavailable)?;
    match joined {
        Joined::Done { .. } => {
            ctx.signals.wake_reload();
            ctx.reply(ChatLine::Joined {
                label: &label,
                already: false,
            });
            Ok(())
        }
        Joined::Already => {
            ctx.reply(ChatLine::Joined {
                label: &label,
                already: true,
            });
            Ok(())
        }
        Joined::InviteOnly => Err(ChatError::InviteOnly(label)),
        Joined::Full => Err(ChatError::RoomFull(label, limits.max_room_members)),
        Joined::TooManyRooms => Err(ChatError::TooManyRooms(limits.max_rooms)),
        Joined::NoRoom => Err(ChatError::NoSuchRoom(label)),
    }
}

/// `LEAVE <room>`: private rooms cannot be left.
pub async fn leave(ctx: &mut Ctx<'_>, target: Target) -> Result<(), ChatError> {
    let name = match target {
        Target::Room(name) => name,
        Target::Person(peer) => {
            let p = resolve::other(ctx, &peer).await?;
            return Err(ChatError::CannotLeavePrivate(private_label(&p.shown())));
        }
    };
    let info = resolve::room(ctx, &name).await?;
    let label = room_label(&info.name);
    let left = ctx
        .node
        .store
        .leave_room(ctx.me, info.id)
        .await
        .map_err(unavailable)?;
    if !left {
        return Err(ChatError::NotMember(label));
    }
    ctx.effects.push(super::Effect::Left(info.id));
    ctx.signals.wake_reload();
    ctx.reply(ChatLine::Left(&label));
    Ok(())
}

/// `INVITE <room> <name-or-id>`: a member invites someone (needed for an invite-only room); the
/// invited client finds a notice in its own queue.
pub async fn invite(ctx: &mut Ctx<'_>, room: Name, who: Peer) -> Result<(), ChatError> {
    let info = resolve::room(ctx, &room).await?;
    let label = room_label(&info.name);
    let store = &ctx.node.store;
    if !store
        .is_member(info.id, ctx.me)
        .await
        .map_err(unavailable)?
    {
        return Err(ChatError::NotMember(label));
    }
    let p = resolve::other(ctx, &who).await?;
    let shown = p.shown();
    if store.is_member(info.id, p.id).await.map_err(unavailable)? {
        ctx.reply(ChatLine::Invited {
            who: &shown,
            label: &label,
            already: true,
        });
        return Ok(());
    }
    // An invitation is a message in the invited client's queue: it costs a post.
    ctx.spend_send()?;
    let fresh = store
        .invite(info.id, p.id, ctx.me)
        .await
        .map_err(unavailable)?;
    if fresh {
        let by = ctx.shown().await?;
        let notice = ChatLine::InviteNotice {
            by: &by,
            label: &label,
        }
        .text();
        if store
            .enqueue(p.id, notice.as_bytes())
            .await
            .map_err(unavailable)?
            .is_some()
        {
            if let Err(e) = ctx.node.bus.notify(p.id).await {
                warn!(error = %e, "could not tell the invited client's node");
            }
            // Held on this node: wake it directly (the notification above finds it too).
            ctx.node.registry.wake(p.id);
        }
    }
    ctx.reply(ChatLine::Invited {
        who: &shown,
        label: &label,
        already: false,
    });
    Ok(())
}

/// `SAY <room> <text>` (or `SAY @name <text>`, as `SEND`).
pub async fn say(ctx: &mut Ctx<'_>, to: Target, text: String) -> Result<(), ChatError> {
    match to {
        Target::Person(peer) => super::private::send(ctx, peer, text).await,
        Target::Room(name) => {
            let info = resolve::room(ctx, &name).await?;
            ctx.spend_send()?;
            let dest = Dest {
                room: info.id,
                label: room_label(&info.name),
                peer: None,
            };
            post::post(ctx, dest, text).await
        }
    }
}

/// `MEMBERS <room> [page]`: a public room's members for anyone, others' for their members.
pub async fn members(ctx: &mut Ctx<'_>, target: Target, page: u32) -> Result<(), ChatError> {
    let (room, label) = match &target {
        Target::Room(name) => {
            let info = resolve::room(ctx, name).await?;
            let label = room_label(&info.name);
            if info.kind != RoomKind::Public
                && !ctx
                    .node
                    .store
                    .is_member(info.id, ctx.me)
                    .await
                    .map_err(unavailable)?
            {
                return Err(ChatError::NotMember(label));
            }
            (info.id, label)
        }
        Target::Person(_) => resolve::conversation(ctx, &target).await?,
    };
    let (total, people) = ctx
        .node
        .store
        .members(room, offset(page), PAGE)
        .await
        .map_err(unavailable)?;
    for p in &people {
        ctx.reply(ChatLine::Member {
            who: &p.shown,
            online: p.online,
        });
    }
    let next = format!("MEMBERS {label}");
    summary(ctx, people.len(), ("member", "members"), page, total, &next);
    Ok(())
}

/// `LIST [page]`: the public rooms.
pub async fn list(ctx: &mut Ctx<'_>, page: u32) -> Result<(), ChatError> {
    let (total, rooms) = ctx
        .node
        .store
        .public_rooms(offset(page), PAGE)
        .await
        .map_err(unavailable)?;
    for (name, members) in &rooms {
        let label = room_label(name);
        ctx.reply(ChatLine::Listed {
            label: &label,
            members: *members,
        });
    }
    summary(
        ctx,
        rooms.len(),
        ("public room", "public rooms"),
        page,
        total,
        "LIST",
    );
    Ok(())
}

/// The last line of a page: how many, which page of how many, and the next page's command.
pub fn summary(
    ctx: &mut Ctx<'_>,
    count: usize,
    what: (&str, &str),
    page: u32,
    total: u64,
    next: &str,
) {
    let pages = pages(total);
    ctx.reply(ChatLine::Summary {
        count,
        what,
        page,
        pages,
        next: (page < pages).then_some(next),
    });
}
