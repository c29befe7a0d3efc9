//! The client id: a random UUID (v4) that is both a client's name and its credential.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// A client's id. Random (122 bits from the OS RNG), so it can be neither guessed nor enumerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Uuid);

impl ClientId {
    /// A fresh random id.
    pub fn random() -> ClientId {
        ClientId(Uuid::new_v4())
    }

    /// The 16 bytes stored in MySQL.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Rebuilds an id from the 16 bytes stored in MySQL.
    pub fn from_slice(bytes: &[u8]) -> Option<ClientId> {
        Uuid::from_slice(bytes).ok().map(ClientId)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Error for text that is not a client id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a client id (expected a UUID such as 0b3e3f8a-6a57-4f0e-9d6c-2f1f6f1de6a4)")]
pub struct ParseClientIdError;

impl FromStr for ClientId {
    type Err = ParseClientIdError;

    /// Accepts the hyphenated form only (36 characters, any case).
    fn from_str(s: &str) -> Result<ClientId, ParseClientIdError> {
        if s.len() != 36 {
            return Err(ParseClientIdError);
        }
        Uuid::try_parse(s)
            .map(ClientId)
            .map_err(|_| ParseClientIdError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_v4_and_round_trip() {
        let a = ClientId::random();
        let b = ClientId::random();
        assert_ne!(a, b);
        assert_eq!(a.0.get_version_num(), 4);
        assert_eq!(a.to_string().parse::<ClientId>(), Ok(a));
        assert_eq!(ClientId::from_slice(a.as_bytes()), Some(a));
    }

    #[test]
    fn only_the_hyphenated_form_parses() {
        assert!("0b3e3f8a6a574f0e9d6c2f1f6f1de6a4"
            .parse::<ClientId>()
            .is_err());
        assert!("3000".parse::<ClientId>().is_err());
        assert!("0B3E3F8A-6A57-4F0E-9D6C-2F1F6F1DE6A4"
            .parse::<ClientId>()
            .is_ok());
    }
}
