//! The wire protocol's meaning: client lines parsed into commands, replies rendered as lines (all wire text lives here).
//!
//! - this module: the handshake, the core commands (`PING`, `DISCONNECT`, `ACK`, `HELP`) and the
//!   core replies;
//! - [`names`]: people, rooms and private rooms as written on the wire;
//! - [`chat`]: the chat commands and their syntax errors; [`chat_reply`]: the chat replies, the
//!   errors of chat commands and `HELP`.

use std::fmt;

use bytes::{BufMut, BytesMut};

use crate::ClientId;

pub mod chat;
pub mod chat_reply;
pub mod names;

pub use chat::{ChatCommand, ChatSyntax};

/// Line terminator the node sends (telnet expects CRLF).
pub const EOL: &[u8] = b"\r\n";

/// How much of an unrecognised line is echoed back in an error, in characters.
const ECHO_LIMIT: usize = 32;

/// Who the client says it is in its answer to `GET_CLIENT_ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// `NONE`: a new client, give it an id.
    New,
    /// `<id>`: an existing client resuming its queue.
    Resume(ClientId),
    /// `LOGIN <name> <password>`: the client that registered this name.
    Login { name: names::Name, password: String },
}

/// The client's answer to `GET_CLIENT_ID`: `NONE`, an id or `LOGIN <name> <password>`, optionally
/// followed by `ACK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub identity: Identity,
    /// Acknowledged mode: messages carry their id and count as delivered only once acknowledged.
    pub ack: bool,
}

/// Why a handshake answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("expected NONE or a client id")]
    Empty,
    #[error("malformed client id {0}")]
    Malformed(Echo),
    #[error("unknown mode {0} (expected ACK or nothing)")]
    UnknownMode(Echo),
    #[error("usage: LOGIN <name> <password> [ACK]")]
    LoginSyntax,
}

/// A command a client sends once its session is established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `PING`: answered with `PONG`.
    Ping,
    /// `DISCONNECT`: end the session.
    Disconnect,
    /// `ACK <message_id>`: the client has the message (acknowledged mode).
    Ack(u64),
    /// `HELP`: the commands a person can type.
    Help,
    /// An empty line: ignored.
    Empty,
    /// A chat command (accounts, direct messages, rooms, history).
    Chat(ChatCommand),
}

/// Why a session line was refused (the session stays open).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command {0}")]
    Unknown(Echo),
    #[error("{0} takes no arguments")]
    ExtraArguments(&'static str),
    #[error("ACK needs one message id, as in ACK 42")]
    AckSyntax,
    #[error(transparent)]
    Chat(#[from] ChatSyntax),
}

/// A short, printable, quoted copy of client input, safe to echo in an error line: control
/// characters, quotes and bytes that are not UTF-8 become `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Echo(String);

impl Echo {
    /// A safe copy of `raw` for an error line.
    pub fn of(raw: &[u8]) -> Echo {
        let text = String::from_utf8_lossy(raw);
        let mut out = String::with_capacity(ECHO_LIMIT + 2);
        for (i, c) in text.chars().enumerate() {
            if i == ECHO_LIMIT {
                out.push_str("...");
                break;
            }
            let unsafe_char = c.is_control() || c == '"' || c == char::REPLACEMENT_CHARACTER;
            out.push(if unsafe_char { '?' } else { c });
        }
        Echo(out)
    }
}

impl fmt::Display for Echo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0)
    }
}

