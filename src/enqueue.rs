//! The producer API: validate a message, commit it to MySQL, then tell the holding node over Redis.

use std::time::Duration;

use tokio::time::Instant;

use crate::bus::{Bus, BusError, Carried, Note, Post};
use crate::enqueue_merge::Merger;
use crate::protocol::names::Name;
use crate::store::{MessageStatus, NewPost, RoomKind, RoomMessage, Store, StoreError, Stored};
use crate::ClientId;

pub use crate::store::{MessageOptions, MessageState};

/// Default dedupe window: a retry with the same key within it stores nothing.
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Longest dedupe window: retention keeps dedupe keys at least this long.
pub const MAX_DEDUPE_WINDOW: Duration = crate::store::DEDUPE_KEEP;
/// Longest TTL accepted (MySQL TIMESTAMP columns end in 2038).
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest dedupe or collapse key, in bytes.
pub const MAX_KEY_BYTES: usize = 255;
/// How often [`Enqueuer::wait`] looks again, at most (it starts faster and doubles).
const WAIT_POLL_MAX: Duration = Duration::from_millis(250);
const WAIT_POLL_FIRST: Duration = Duration::from_millis(5);

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
    #[error("the {0} key must be 1 to 255 bytes")]
    BadKey(&'static str),
    #[error("the TTL must be between 1 ms and 365 days")]
    BadTtl,
    #[error(
        "{0:?} is not a room name (2-32 letters, digits, '_', '.' or '-', starting with a letter)"
    )]
    BadRoom(String),
}

/// Why an enqueue failed.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error(transparent)]
    Invalid(#[from] InvalidMessage),
    #[error("unknown client id {0}")]
    UnknownClient(ClientId),
    #[error("no room #{0}")]
    UnknownRoom(String),
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
    /// A dedupe hit: nothing new was stored; `message_id` is the first message's.
    pub duplicate: bool,
    /// How many pending messages with the same collapse key it replaced.
    pub replaced: u64,
    /// Whether a node holding the client was told. `Ok(false)`: the client is offline (or its node
    /// is gone); `Err`: Redis failed. Either way the message is stored and will be delivered.
    pub notified: Result<bool, BusError>,
}

/// Now, in microseconds since the Unix epoch (a carried message's commit time, for latency metrics).
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
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

/// Checks the options of a message: keys of 1 to 255 bytes, a TTL of 1 ms to 365 days.
pub fn validate_options(options: &MessageOptions) -> Result<(), InvalidMessage> {
    for (name, key) in [
        ("dedupe", &options.dedupe_key),
        ("collapse", &options.collapse_key),
    ] {
        if key
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > MAX_KEY_BYTES)
        {
            return Err(InvalidMessage::BadKey(name));
        }
    }
    if options
        .ttl
        .is_some_and(|t| t < Duration::from_millis(1) || t > MAX_TTL)
    {
        return Err(InvalidMessage::BadTtl);
    }
    Ok(())
}

/// Enqueues messages: MySQL first (the commit is the promise), then a Redis notification.
pub struct Enqueuer {
    store: Store,
    /// Enqueues go through it: overlapping calls share a transaction.
    merger: Merger,
    bus: Option<Bus>,
    max_bytes: usize,
}

impl Enqueuer {
    /// `bus` may be `None` when Redis is unreachable: messages are then stored without a
    /// notification and delivered by the node's sweep or on the client's next connect.
    pub fn new(store: Store, bus: Option<Bus>, max_bytes: usize) -> Enqueuer {
        let store = store.remembering_heads();
        Enqueuer {
            merger: Merger::new(store.clone(), DEFAULT_DEDUPE_WINDOW),
            store,
            bus,
            max_bytes: max_bytes.min(MAX_BYTES_CEILING),
        }
    }

    /// How long a dedupe key is remembered (default [`DEFAULT_DEDUPE_WINDOW`], at most
    /// [`MAX_DEDUPE_WINDOW`]).
    pub fn with_dedupe_window(mut self, window: Duration) -> Enqueuer {
        self.merger.set_dedupe_window(window.min(MAX_DEDUPE_WINDOW));
        self
    }

    /// Stores `text` for `client` and notifies the node that holds it.
    pub async fn enqueue(&self, client: ClientId, text: &str) -> Result<Enqueued, EnqueueError> {
        self.enqueue_with(client, text, &MessageOptions::default())
            .await
    }

    /// Stores `text` for `client` with a TTL, dedupe key or collapse key, and notifies the node
    /// that holds it (not for a dedupe hit: nothing new was stored).
    pub async fn enqueue_with(
        &self,
        client: ClientId,
        text: &str,
        options: &MessageOptions,
    ) -> Result<Enqueued, EnqueueError> {
        validate(text, self.max_bytes)?;
        validate_options(options)?;
        let stored = self
            .merger
            .enqueue(vec![(client, text.as_bytes().to_vec())], options)
            .await?
            .pop()
            .flatten()
            .ok_or(EnqueueError::UnknownClient(client))?;
        let notified = match &self.bus {
            Some(_) if stored.duplicate => Ok(false),
            // A plain message goes to the holding node whole: it writes it without a read.
            Some(bus) if options.is_plain() => {
                let carried = Carried {
                    client,
                    seq: stored.seq,
                    id: stored.id,
                    at_us: now_us(),
                    body: text.as_bytes().to_vec(),
                };
                bus.carry(carried).await
            }
            // Expiry and collapse are for the node to read from MySQL.
            Some(bus) => bus.notify(client).await,
            None => Ok(false),
        };
        Ok(Enqueued {
            message_id: stored.id,
            seq: stored.seq,
            duplicate: stored.duplicate,
            replaced: stored.replaced,
            notified,
        })
    }

