//! The notifications on Redis channels, as text: `wake`, `kick`, and `post` (a committed room message, carried whole).

use crate::hex::hex;
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

/// A message committed to a client's own queue, carried whole in its notification (so that the
/// node holding the client writes it without reading MySQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    pub client: ClientId,
    pub seq: u64,
    pub id: u64,
    /// When it was committed, microseconds since the Unix epoch.
    pub at_us: u64,
    /// One line of text: enqueue refuses CR, LF and NUL.
    pub body: Vec<u8>,
}

/// A notification received on a node's channel or a room's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Messages were committed for these clients.
    Wake(Vec<ClientId>),
    /// These messages were committed for clients of the node.
    Carry(Vec<Carried>),
    /// A session with this epoch took the client over.
    Kick(ClientId, u64),
    /// A message was committed to a room.
    Post(Box<Post>),
}

impl Note {
    /// The payload: `wake <id>...`, `kick <id> <epoch>`,
    /// `post <room> <seq> <id> <at_us> <sender|-> <to|-> <shown> <body...>` (ids of rooms and
    /// clients as 32 hex digits; the body is the rest of the payload, as it was committed), or
    /// `msgs` and one line per message, `<client> <seq> <id> <at_us> <body>`.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Note::Carry(messages) => {
                let size: usize = messages.iter().map(|m| m.body.len() + 80).sum();
                let mut out = Vec::with_capacity(5 + size);
                out.extend_from_slice(b"msgs");
                for m in messages {
                    out.extend_from_slice(
                        format!("\n{} {} {} {} ", m.client, m.seq, m.id, m.at_us).as_bytes(),
                    );
                    out.extend_from_slice(&m.body);
                }
                out
            }
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
                let hex = |id: Option<ClientId>| id.map_or("-".to_string(), |c| hex(c.as_bytes()));
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
        if let Some(rest) = payload.strip_prefix(b"msgs\n") {
            return decode_carried(rest);
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

fn client_hex(word: &str) -> Option<Option<ClientId>> {
    if word == "-" {
        return Some(None);
    }
    let room = RoomId::parse_simple(word)?;
    Some(Some(ClientId::from_slice(room.as_bytes())?))
}

fn decode_carried(rest: &[u8]) -> Option<Note> {
    let messages = rest
        .split(|b| *b == b'\n')
        .map(|line| {
            let mut fields = line.splitn(5, |b| *b == b' ');
            let mut word = || std::str::from_utf8(fields.next()?).ok().map(str::to_string);
            let client = word()?.parse().ok()?;
            let seq = word()?.parse().ok()?;
            let id = word()?.parse().ok()?;
            let at_us = word()?.parse().ok()?;
            let body = fields.next()?.to_vec();
            Some(Carried {
                client,
                seq,
                id,
                at_us,
                body,
            })
        })
        .collect::<Option<Vec<Carried>>>()?;
    (!messages.is_empty()).then_some(Note::Carry(messages))
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
        let carried = |client, seq, body: &str| Carried {
            client,
            seq,
            id: seq + 100,
            at_us: 5,
            body: body.as_bytes().to_vec(),
        };
        let carry = Note::Carry(vec![carried(id, 1, "hi there"), carried(other, 9, "")]);
        for note in [
            Note::Wake(vec![id]),
            Note::Wake(vec![id, other]),
            Note::Kick(id, 7),
            post,
            producer,
            carry,
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
            "msgs\nnot-an-id 1 2 3 x".to_string(),
            format!("msgs\n{id} 1 2"),
            "post".to_string(),
        ] {
            assert_eq!(Note::decode(junk.as_bytes()), None, "{junk}");
        }
    }
}
