//! The chat replies on the wire: results, list lines, delivered chat messages, the errors of chat commands, and `HELP`.

use std::fmt::{self, Write as _};

use bytes::{BufMut, BytesMut};

use super::{put_one_line, EOL};

/// Longest preview of a last message in a `ROOM` line, in bytes.
const PREVIEW_MAX: usize = 100;

/// A message as `ROOMS` and `HISTORY` show it.
#[derive(Debug, Clone)]
pub struct Shown<'a> {
    pub id: u64,
    /// When it was stored, RFC 3339 UTC (`2026-12-03T08:42:53.123Z`).
    pub at: &'a str,
    /// Who posted it: a name, a client id, or `*` for a producer.
    pub sender: &'a str,
    pub body: &'a [u8],
}

/// A line of a chat reply, or a chat message delivered.
pub enum ChatLine<'a> {
    /// `SENT <message_id>`: the message is stored (after the commit).
    Sent(u64),
    Registered(&'a str),
    /// `WHOAMI`: client id, name, how others see the client, acknowledged mode.
    WhoAmI {
        id: &'a str,
        name: Option<&'a str>,
        shown: &'a str,
        ack: bool,
    },
    PasswordChanged,
    /// `PRIVATE`: the private room's label and the other person.
    PrivateOpened {
        label: &'a str,
        peer: &'a str,
    },
    ContactAdded {
        who: &'a str,
        already: bool,
    },
    ContactRemoved(&'a str),
    Created {
        label: &'a str,
        invite_only: bool,
    },
    Joined {
        label: &'a str,
        already: bool,
    },
    Left(&'a str),
    Invited {
        who: &'a str,
        label: &'a str,
        already: bool,
    },
    /// `READ`: the conversation, the message read up to (if any), what is still unread.
    Read {
        label: &'a str,
        up_to: Option<u64>,
        unread: u64,
    },
    /// `ONLINE` line: someone online.
    Online(&'a str),
    /// `CONTACTS` line.
    Contact {
        who: &'a str,
        online: bool,
    },
    /// `MEMBERS` line.
    Member {
        who: &'a str,
        online: bool,
    },
    /// `ROOMS` line: one conversation, its unread count and its last message.
    Room {
        label: &'a str,
        unread: u64,
        last: Option<Shown<'a>>,
    },
    /// `LIST` line: a public room and its member count.
    Listed {
        label: &'a str,
        members: u64,
    },
    /// `HISTORY` line.
    History {
        label: &'a str,
        shown: Shown<'a>,
    },
    /// The last line of a list: how many, which page, and how to get the next.
    Summary {
        count: usize,
        /// What is counted, singular and plural (`("room", "rooms")`).
        what: (&'a str, &'a str),
        page: u32,
        pages: u32,
        next: Option<&'a str>,
    },
    /// The last line of a `HISTORY` page.
    HistoryEnd {
        count: usize,
        older: Option<(&'a str, u32, u64)>,
    },
    /// A chat message delivered: `MESSAGE[ <id>]: <label> <sender>: <text>`; in a private room
    /// (label `@<sender>`) just `MESSAGE[ <id>]: @<sender>: <text>`.
    Message {
        ack_id: Option<u64>,
        label: &'a str,
        sender: &'a str,
        body: &'a [u8],
    },
    /// A notice put in an invited client's own queue.
    InviteNotice {
        by: &'a str,
        label: &'a str,
    },
}

impl ChatLine<'_> {
    /// Appends the line, CRLF-terminated, to `buf`.
    pub fn write_to(&self, buf: &mut BytesMut) {
        let mut text = String::new();
        match self {
            ChatLine::Sent(id) => {
                let _ = write!(text, "SENT {id}");
            }
            ChatLine::Registered(name) => {
                let _ = write!(
                    text,
                    "OK: registered as {name}; answer GET_CLIENT_ID with LOGIN {name} <password> to come back on any node"
                );
            }
            ChatLine::WhoAmI {
                id,
                name,
                shown,
                ack,
            } => {
                let mode = if *ack { "acknowledged" } else { "plain" };
                let _ = match name {
                    Some(name) => write!(
                        text,
                        "OK: you are {name}, client id {id} (keep it private), {mode} mode"
                    ),
                    None => write!(
                        text,
                        "OK: you are {shown} to others, client id {id} (keep it private), {mode} mode; REGISTER <name> <password> takes a name"
                    ),
                };
            }
            ChatLine::PasswordChanged => text.push_str("OK: password changed"),
            ChatLine::PrivateOpened { label, peer } => {
                let _ = write!(
                    text,
                    "OK: {label} is your private room with {peer}; SEND {peer} <text> writes to it"
                );
            }
            ChatLine::ContactAdded { who, already } => {
                let _ = if *already {
                    write!(text, "OK: {who} is already one of your contacts")
                } else {
                    write!(text, "OK: {who} added to your contacts")
                };
            }
            ChatLine::ContactRemoved(who) => {
                let _ = write!(text, "OK: {who} removed from your contacts");
            }
            ChatLine::Created { label, invite_only } => {
                let kind = if *invite_only {
                    "invite-only"
                } else {
                    "public"
                };
                let _ = write!(
                    text,
                    "OK: created {label} ({kind}); you are its first member"
                );
            }
            ChatLine::Joined { label, already } => {
                let _ = if *already {
                    write!(text, "OK: you are already in {label}")
                } else {
                    write!(text, "OK: joined {label}")
                };
            }
            ChatLine::Left(label) => {
                let _ = write!(text, "OK: left {label}");
            }
            ChatLine::Invited {
                who,
                label,
                already,
            } => {
                let _ = if *already {
                    write!(text, "OK: {who} is already in {label}")
                } else {
                    write!(text, "OK: invited {who} to {label}")
                };
            }
            ChatLine::Read {
                label,
                up_to,
                unread,
            } => {
                let _ = match up_to {
                    Some(id) => {
                        write!(text, "OK: {label} read up to message {id}; {unread} unread")
                    }
                    None => write!(text, "OK: nothing to read in {label}; {unread} unread"),
                };
            }
            ChatLine::Online(who) => {
                let _ = write!(text, "ONLINE {who}");
            }
            ChatLine::Contact { who, online } => {
                let _ = write!(text, "CONTACT {who} {}", presence(*online));
            }
            ChatLine::Member { who, online } => {
                let _ = write!(text, "MEMBER {who} {}", presence(*online));
            }
            ChatLine::Room {
                label,
                unread,
                last,
            } => {
                let _ = write!(text, "ROOM {label} {unread}");
                match last {
                    Some(m) => {
                        let _ = write!(text, " {} {} {}: ", m.id, m.at, m.sender);
                        text.push_str(&preview(m.body));
                    }
                    None => text.push_str(" -"),
                }
            }
            ChatLine::Listed { label, members } => {
                let _ = write!(text, "LIST {label} {members}");
            }
            ChatLine::History { label, shown } => {
                let _ = write!(
                    text,
                    "HISTORY {label} {} {} {}: ",
                    shown.id, shown.at, shown.sender
                );
                buf.put_slice(text.as_bytes());
                put_one_line(buf, shown.body);
                buf.put_slice(EOL);
                return;
            }
            ChatLine::Summary {
                count,
                what,
                page,
                pages,
                next,
            } => {
                let what = if *count == 1 { what.0 } else { what.1 };
                let _ = write!(text, "OK: {count} {what}, page {page} of {pages}");
                if let Some(next) = next {
                    let _ = write!(text, "; next: {next} {}", page + 1);
                }
            }
            ChatLine::HistoryEnd { count, older } => {
                let what = if *count == 1 { "message" } else { "messages" };
                let _ = match older {
                    Some((label, n, before)) => write!(
                        text,
                        "OK: {count} {what}; older: HISTORY {label} {n} BEFORE {before}"
                    ),
                    None => write!(text, "OK: {count} {what}; no older ones"),
                };
            }
            ChatLine::Message {
                ack_id,
                label,
                sender,
                body,
            } => {
                text.push_str("MESSAGE");
                if let Some(id) = ack_id {
                    let _ = write!(text, " {id}");
                }
                let private = label.strip_prefix('@') == Some(sender);
                let _ = if private {
                    write!(text, ": {label}: ")
                } else {
                    write!(text, ": {label} {sender}: ")
                };
                buf.put_slice(text.as_bytes());
                put_one_line(buf, body);
                buf.put_slice(EOL);
                return;
            }
            ChatLine::InviteNotice { by, label } => {
                let _ = write!(
                    text,
                    "* {by} invited you to {label} (JOIN {label} to accept)"
                );
            }
        }
        buf.put_slice(text.as_bytes());
        buf.put_slice(EOL);
    }

    /// The line without its CRLF, as text (for notices stored in a queue).
    pub fn text(&self) -> String {
        let mut buf = BytesMut::new();
        self.write_to(&mut buf);
        String::from_utf8_lossy(&buf[..buf.len() - EOL.len()]).into_owned()
    }
}

fn presence(online: bool) -> &'static str {
    if online {
        "online"
    } else {
        "offline"
    }
}

/// The start of a message for a one-line preview: at most `PREVIEW_MAX` bytes, on a character
/// boundary, line breaks as blanks, `...` when cut.
fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    for c in text.chars() {
        if out.len() + c.len_utf8() > PREVIEW_MAX {
            out.push_str("...");
            break;
        }
        out.push(if c == '\r' || c == '\n' { ' ' } else { c });
    }
    out
}

/// Why a chat command was refused (the session stays open, nothing is stored). The `Display` is
/// the text after `ERROR: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    #[error("no one is named {0:?}")]
    NoSuchPerson(String),
    #[error("no one is named {0:?} (for the room, write #{0})")]
    NoSuchPersonMaybeRoom(String),
    #[error("no client has the id {0}")]
    NoSuchClient(String),
    #[error("no room {0} (CREATE {0} makes one)")]
    NoSuchRoom(String),
    #[error("you are not in {0}")]
    NotMember(String),
    #[error("you have no private room with {0} yet (SEND {0} <text> or PRIVATE {0} opens it)")]
    NoPrivate(String),
    #[error("{0} is yourself")]
    Yourself(String),
    #[error("the name {0:?} is taken")]
    NameTaken(String),
    #[error("you already have a name: {0}")]
    AlreadyNamed(String),
    #[error("you have no name: REGISTER <name> <password> takes one")]
    NoName,
    #[error("the old password is wrong")]
    WrongPassword,
    #[error("the room {0} exists (JOIN {0} to enter it)")]
    RoomTaken(String),
    #[error("{0} is invite-only: a member must INVITE you first")]
    InviteOnly(String),
    #[error("{0} is full ({1} members)")]
    RoomFull(String, usize),
    #[error("you are in {0} rooms, the most allowed; LEAVE one first")]
    TooManyRooms(usize),
    #[error("you have {0} private rooms, the most allowed")]
    TooManyPrivate(usize),
    #[error("{0} has too many private rooms to open another")]
    PeerTooManyPrivate(String),
    #[error("{0} is a private room: it cannot be left")]
    CannotLeavePrivate(String),
    #[error("{0} is not one of your contacts")]
    NotAContact(String),
    #[error("you have {0} contacts, the most allowed")]
    TooManyContacts(usize),
    #[error("sending too fast: at most {0} messages per second; nothing was sent")]
    TooFast(u32),
    #[error("too many commands: at most {0} per second; try again in a moment")]
    TooManyCommands(u32),
    #[error("message {0} is not in {1}")]
    NotInConversation(u64, String),
    #[error("message text is {0} bytes, over the limit of {1}")]
    TextTooLong(usize, usize),
    #[error("service unavailable, try again later")]
    Unavailable,
}

