//! The names on the wire: people (a name or a client id), rooms (`#name`), private rooms (`@name`), and their syntax rules.

use std::fmt;

use super::Echo;
use crate::ClientId;

/// Shortest name of a person or a room.
pub const NAME_MIN: usize = 2;
/// Longest name of a person or a room.
pub const NAME_MAX: usize = 32;

/// A valid name of a person or a room: 2-32 of `A-Z a-z 0-9 _ . -`, starting with a letter.
/// Names are unique without regard to case; the case a name was taken in is how it is shown.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(String);

impl Name {
    /// Checks `raw` against the rules.
    pub fn parse(raw: &[u8]) -> Result<Name, NameError> {
        let ok_len = (NAME_MIN..=NAME_MAX).contains(&raw.len());
        let ok_chars = raw.first().is_some_and(u8::is_ascii_alphabetic)
            && raw
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok_len && ok_chars {
            // All ASCII, checked above.
            Ok(Name(String::from_utf8_lossy(raw).into_owned()))
        } else {
            Err(NameError(Echo::of(raw)))
        }
    }

    /// The name as it was written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The unique key: the name in lower case.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a valid name: 2-32 letters, digits, '_', '.' or '-', starting with a letter")]
pub struct NameError(Echo);

/// Another person: by name; by public id (`~<16 hex>`, how a client without a name is shown to
/// others); or by client id (the credential: whoever knows it may use it, but it is never shown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Name(Name),
    Public([u8; 8]),
    Id(ClientId),
}

impl Peer {
    /// `alice`, `@alice`, `~1de63a79f82e4654` or a client id.
    pub fn parse(raw: &[u8]) -> Result<Peer, NameError> {
        let raw = raw.strip_prefix(b"@").unwrap_or(raw);
        if let Some(public) = raw.strip_prefix(b"~").and_then(parse_public) {
            return Ok(Peer::Public(public));
        }
        if let Some(id) = std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.parse::<ClientId>().ok())
        {
            return Ok(Peer::Id(id));
        }
        Name::parse(raw).map(Peer::Name)
    }
}

/// 16 hex digits.
fn parse_public(hex: &[u8]) -> Option<[u8; 8]> {
    if hex.len() != 16 {
        return None;
    }
    let mut out = [0u8; 8];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Name(name) => name.fmt(f),
            Peer::Public(public) => {
                f.write_str("~")?;
                public.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
            // Only the client itself ever writes its id; echoed back to it alone.
            Peer::Id(id) => id.fmt(f),
        }
    }
}

/// What a command about a conversation names: a room, or the private room with a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Room(Name),
    Person(Peer),
}

impl Target {
    /// For commands about a room: `#general` or `general` is a room, `@alice` the private room
    /// with alice.
    pub fn room_first(raw: &[u8]) -> Result<Target, TargetError> {
        if raw.starts_with(b"@") {
            return Ok(Target::Person(Peer::parse(raw)?));
        }
        if is_private_syntax(raw) {
            return Err(TargetError::PrivateName(Echo::of(raw)));
        }
        let raw = raw.strip_prefix(b"#").unwrap_or(raw);
        Ok(Target::Room(Name::parse(raw)?))
    }

    /// For commands about a room or a person (`HISTORY`, `READ`): `#general` is a room; `alice`,
    /// `@alice` or a client id is the private room with that person.
    pub fn person_first(raw: &[u8]) -> Result<Target, TargetError> {
        match raw.strip_prefix(b"#") {
            Some(room) => Ok(Target::Room(Name::parse(room)?)),
            None if is_private_syntax(raw) => Err(TargetError::PrivateName(Echo::of(raw))),
            None => Ok(Target::Person(Peer::parse(raw)?)),
        }
    }
}

/// `a+b`: how someone might try to name another pair's private room.
fn is_private_syntax(raw: &[u8]) -> bool {
    raw.contains(&b'+')
}

/// Why a conversation name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("{0} names a private room: private rooms are only for their two members (PRIVATE <name> opens yours)")]
    PrivateName(Echo),
}

/// How a room is shown: `#general`.
pub fn room_label(name: &str) -> String {
    format!("#{name}")
}

/// How the private room with a person is shown to the other one: `@alice` (or `@~<public id>`).
pub fn private_label(peer: &str) -> String {
    format!("@{peer}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        assert_eq!(Name::parse(b"Alice_2.x-y").unwrap().key(), "alice_2.x-y");
        for bad in [
            &b"a"[..],
            b"2cool",
            b"_x",
            b"has space",
            b"\xc3\xa9t\xc3\xa9",
            b"a+b",
            b"x!",
            &[b'a'; 33],
        ] {
            assert!(Name::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Name::parse(&[b'a'; 32]).is_ok());
        let err = Name::parse(b"bad\x1bname").unwrap_err().to_string();
        assert!(err.starts_with("\"bad?name\" is not a valid name"), "{err}");
    }

    #[test]
    fn targets_tell_rooms_from_people() {
        let name = |s: &str| Name::parse(s.as_bytes()).unwrap();
        assert_eq!(
            Target::room_first(b"#general"),
            Ok(Target::Room(name("general")))
        );
        assert_eq!(
            Target::room_first(b"general"),
            Ok(Target::Room(name("general")))
        );
        assert_eq!(
            Target::room_first(b"@bob"),
            Ok(Target::Person(Peer::Name(name("bob"))))
        );
        assert_eq!(
            Target::person_first(b"bob"),
            Ok(Target::Person(Peer::Name(name("bob"))))
        );
        assert_eq!(Target::person_first(b"#bob"), Ok(Target::Room(name("bob"))));
        let id = ClientId::random();
        assert_eq!(
            Target::person_first(id.to_string().as_bytes()),
            Ok(Target::Person(Peer::Id(id)))
        );
        let public = Peer::parse(b"~1de63a79f82e4654").unwrap();
        assert_eq!(
            public,
            Peer::Public([0x1d, 0xe6, 0x3a, 0x79, 0xf8, 0x2e, 0x46, 0x54])
        );
        assert_eq!(public.to_string(), "~1de63a79f82e4654");
        assert!(Peer::parse(b"~1de63a79").is_err());
        assert!(Peer::parse(b"~zze63a79f82e4654").is_err());
        assert!(matches!(
            Target::room_first(b"alice+bob"),
            Err(TargetError::PrivateName(_))
        ));
        assert!(matches!(
            Target::person_first(b"alice+bob"),
            Err(TargetError::PrivateName(_))
        ));
    }
}
