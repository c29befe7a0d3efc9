//! `ONLINE` (who is online in the whole cluster) and contacts: `CONTACT ADD`, `CONTACT DEL`, `CONTACTS`.

use super::rooms::summary;
use super::{offset, resolve, unavailable, Ctx, PAGE};
use crate::protocol::chat_reply::{ChatError, ChatLine};
use crate::protocol::names::Peer;

/// `ONLINE [page]`.
pub async fn online(ctx: &mut Ctx<'_>, page: u32) -> Result<(), ChatError> {
    let (total, people) = ctx
        .node
        .store
        .online(offset(page), PAGE)
        .await
        .map_err(unavailable)?;
    for who in &people {
        ctx.reply(ChatLine::Online(who));
    }
    summary(
        ctx,
        people.len(),
        ("online", "online"),
        page,
        total,
        "ONLINE",
    );
    Ok(())
}

/// `CONTACT ADD <name-or-id>`.
pub async fn contact_add(ctx: &mut Ctx<'_>, who: Peer) -> Result<(), ChatError> {
    let p = resolve::other(ctx, &who).await?;
    let max = ctx.node.config.chat.max_contacts;
    let added = ctx
        .node
        .store
        .add_contact(ctx.me, p.id, max)
        .await
        .map_err(unavailable)?;
    let shown = p.shown();
    match added {
        Some(added) => {
            ctx.reply(ChatLine::ContactAdded {
                who: &shown,
                already: !added,
            });
            Ok(())
        }
        None => Err(ChatError::TooManyContacts(max)),
    }
}

/// `CONTACT DEL <name-or-id>`.
pub async fn contact_del(ctx: &mut Ctx<'_>, who: Peer) -> Result<(), ChatError> {
    let p = resolve::person(ctx, &who).await?;
    let removed = ctx
        .node
        .store
        .remove_contact(ctx.me, p.id)
        .await
        .map_err(unavailable)?;
    let shown = p.shown();
    if !removed {
        return Err(ChatError::NotAContact(shown));
    }
    ctx.reply(ChatLine::ContactRemoved(&shown));
    Ok(())
}

/// `CONTACTS [page]`: with each one's online state.
pub async fn contacts(ctx: &mut Ctx<'_>, page: u32) -> Result<(), ChatError> {
    let (total, people) = ctx
        .node
        .store
        .contacts(ctx.me, offset(page), PAGE)
        .await
        .map_err(unavailable)?;
    for p in &people {
        ctx.reply(ChatLine::Contact {
            who: &p.shown,
            online: p.online,
        });
    }
    summary(
        ctx,
        people.len(),
        ("contact", "contacts"),
        page,
        total,
        "CONTACTS",
    );
    Ok(())
}
