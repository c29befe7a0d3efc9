//! `REGISTER`, `WHOAMI`/`NAME`, `PASSWORD`, and the check behind `LOGIN` at the handshake.

use tracing::{info, warn};

use super::{unavailable, Ctx};
use crate::node::Node;
use crate::password;
use crate::protocol::chat_reply::{ChatError, ChatLine};
use crate::protocol::names::Name;
use crate::store::{Registered, StoreError};
use crate::ClientId;

/// `REGISTER <name> <password>`: binds the name to this client id.
pub async fn register(ctx: &mut Ctx<'_>, name: Name, pass: String) -> Result<(), ChatError> {
    if let Some(current) = ctx.name().await? {
        return Err(ChatError::AlreadyNamed(current));
    }
    // Taken already: no need to hash (the insert below still decides a race).
    let store = &ctx.node.store;
    if store
        .account(&name.key())
        .await
        .map_err(unavailable)?
        .is_some()
    {
        return Err(ChatError::NameTaken(name.to_string()));
    }
    // A hash costs a core for tens of milliseconds: as many as posts.
    ctx.spend_send()?;
    let hash = password::hash(pass).await.map_err(|e| {
        warn!(error = %e, "cannot hash a password");
        ChatError::Unavailable
    })?;
    let done = ctx
        .node
        .store
        .register(ctx.me, name.as_str(), &name.key(), &hash)
        .await
        .map_err(unavailable)?;
    match done {
        Registered::Done => {
            info!(name = %name, "registered a name");
            ctx.named(name.to_string());
            ctx.reply(ChatLine::Registered(name.as_str()));
            Ok(())
        }
        Registered::NameTaken => Err(ChatError::NameTaken(name.to_string())),
        Registered::AlreadyNamed(current) => Err(ChatError::AlreadyNamed(current)),
    }
}

/// `WHOAMI`: the client id, the name (or the public id), the mode.
pub async fn whoami(ctx: &mut Ctx<'_>) -> Result<(), ChatError> {
    let name = ctx.name().await?;
    let shown = ctx.shown().await?;
    let id = ctx.me.to_string();
    let ack = ctx.ack;
    ctx.reply(ChatLine::WhoAmI {
        id: &id,
        name: name.as_deref(),
        shown: &shown,
        ack,
    });
    Ok(())
}

/// `PASSWORD <old> <new>`.
pub async fn password(ctx: &mut Ctx<'_>, old: String, new: String) -> Result<(), ChatError> {
    let name = ctx.name().await?.ok_or(ChatError::NoName)?;
    let key = name.to_ascii_lowercase();
    let account = ctx.node.store.account(&key).await.map_err(unavailable)?;
    let stored = account
        .filter(|(id, _)| *id == ctx.me)
        .map(|(_, hash)| hash);
    ctx.spend_send()?;
    if !password::verify(old, stored).await {
        return Err(ChatError::WrongPassword);
    }
    let hash = password::hash(new).await.map_err(|e| {
        warn!(error = %e, "cannot hash a password");
        ChatError::Unavailable
    })?;
    ctx.node
        .store
        .set_password(&key, &hash)
        .await
        .map_err(unavailable)?;
    ctx.reply(ChatLine::PasswordChanged);
    Ok(())
}

/// `LOGIN <name> <password>`: the client registered under `name`, if the password matches.
/// Unknown names take as long as wrong passwords (a decoy hash is checked).
pub async fn login(node: &Node, name: &Name, pass: String) -> Result<Option<ClientId>, StoreError> {
    let account = node.store.account(&name.key()).await?;
    let (id, stored) = match account {
        Some((id, hash)) => (Some(id), Some(hash)),
        None => (None, None),
    };
    Ok(if password::verify(pass, stored).await {
        id
    } else {
        None
    })
}