/// `HELP`: every command a person can type, one line each, then the end line.
pub fn write_help(buf: &mut BytesMut) {
    for (syntax, meaning) in HELP {
        let mut line = String::from("HELP ");
        let _ = write!(line, "{syntax:<47} {meaning}");
        buf.put_slice(line.trim_end().as_bytes());
        buf.put_slice(EOL);
    }
    let mut end = String::new();
    let _ = write!(
        end,
        "OK: {} commands; rooms are #name, people a name or a client id; docs/PROTOCOL.md has every line",
        HELP.len()
    );
    buf.put_slice(end.as_bytes());
    buf.put_slice(EOL);
}

/// The commands, as `HELP` lists them.
const HELP: &[(&str, &str)] = &[
    ("PING", "answered with PONG"),
    ("DISCONNECT", "end the session"),
    ("ACK <message_id>", "acknowledged mode: I have this message"),
    ("WHOAMI", "your client id and name (NAME does the same)"),
    (
        "REGISTER <name> <password>",
        "take a name; then LOGIN <name> <password> at GET_CLIENT_ID",
    ),
    ("PASSWORD <old> <new>", "change your password"),
    (
        "SEND <name-or-id> <text>",
        "a private message (SAY @name <text> too)",
    ),
    (
        "PRIVATE <name-or-id>",
        "open your private room with someone",
    ),
    ("ONLINE [page]", "who is online, in the whole cluster"),
    ("CONTACT ADD <name-or-id>", "add a contact"),
    ("CONTACT DEL <name-or-id>", "remove a contact"),
    ("CONTACTS [page]", "your contacts, online or not"),
    (
        "CREATE <room> [INVITE]",
        "create a room (INVITE: members invite others)",
    ),
    ("JOIN <room>", "join a room"),
    ("LEAVE <room>", "leave a room"),
    (
        "INVITE <room> <name-or-id>",
        "invite someone to a room you are in",
    ),
    ("SAY <room> <text>", "post to a room"),
    (
        "ROOMS [page]",
        "your rooms: unread counts and last messages",
    ),
    ("MEMBERS <room> [page]", "who is in a room"),
    ("LIST [page]", "the public rooms"),
    (
        "HISTORY <#room-or-name> [count] [BEFORE <id>]",
        "earlier messages, newest page first",
    ),
    (
        "READ <#room-or-name> <message_id>|ALL",
        "mark messages read",
    ),
    ("HELP", "this list"),
];