    /// The state and timestamps of each message that exists (unknown or purged ids are left
    /// out), in no particular order.
    pub async fn status(&self, ids: &[u64]) -> Result<Vec<MessageStatus>, StoreError> {
        self.store.message_status(ids).await
    }

    /// Waits until every given message that exists is no longer queued (delivered, acknowledged,
    /// expired, replaced or purged), or `limit` has passed; returns their last states. Polls
    /// MySQL, starting at 5 ms and backing off to 250 ms; a failed read is retried until `limit`
    /// (`Err` only when no read succeeded at all).
    pub async fn wait(
        &self,
        ids: &[u64],
        limit: Duration,
    ) -> Result<Vec<MessageStatus>, StoreError> {
        let deadline = Instant::now() + limit;
        let mut pause = WAIT_POLL_FIRST;
        let mut last = Err(StoreError::Timeout(limit));
        loop {
            match self.store.message_status(ids).await {
                Ok(statuses) if statuses.iter().all(|s| s.state.is_final()) => return Ok(statuses),
                Ok(statuses) => last = Ok(statuses),
                Err(e) if last.is_err() => last = Err(e),
                Err(_) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return last;
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(WAIT_POLL_MAX);
        }
    }

    /// Stores many messages in one transaction, then notifies the holding nodes with one publish
    /// per node. One result per item, in order: an invalid text or an unknown client fails only
    /// its own item. `Err` as a whole when MySQL fails (then nothing of the batch is stored).
    /// Returns also whether the notification went out (`Err` when Redis failed).
    pub async fn enqueue_batch(
        &self,
        items: &[(ClientId, &str)],
    ) -> Result<(Vec<Result<Stored, EnqueueError>>, Result<usize, BusError>), StoreError> {
        self.enqueue_batch_with(items, &MessageOptions::default())
            .await
    }

    /// [`Enqueuer::enqueue_batch`] with the same options for every item (a dedupe or collapse
    /// key applies per client).
    pub async fn enqueue_batch_with(
        &self,
        items: &[(ClientId, &str)],
        options: &MessageOptions,
    ) -> Result<(Vec<Result<Stored, EnqueueError>>, Result<usize, BusError>), StoreError> {
        let options_ok = validate_options(options);
        let checked: Vec<Result<(), InvalidMessage>> = items
            .iter()
            .map(|(_, text)| {
                options_ok.clone()?;
                validate(text, self.max_bytes)
            })
            .collect();
        let valid: Vec<(ClientId, Vec<u8>)> = items
            .iter()
            .zip(&checked)
            .filter(|(_, ok)| ok.is_ok())
            .map(|((id, text), _)| (*id, text.as_bytes().to_vec()))
            .collect();
        let mut stored = self.merger.enqueue(valid, options).await?.into_iter();
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
        let fresh = items.iter().zip(&results).filter_map(|((id, text), r)| {
            Some((*id, *text, r.as_ref().ok().filter(|s| !s.duplicate)?))
        });
        let notified = match &self.bus {
            // Plain messages go to their holding nodes whole (one publish per node and 500).
            Some(bus) if options.is_plain() => {
                let at_us = now_us();
                let carried = fresh
                    .map(|(client, text, s)| Carried {
                        client,
                        seq: s.seq,
                        id: s.id,
                        at_us,
                        body: text.as_bytes().to_vec(),
                    })
                    .collect();
                bus.carry_many(carried).await
            }
            Some(bus) => {
                let mut woken: Vec<ClientId> = fresh.map(|(id, _, _)| id).collect();
                woken.sort_unstable();
                woken.dedup();
                bus.notify_many(&woken).await
            }
            None => Ok(0),
        };
        Ok((results, notified))
    }

    /// Posts `text` to the public or invite-only room `room` (`#` optional), shown as from `*` (a
    /// producer, not a member), and tells the nodes with members in it. Returns the message id and
    /// whether the room's channel reached a node.
    pub async fn post_to_room(
        &self,
        room: &str,
        text: &str,
    ) -> Result<(u64, Result<bool, BusError>), EnqueueError> {
        validate(text, self.max_bytes)?;
        let bare = room.strip_prefix('#').unwrap_or(room);
        let name =
            Name::parse(bare.as_bytes()).map_err(|_| InvalidMessage::BadRoom(room.to_string()))?;
        let info = self
            .store
            .room_named(&name.key())
            .await?
            .filter(|r| r.kind != RoomKind::Private)
            .ok_or_else(|| EnqueueError::UnknownRoom(name.to_string()))?;
        let post = NewPost {
            room: info.id,
            sender: None,
            body: text.as_bytes(),
        };
        let row = self
            .store
            .post_many(&[post])
            .await?
            .pop()
            .and_then(Result::ok)
            .ok_or_else(|| EnqueueError::UnknownRoom(name.to_string()))?;
        let at_us = now_us();
        let note = Note::Post(Box::new(Post {
            to: None,
            message: RoomMessage {
                room: info.id,
                seq: row.seq,
                id: row.id,
                sender: None,
                shown: "*".into(),
                body: text.as_bytes().to_vec(),
                at_us,
            },
        }));
        let notified = match &self.bus {
            Some(bus) => bus.publish_room(&note, info.id).await.map(|n| n > 0),
            None => Ok(false),
        };
        Ok((row.id, notified))
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