/// Parses the answer to `GET_CLIENT_ID`: `NONE`, a client id or `LOGIN <name> <password>`, then
/// optionally `ACK`; case-insensitive (but the password), blanks around words ignored.
pub fn parse_hello(line: &[u8]) -> Result<Hello, HelloError> {
    let mut words = words(line);
    let Some(who) = words.next() else {
        return Err(HelloError::Empty);
    };
    let identity = if who.eq_ignore_ascii_case(b"NONE") {
        Identity::New
    } else if who.eq_ignore_ascii_case(b"LOGIN") {
        let (Some(name), Some(password)) = (words.next(), words.next()) else {
            return Err(HelloError::LoginSyntax);
        };
        // A name that breaks the rules cannot have registered: the same refusal as a wrong password.
        let name = names::Name::parse(name).map_err(|_| HelloError::LoginSyntax)?;
        Identity::Login {
            name,
            password: String::from_utf8_lossy(password).into_owned(),
        }
    } else {
        std::str::from_utf8(who)
            .ok()
            .and_then(|s| s.parse::<ClientId>().ok())
            .map(Identity::Resume)
            .ok_or_else(|| HelloError::Malformed(Echo::of(trim(line))))?
    };
    let login = matches!(identity, Identity::Login { .. });
    let ack = match (words.next(), words.next()) {
        (None, _) => false,
        (Some(mode), None) if mode.eq_ignore_ascii_case(b"ACK") => true,
        (Some(_), _) if login => return Err(HelloError::LoginSyntax),
        (Some(mode), _) => return Err(HelloError::UnknownMode(Echo::of(mode))),
    };
    Ok(Hello { identity, ack })
}

/// The blank-separated words of a line.
pub(crate) fn words(line: &[u8]) -> Words<'_> {
    Words(line)
}

/// Iterator over the words of a line (split on ASCII blanks).
pub(crate) struct Words<'a>(&'a [u8]);

impl<'a> Iterator for Words<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.0.iter().position(|b| !b.is_ascii_whitespace())?;
        let rest = &self.0[start..];
        let end = rest
            .iter()
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        self.0 = &rest[end..];
        Some(&rest[..end])
    }
}

/// Parses one line of an established session.
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let mut words = words(line);
    let Some(verb) = words.next() else {
        return Ok(Command::Empty);
    };
    let (command, name) = if verb.eq_ignore_ascii_case(b"PING") {
        (Command::Ping, "PING")
    } else if verb.eq_ignore_ascii_case(b"DISCONNECT") {
        (Command::Disconnect, "DISCONNECT")
    } else if verb.eq_ignore_ascii_case(b"HELP") {
        (Command::Help, "HELP")
    } else if verb.eq_ignore_ascii_case(b"ACK") {
        let id = words
            .next()
            .and_then(|w| std::str::from_utf8(w).ok()?.parse().ok())
            .ok_or(CommandError::AckSyntax)?;
        (Command::Ack(id), "ACK")
    } else {
        let upper = std::str::from_utf8(verb)
            .map(str::to_ascii_uppercase)
            .unwrap_or_default();
        return match chat::parse(&upper, line) {
            Some(parsed) => Ok(Command::Chat(parsed?)),
            None => Err(CommandError::Unknown(Echo::of(verb))),
        };
    };
    match words.next() {
        None => Ok(command),
        Some(_) if name == "ACK" => Err(CommandError::AckSyntax),
        Some(_) => Err(CommandError::ExtraArguments(name)),
    }
}

pub(crate) fn trim(line: &[u8]) -> &[u8] {
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &line[start..end]
}

/// Why the node ends a session with a `BYE:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByeReason {
    /// The client sent `DISCONNECT`.
    Disconnect,
    /// The node is shutting down (SIGINT/SIGTERM).
    Shutdown,
    /// The same client id connected again, here or on another node.
    TakenOver,
    /// The client id was banned while connected.
    Banned,
}

