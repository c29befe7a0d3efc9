//! The start of a session: the answer to `GET_CLIENT_ID`, the claim in MySQL, the lease in Redis.

use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Session;
use crate::batcher::Claimed;
use crate::bus::{Note, Owner};
use crate::chat::accounts;
use crate::codec::LineError;
use crate::protocol::{self, Identity, SessionError};
use crate::ClientId;

impl<S: super::Stream> Session<S> {
    /// Reads the answer to `GET_CLIENT_ID` and claims the client. `Ok(None)`: the peer left.
    pub(super) async fn handshake(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Option<(ClientId, Claimed, bool)>, SessionError> {
        let limit = self.node.config.handshake_timeout;
        let line = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            line = timeout(limit, self.conn.next_line()) => line,
        };
        let line = match line {
            Err(_) => return Err(SessionError::HandshakeTimeout(limit.as_secs())),
            Ok(None) | Ok(Some(Err(LineError::Io(_)))) => return Ok(None),
            Ok(Some(Err(LineError::TooLong(n)))) => return Err(SessionError::LineTooLong(n)),
            Ok(Some(Ok(line))) => line,
        };
        let hello = protocol::parse_hello(&line).inspect_err(|_| self.failed())?;
        let ack = hello.ack;
        let identity = match hello.identity {
            Identity::Login { name, password } => {
                // Boxed: the password check's state is large and rare. Bounded by the handshake
                // deadline too: logins queue for the hashing under a flood.
                let check = Box::pin(accounts::login(&self.node, &name, password));
                match timeout(limit, check).await {
                    Err(_) => return Err(SessionError::HandshakeTimeout(limit.as_secs())),
                    Ok(Ok(Some(id))) => Identity::Resume(id),
                    Ok(Ok(None)) => {
                        self.failed();
                        info!(name = %name, "login refused");
                        return Err(SessionError::WrongLogin);
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, "MySQL unavailable during login");
                        return Err(SessionError::Unavailable);
                    }
                }
            }
            other => other,
        };
        if let Identity::Resume(id) = identity {
            if self.node.admission.is_banned(id) {
                return Err(SessionError::Banned);
            }
        }
        let store = &self.node.store;
        let node_id = &self.node.config.node_id;
        // Boxed: a connection waiting for its answer then holds only the small waiting state.
        let claimed = match identity {
            // A new client's lease is written by the session itself.
            Identity::New => Box::pin(store.create_client(node_id))
                .await
                .map(|(id, claim)| {
                    let lease = None;
                    Some((id, Claimed { claim, lease }))
                }),
            Identity::Resume(id) => Box::pin(self.node.claims.call(id))
                .await
                .map(|c| c.map(|claimed| (id, claimed))),
            Identity::Login { .. } => unreachable!("resolved above"),
        };
        match claimed {
            Ok(Some((id, claim))) => Ok(Some((id, claim, ack))),
            Ok(None) => {
                self.failed();
                Err(SessionError::UnknownClient)
            }
            Err(e) => {
                warn!(error = %e, "MySQL unavailable during handshake");
                Err(SessionError::Unavailable)
            }
        }
    }

    /// Counts a failed handshake against the peer's address.
    pub(super) fn failed(&self) {
        self.node.admission.failed(self.peer.ip());
    }

    /// Records this node as the client's holder in Redis (unless the claim's batch did:
    /// `recorded`, with the previous holder) and kicks the previous holder elsewhere. Failures
    /// only delay notifications (the sweep still finds pending messages).
    pub(super) async fn announce(
        &mut self,
        id: ClientId,
        owner: &Owner,
        recorded: Option<Option<Owner>>,
    ) {
        let bus = &self.node.bus;
        let previous = match recorded {
            Some(previous) => previous,
            None => match bus.claim(id, owner, self.node.config.lease).await {
                Ok(previous) => previous,
                Err(e) => {
                    warn!(client_id = %id, error = %e, "could not record ownership in Redis");
                    return;
                }
            },
        };
        if let Some(previous) = previous {
            if previous.node != owner.node && previous.epoch < owner.epoch {
                if let Err(e) = bus.send(&previous.node, Note::Kick(id, owner.epoch)).await {
                    warn!(client_id = %id, error = %e, node = %previous.node, "could not tell the previous node");
                }
            }
        }
    }
}