/// A timestamp (microseconds since the Unix epoch) as RFC 3339 UTC with milliseconds.
pub fn timestamp(us: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(us);
    humantime::format_rfc3339_millis(t).to_string()
}

impl fmt::Debug for ChatLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(l: ChatLine<'_>) -> String {
        let mut buf = BytesMut::new();
        l.write_to(&mut buf);
        String::from_utf8(buf.to_vec()).unwrap()
    }

    #[test]
    fn messages_show_where_and_who() {
        let room = ChatLine::Message {
            ack_id: None,
            label: "#general",
            sender: "alice",
            body: b"hi all",
        };
        assert_eq!(line(room), "MESSAGE: #general alice: hi all\r\n");
        let private = ChatLine::Message {
            ack_id: Some(42),
            label: "@alice",
            sender: "alice",
            body: b"psst\r\nERROR: forged",
        };
        assert_eq!(line(private), "MESSAGE 42: @alice: psst  ERROR: forged\r\n");
    }

    #[test]
    fn lists_end_with_a_summary() {
        let long = "x".repeat(150);
        let shown = Shown {
            id: 7,
            at: "2026-12-03T08:42:53.123Z",
            sender: "bob",
            body: long.as_bytes(),
        };
        let room = line(ChatLine::Room {
            label: "#general",
            unread: 3,
            last: Some(shown.clone()),
        });
        assert!(room.starts_with("ROOM #general 3 7 2026-12-03T08:42:53.123Z bob: xxx"));
        assert!(room.ends_with("...\r\n") && room.len() < 160, "{room}");
        assert_eq!(
            line(ChatLine::Room {
                label: "#quiet",
                unread: 0,
                last: None
            }),
            "ROOM #quiet 0 -\r\n"
        );
        assert_eq!(
            line(ChatLine::Summary {
                count: 50,
                what: ("online", "online"),
                page: 1,
                pages: 3,
                next: Some("ONLINE")
            }),
            "OK: 50 online, page 1 of 3; next: ONLINE 2\r\n"
        );
        assert_eq!(
            line(ChatLine::HistoryEnd {
                count: 2,
                older: Some(("#general", 2, 40))
            }),
            "OK: 2 messages; older: HISTORY #general 2 BEFORE 40\r\n"
        );
    }

    #[test]
    fn help_lists_every_command_and_ends_with_ok() {
        let mut buf = BytesMut::new();
        write_help(&mut buf);
        let text = String::from_utf8(buf.to_vec()).unwrap();
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), HELP.len() + 1);
        assert!(lines[..HELP.len()].iter().all(|l| l.starts_with("HELP ")));
        assert!(lines.last().unwrap().starts_with("OK: "));
        for verb in [
            "SEND", "SAY", "JOIN", "HISTORY", "READ", "ONLINE", "CONTACTS",
        ] {
            assert!(text.contains(&format!("HELP {verb} ")), "{verb}");
        }
    }

    #[test]
    fn errors_are_short_and_printable() {
        let long = "x".repeat(32);
        for e in [
            ChatError::NoSuchPersonMaybeRoom(long.clone()),
            ChatError::RoomFull(format!("#{long}"), 1000),
            ChatError::TooFast(10),
        ] {
            let text = e.to_string();
            assert!(
                text.len() < 200 && !text.chars().any(char::is_control),
                "{text}"
            );
        }
        assert_eq!(timestamp(1_000_123), "1970-01-01T00:00:01.000Z");
    }
}
