//! `ROOMS` (the chat list: unread counts, last messages), `HISTORY` (pages back through a conversation) and `READ` (the read cursor).

use super::rooms::summary;
use super::{offset, resolve, unavailable, Ctx, PAGE};
use crate::protocol::chat::ReadUpTo;
use crate::protocol::chat_reply::{timestamp, ChatError, ChatLine, Shown};
use crate::protocol::names::{private_label, room_label, Target};
use crate::store::{RoomKind, RoomMessage};

/// `ROOMS [page]`: the client's rooms, most recently active first.
pub async fn rooms(ctx: &mut Ctx<'_>, page: u32) -> Result<(), ChatError> {
    let (total, rows) = ctx
        .node
        .store
        .chat_list(ctx.me, offset(page), PAGE)
        .await
        .map_err(unavailable)?;
    for row in &rows {
        let label = match row.kind {
            RoomKind::Private => private_label(&row.shown),
            _ => room_label(&row.shown),
        };
        let at = row.last.as_ref().map(|m| timestamp(m.at_us));
        let last = row
            .last
            .as_ref()
            .zip(at.as_deref())
            .map(|(m, at)| shown(m, at));
        ctx.reply(ChatLine::Room {
            label: &label,
            unread: row.unread,
            last,
        });
    }
    summary(ctx, rows.len(), ("room", "rooms"), page, total, "ROOMS");
    Ok(())
}

fn shown<'a>(m: &'a RoomMessage, at: &'a str) -> Shown<'a> {
    Shown {
        id: m.id,
        at,
        sender: &m.shown,
        body: &m.body,
    }
}

/// `HISTORY <#room-or-name> [count] [BEFORE <id>]`: a page of the conversation, oldest first,
/// and the command for the page before it.
pub async fn history(
    ctx: &mut Ctx<'_>,
    of: Target,
    count: u32,
    before: Option<u64>,
) -> Result<(), ChatError> {
    let (room, label) = resolve::conversation(ctx, &of).await?;
    let store = &ctx.node.store;
    if let Some(id) = before {
        if store.seq_of(room, id).await.map_err(unavailable)?.is_none() {
            return Err(ChatError::NotInConversation(id, label));
        }
    }
    let page = store
        .history(room, count, before)
        .await
        .map_err(unavailable)?;
    for m in &page {
        let at = timestamp(m.at_us);
        ctx.reply(ChatLine::History {
            label: &label,
            shown: shown(m, &at),
        });
    }
    // A full page may have older messages before it.
    let older = match page.first() {
        Some(first) if page.len() == count as usize && first.seq > 1 => {
            Some((label.as_str(), count, first.id))
        }
        _ => None,
    };
    ctx.reply(ChatLine::HistoryEnd {
        count: page.len(),
        older,
    });
    Ok(())
}

/// `READ <#room-or-name> <id>|ALL`: moves the read cursor (never back); replies what is unread.
pub async fn read(ctx: &mut Ctx<'_>, of: Target, up_to: ReadUpTo) -> Result<(), ChatError> {
    let (room, label) = resolve::conversation(ctx, &of).await?;
    let store = &ctx.node.store;
    let seq = match up_to {
        ReadUpTo::All => None,
        ReadUpTo::Message(id) => Some(
            store
                .seq_of(room, id)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| ChatError::NotInConversation(id, label.clone()))?,
        ),
    };
    let state = store
        .mark_read(ctx.me, room, seq)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| ChatError::NotMember(label.clone()))?;
    let read_id = match (up_to, state.read_seq) {
        (ReadUpTo::Message(id), _) if seq == Some(state.read_seq) => Some(id),
        (_, 0) => None,
        (_, read_seq) => store
            .message_at(room, read_seq)
            .await
            .map_err(unavailable)?,
    };
    ctx.reply(ChatLine::Read {
        label: &label,
        up_to: read_id,
        unread: state.unread(),
    });
    Ok(())
}
