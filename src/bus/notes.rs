//! The notifications on Redis channels, as text: `wake`, `kick`, and `post` (a committed room message, carried whole).

use crate::store::RoomMessage;
use crate::{ClientId, RoomId};

/// Most client ids in one `wake` notification.
pub const WAKE_CHUNK: usize = 500;

/// A committed room message, as a notification carries it (so that a node writes it to its local
/// members without reading MySQL). `to`: for a private room, the member it is addressed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Post {
    pub to: Option<ClientId>,
    pub message: RoomMessage,
}

/// A notification received on a node's channel or a room's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Messages were committed for these clients.
    Wake(Vec<ClientId>),
    /// A session with this epoch took the client over.
    Kick(ClientId, u64),
    /// A message was committed to a room.
    Post(Box<Post>),
}

impl Note {
    /// The payload: `wake <id>...`, `kick <id> <epoch>`, or
    /// `post <room> <seq> <id> <at_us> <sender|-> <to|-> <shown> <body...>` (ids of rooms and
    /// clients as 32 hex digits; the body is the rest of the payload, as it was committed).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Note::Wake(ids) => {
                let mut out = String::with_capacity(5 + ids.len() * 37);
                out.push_str("wake");
                for id in ids {
                    out.push(' ');
                    out.push_str(&id.to_string());
                }
                out.into_bytes()
            }
            Note::Kick(id, epoch) => format!("kick {id} {epoch}").into_bytes(),
            Note::Post(post) => {
                let m = &post.message;
                let hex =
                    |id: Option<ClientId>| id.map_or("-".to_string(), |c| hex32(c.as_bytes()));
                let mut out = format!(
                    "post {} {} {} {} {} {} {} ",
                    m.room.simple(),
                    m.seq,
                    m.id,
                    m.at_us,
                    hex(m.sender),
                    hex(post.to),
                    m.shown
                )
                .into_bytes();
                out.extend_from_slice(&m.body);
                out
            }
        }
    }

    /// Parses a channel payload; `None` for anything malformed.
    pub fn decode(payload: &[u8]) -> Option<Note> {
        if let Some(rest) = payload.strip_prefix(b"post ") {
            return decode_post(rest);
        }
        let payload = std::str::from_utf8(payload).ok()?;
        let mut words = payload.split(' ');
        match words.next()? {
            "wake" => {
                let ids = words
                    .map(|w| w.parse().ok())
                    .collect::<Option<Vec<ClientId>>>()?;
                (!ids.is_empty()).then_some(Note::Wake(ids))
            }
            "kick" => {
                let note = Note::Kick(words.next()?.parse().ok()?, words.next()?.parse().ok()?);
                words.next().is_none().then_some(note)
            }
            _ => None,
        }
    }
}

fn hex32(bytes: &[u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn client_hex(word: &str) -> Option<Option<ClientId>> {
    if word == "-" {
        return Some(None);
    }
    let room = RoomId::parse_simple(word)?;
    Some(Some(ClientId::from_slice(room.as_bytes())?))
}

fn decode_post(rest: &[u8]) -> Option<Note> {
    let mut fields = rest.splitn(8, |b| *b == b' ');
    let mut word = || std::str::from_utf8(fields.next()?).ok().map(str::to_string);
    let room = RoomId::parse_simple(&word()?)?;
    let seq = word()?.parse().ok()?;
    let id = word()?.parse().ok()?;
    let at_us = word()?.parse().ok()?;
    let sender = client_hex(&word()?)?;
    let to = client_hex(&word()?)?;
    let shown = word()?;
    let body = fields.next()?.to_vec();
    Some(Note::Post(Box::new(Post {
        to,
        message: RoomMessage {
            room,
            seq,
            id,
            sender,
            shown,
            body,
            at_us,
        },
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip_and_junk_is_refused() {
        let id = ClientId::random();
        let other = ClientId::random();
        let post = Note::Post(Box::new(Post {
            to: Some(other),
            message: RoomMessage {
                room: RoomId::random(),
                seq: 7,
                id: 42,
                sender: Some(id),
                shown: "alice".into(),
                body: b"hello  world: with spaces".to_vec(),
                at_us: 1_700_000_000_000_000,
            },
        }));
        let producer = Note::Post(Box::new(Post {
            to: None,
            message: RoomMessage {
                room: RoomId::random(),
                seq: 1,
                id: 2,
                sender: None,
                shown: "*".into(),
                body: Vec::new(),
                at_us: 3,
            },
        }));
        for note in [
            Note::Wake(vec![id]),
            Note::Wake(vec![id, other]),
            Note::Kick(id, 7),
            post,
            producer,
        ] {
            assert_eq!(Note::decode(&note.encode()), Some(note));
        }
        for junk in [
            "wake nope".to_string(),
            "wake".to_string(),
            format!("wake {id} extra"),
            format!("kick {id} 7 8"),
            format!("kick {id}"),
            "post xyz 1 2 3 - - a b".to_string(),
            "post".to_string(),
        ] {
            assert_eq!(Note::decode(junk.as_bytes()), None, "{junk}");
        }
    }
}