/// A line the node sends.
#[derive(Clone, Copy)]
pub enum Reply<'a> {
    GetClientId,
    SetClientId(ClientId),
    Message(&'a [u8]),
    /// `MESSAGE <id>: <text>`, in acknowledged mode.
    AckedMessage(u64, &'a [u8]),
    /// `DROPPED <n>`: n messages expired or were replaced before they could be delivered.
    Dropped(u64),
    Pong,
    /// `NOTICE: waiting ...`: the previous session of this client (on the node named) has not
    /// handed over yet; messages follow once it has, at the latest after the seconds given.
    Waiting(&'a str, u64),
    Bye(ByeReason),
    /// `ERROR: <what>`; the text comes from an error's `Display`.
    Error(&'a (dyn fmt::Display + Sync)),
}

impl Reply<'_> {
    /// Appends the reply, CRLF-terminated, to `buf`.
    pub fn write_to(&self, buf: &mut BytesMut) {
        match self {
            Reply::GetClientId => buf.put_slice(b"GET_CLIENT_ID"),
            Reply::SetClientId(id) => {
                buf.put_slice(b"SET_CLIENT_ID: ");
                buf.put_slice(id.to_string().as_bytes());
            }
            Reply::Message(body) => {
                buf.put_slice(b"MESSAGE: ");
                put_one_line(buf, body);
            }
            Reply::AckedMessage(id, body) => {
                buf.put_slice(b"MESSAGE ");
                buf.put_slice(id.to_string().as_bytes());
                buf.put_slice(b": ");
                put_one_line(buf, body);
            }
            Reply::Dropped(n) => {
                buf.put_slice(b"DROPPED ");
                buf.put_slice(n.to_string().as_bytes());
            }
            Reply::Pong => buf.put_slice(b"PONG"),
            Reply::Waiting(node, secs) => {
                buf.put_slice(b"NOTICE: waiting for the previous session of this client (on ");
                buf.put_slice(node.as_bytes());
                buf.put_slice(b") to hand over; messages follow within ");
                buf.put_slice(secs.to_string().as_bytes());
                buf.put_slice(b" s");
            }
            Reply::Bye(reason) => {
                buf.put_slice(b"BYE: ");
                buf.put_slice(match reason {
                    ByeReason::Disconnect => b"disconnected".as_slice(),
                    ByeReason::Shutdown => b"server shutting down, reconnect later",
                    ByeReason::TakenOver => b"session taken over by a newer connection",
                    ByeReason::Banned => b"banned",
                });
            }
            Reply::Error(what) => {
                buf.put_slice(b"ERROR: ");
                buf.put_slice(what.to_string().as_bytes());
            }
        }
        buf.put_slice(EOL);
    }

    /// The reply as one CRLF-terminated line.
    pub fn to_bytes(&self) -> BytesMut {
        let mut buf = BytesMut::new();
        self.write_to(&mut buf);
        buf
    }
}

/// Appends a message body that cannot break out of its line: enqueue refuses CR and LF, and a body
/// that reached the database some other way has them replaced by spaces here.
pub(crate) fn put_one_line(buf: &mut BytesMut, body: &[u8]) {
    if !body.iter().any(|b| matches!(b, b'\r' | b'\n')) {
        buf.put_slice(body);
        return;
    }
    buf.extend(
        body.iter()
            .map(|&b| if matches!(b, b'\r' | b'\n') { b' ' } else { b }),
    );
}

/// Errors that end a session or a handshake; their `Display` is the text after `ERROR: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("unknown client id")]
    UnknownClient,
    #[error("wrong name or password")]
    WrongLogin,
    #[error("line too long (limit {0} bytes)")]
    LineTooLong(usize),
    #[error("handshake timed out after {0} s")]
    HandshakeTimeout(u64),
    #[error("service unavailable, try again later")]
    Unavailable,
    #[error("server full, try again later")]
    ServerFull,
    #[error("banned")]
    Banned,
    #[error("too many failed handshakes from your address, try again later")]
    RateLimited,
    #[error(transparent)]
    Hello(#[from] HelloError),
    #[error("ACK outside acknowledged mode (answer GET_CLIENT_ID with NONE ACK or <id> ACK)")]
    NotAckMode,
    #[error("message {0} is not awaiting acknowledgement")]
    NotInFlight(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(reply: Reply<'_>) -> String {
        String::from_utf8(reply.to_bytes().to_vec()).unwrap()
    }

    #[test]
    fn hello_accepts_none_in_any_case() {
        let new = |ack| Hello {
            identity: Identity::New,
            ack,
        };
        assert_eq!(parse_hello(b"NONE"), Ok(new(false)));
        assert_eq!(parse_hello(b" none \t"), Ok(new(false)));
        assert_eq!(parse_hello(b"none ack"), Ok(new(true)));
        assert_eq!(
            parse_hello(b"NONE PLEASE").unwrap_err().to_string(),
            "unknown mode \"PLEASE\" (expected ACK or nothing)"
        );
    }

    #[test]
    fn hello_accepts_an_id_in_any_case() {
        let id: ClientId = "7c0a8f4e-3b1d-4c2e-9f00-1a2b3c4d5e6f".parse().unwrap();
        assert_eq!(
            parse_hello(b"7C0A8F4E-3B1D-4C2E-9F00-1A2B3C4D5E6F"),
            Ok(Hello {
                identity: Identity::Resume(id),
                ack: false
            })
        );
        assert!(
            parse_hello(b"7c0a8f4e-3b1d-4c2e-9f00-1a2b3c4d5e6f ACK")
                .unwrap()
                .ack
        );
    }

    #[test]
    fn hello_takes_a_login() {
        let hello = parse_hello(b"login Alice s3cret-pass ACK").unwrap();
        assert!(hello.ack);
        match hello.identity {
            Identity::Login { name, password } => {
                assert_eq!((name.as_str(), password.as_str()), ("Alice", "s3cret-pass"));
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            &b"LOGIN"[..],
            b"LOGIN alice",
            b"LOGIN alice pw extra",
            b"LOGIN 9x pw",
        ] {
            assert_eq!(parse_hello(bad), Err(HelloError::LoginSyntax), "{bad:?}");
        }
    }

    #[test]
    fn hello_rejects_junk_with_a_safe_echo() {
        let err = parse_hello(b"hello\x1b[2J\"").unwrap_err();
        assert_eq!(err.to_string(), "malformed client id \"hello?[2J?\"");
        assert_eq!(parse_hello(b"  "), Err(HelloError::Empty));
        let long = parse_hello(&[b'x'; 100]).unwrap_err().to_string();
        assert!(long.ends_with("...\""), "{long}");
        assert!(long.len() < 60, "{long}");
    }

    #[test]
    fn commands_are_case_insensitive_and_reject_arguments() {
        assert_eq!(parse_command(b"ping"), Ok(Command::Ping));
        assert_eq!(parse_command(b"  DisConnect "), Ok(Command::Disconnect));
        assert_eq!(parse_command(b""), Ok(Command::Empty));
        assert_eq!(
            parse_command(b"PING now"),
            Err(CommandError::ExtraArguments("PING"))
        );
        assert_eq!(parse_command(b"ack 42"), Ok(Command::Ack(42)));
        for bad in [&b"ACK"[..], b"ACK x", b"ACK 1 2", b"ACK -1"] {
            assert_eq!(parse_command(bad), Err(CommandError::AckSyntax));
        }
        assert_eq!(
            parse_command(b"HELLO there").unwrap_err().to_string(),
            "unknown command \"HELLO\""
        );
        assert_eq!(parse_command(b"help"), Ok(Command::Help));
    }

    #[test]
    fn replies_are_crlf_lines() {
        assert_eq!(line(Reply::GetClientId), "GET_CLIENT_ID\r\n");
        assert_eq!(line(Reply::Message(b"hi there")), "MESSAGE: hi there\r\n");
        assert_eq!(line(Reply::AckedMessage(7, b"hi")), "MESSAGE 7: hi\r\n");
        assert_eq!(line(Reply::Dropped(3)), "DROPPED 3\r\n");
        assert_eq!(
            line(Reply::Message(b"a\r\nERROR: forged\nz")),
            "MESSAGE: a  ERROR: forged z\r\n"
        );
        assert_eq!(line(Reply::Pong), "PONG\r\n");
        assert_eq!(
            line(Reply::Waiting("node-a", 14)),
            "NOTICE: waiting for the previous session of this client (on node-a) to hand over; \
             messages follow within 14 s\r\n"
        );
        assert_eq!(
            line(Reply::Error(&SessionError::UnknownClient)),
            "ERROR: unknown client id\r\n"
        );
    }
}
