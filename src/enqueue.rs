//! The producer API: validate a message, commit it to MySQL, then tell the holding node over Redis.

use crate::bus::{Bus, BusError};
use crate::store::{Store, StoreError, Stored};
use crate::ClientId;

/// Default longest message body, in bytes.
pub const DEFAULT_MAX_BYTES: usize = 4096;
/// Hard ceiling for the body limit (the `messages.body` column is a BLOB).
pub const MAX_BYTES_CEILING: usize = 65_535;

/// Why a message was refused before anything was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    #[error("message text is empty")]
    Empty,
    #[error(
        "message text contains a newline, carriage return or NUL byte (one message is one line)"
    )]
    ControlCharacter,
    #[error("message text is {len} bytes, over the limit of {limit} bytes")]
    TooLong { len: usize, limit: usize },
}

/// Why an enqueue failed.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error(transparent)]
    Invalid(#[from] InvalidMessage),
    #[error("unknown client id {0}")]
    UnknownClient(ClientId),
    #[error("MySQL: {0}")]
    Store(#[from] StoreError),
}

/// A message that was committed.
#[derive(Debug)]
pub struct Enqueued {
    /// Global id of the message.
    pub message_id: u64,
    /// Its position in the client's queue.
    pub seq: u64,
    /// Whether a node holding the client was told. `Ok(false)`: the client is offline (or its node
    /// is gone); `Err`: Redis failed. Either way the message is stored and will be delivered.
    pub notified: Result<bool, BusError>,
}

/// Checks a message body: non-empty, one line (no CR, LF or NUL), at most `max_bytes`.
pub fn validate(text: &str, max_bytes: usize) -> Result<(), InvalidMessage> {
    if text.is_empty() {
        return Err(InvalidMessage::Empty);
    }
    if text.bytes().any(|b| matches!(b, b'\n' | b'\r' | 0)) {
        return Err(InvalidMessage::ControlCharacter);
    }
    if text.len() > max_bytes {
        return Err(InvalidMessage::TooLong {
            len: text.len(),
            limit: max_bytes,
        });
    }
    Ok(())
}

/// Enqueues messages: MySQL first (the commit is the promise), then a Redis notification.
pub struct Enqueuer {
    store: Store,
    bus: Option<Bus>,
    max_bytes: usize,
}

impl Enqueuer {
    /// `bus` may be `None` when Redis is unreachable: messages are then stored without a
    /// notification and delivered by the node's sweep or on the client's next connect.
    pub fn new(store: Store, bus: Option<Bus>, max_bytes: usize) -> Enqueuer {
        Enqueuer {
            store,
            bus,
            max_bytes: max_bytes.min(MAX_BYTES_CEILING),
        }
    }

    /// Stores `text` for `client` and notifies the node that holds it.
    pub async fn enqueue(&self, client: ClientId, text: &str) -> Result<Enqueued, EnqueueError> {
        validate(text, self.max_bytes)?;
        let stored = self
            .store
            .enqueue(client, text.as_bytes())
            .await?
            .ok_or(EnqueueError::UnknownClient(client))?;
        let notified = match &self.bus {
            Some(bus) => bus.notify(client).await,
            None => Ok(false),
        };
        Ok(Enqueued {
            message_id: stored.id,
            seq: stored.seq,
            notified,
        })
    }

    /// Stores many messages in one transaction, then notifies the holding nodes with one publish
    /// per node. One result per item, in order: an invalid text or an unknown client fails only
    /// its own item. `Err` as a whole when MySQL fails (then nothing of the batch is stored).
    /// Returns also whether the notification went out (`Err` when Redis failed).
    pub async fn enqueue_batch(
        &self,
        items: &[(ClientId, &str)],
    ) -> Result<(Vec<Result<Stored, EnqueueError>>, Result<usize, BusError>), StoreError> {
        let checked: Vec<Result<(), InvalidMessage>> = items
            .iter()
            .map(|(_, text)| validate(text, self.max_bytes))
            .collect();
        let valid: Vec<(ClientId, &[u8])> = items
            .iter()
            .zip(&checked)
            .filter(|(_, ok)| ok.is_ok())
            .map(|((id, text), _)| (*id, text.as_bytes()))
            .collect();
        let mut stored = self.store.enqueue_batch(&valid).await?.into_iter();
        let results: Vec<Result<Stored, EnqueueError>> = items
            .iter()
            .zip(checked)
            .map(|((id, _), ok)| match ok {
                Err(e) => Err(EnqueueError::Invalid(e)),
                Ok(()) => stored
                    .next()
                    .flatten()
                    .ok_or(EnqueueError::UnknownClient(*id)),
            })
            .collect();
        let mut woken: Vec<ClientId> = items
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|((id, _), _)| *id)
            .collect();
        woken.sort_unstable();
        woken.dedup();
        let notified = match &self.bus {
            Some(bus) => bus.notify_many(&woken).await,
            None => Ok(0),
        };
        Ok((results, notified))
    }

    /// Closes the MySQL connections.
    pub async fn close(self) {
        self.store.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_one_nonempty_line_within_the_limit() {
        assert_eq!(validate("hello world", 4096), Ok(()));
        assert_eq!(validate("héllo ☃", 4096), Ok(()));
        assert_eq!(validate("", 4096), Err(InvalidMessage::Empty));
        for bad in ["a\nb", "a\rb", "a\0b"] {
            assert_eq!(validate(bad, 4096), Err(InvalidMessage::ControlCharacter));
        }
        assert_eq!(validate(&"x".repeat(4096), 4096), Ok(()));
        assert_eq!(
            validate(&"x".repeat(4097), 4096),
            Err(InvalidMessage::TooLong {
                len: 4097,
                limit: 4096
            })
        );
    }
}
