//! The room id: random for a named room, derived from its two members for a private room.

use std::fmt;

use uuid::Uuid;

use crate::ClientId;

/// The namespace of private-room ids (a UUID v5 of the two client ids, smaller first).
const PRIVATE_NAMESPACE: Uuid = Uuid::from_u128(0x6368_6174_2d70_7269_7661_7465_2d72_6f6f);

/// A room's id: the key of its log in `messages` (as a client id keys a client's queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(Uuid);

impl RoomId {
    /// A fresh random id, for a room created by name.
    pub fn random() -> RoomId {
        RoomId(Uuid::new_v4())
    }

    /// The one private room of clients `a` and `b` (the same whichever comes first).
    pub fn private(a: ClientId, b: ClientId) -> RoomId {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut both = [0u8; 32];
        both[..16].copy_from_slice(lo.as_bytes());
        both[16..].copy_from_slice(hi.as_bytes());
        RoomId(Uuid::new_v5(&PRIVATE_NAMESPACE, &both))
    }

    /// The 16 bytes stored in MySQL.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Rebuilds an id from the 16 bytes stored in MySQL.
    pub fn from_slice(bytes: &[u8]) -> Option<RoomId> {
        Uuid::from_slice(bytes).ok().map(RoomId)
    }

    /// The id as 32 hex digits (notifications, SQL literals).
    pub fn simple(&self) -> String {
        self.0.simple().to_string()
    }

    /// Parses 32 hex digits.
    pub fn parse_simple(s: &str) -> Option<RoomId> {
        (s.len() == 32)
            .then(|| Uuid::try_parse(s).ok().map(RoomId))
            .flatten()
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_room_is_the_same_from_both_sides() {
        let (a, b, c) = (ClientId::random(), ClientId::random(), ClientId::random());
        assert_eq!(RoomId::private(a, b), RoomId::private(b, a));
        assert_ne!(RoomId::private(a, b), RoomId::private(a, c));
        let r = RoomId::random();
        assert_eq!(RoomId::from_slice(r.as_bytes()), Some(r));
        assert_eq!(RoomId::parse_simple(&r.simple()), Some(r));
        assert_eq!(RoomId::parse_simple("xyz"), None);
    }
}
