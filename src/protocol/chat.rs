//! The chat commands on the wire: their syntax, parsed into [`ChatCommand`], and why one is refused.

use super::names::{Name, NameError, Peer, Target, TargetError};
use super::{words, Echo};

/// Default messages per `HISTORY` page.
pub const HISTORY_DEFAULT: u32 = 20;
/// Most messages per `HISTORY` page.
pub const HISTORY_MAX: u32 = 100;
/// The last page a list goes to (50,000 lines at 50 a page).
pub const MAX_PAGE: u32 = 1000;
/// Shortest password, in bytes.
pub const PASSWORD_MIN: usize = 8;
/// Longest password, in bytes.
pub const PASSWORD_MAX: usize = 128;

/// What a `READ` marks as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadUpTo {
    /// Everything in the conversation now.
    All,
    /// Up to and including this message.
    Message(u64),
}

/// A chat command of an established session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatCommand {
    /// `REGISTER <name> <password>`: binds a name to this client id.
    Register { name: Name, password: String },
    /// `WHOAMI` (or `NAME`): this client's id and name.
    WhoAmI,
    /// `PASSWORD <old> <new>`.
    Password { old: String, new: String },
    /// `SEND <name-or-id> <text>`: a message in the private room with a person.
    Send { to: Peer, text: String },
    /// `SAY <room> <text>` (or `SAY @name <text>`).
    Say { to: Target, text: String },
    /// `PRIVATE <name-or-id>`: opens the private room with a person.
    Private(Peer),
    /// `ONLINE [page]`.
    Online { page: u32 },
    /// `CONTACT ADD <name-or-id>`.
    ContactAdd(Peer),
    /// `CONTACT DEL <name-or-id>`.
    ContactDel(Peer),
    /// `CONTACTS [page]`.
    Contacts { page: u32 },
    /// `CREATE <room> [INVITE]`.
    Create { room: Name, invite_only: bool },
    /// `JOIN <room>`.
    Join(Name),
    /// `LEAVE <room>`.
    Leave(Target),
    /// `INVITE <room> <name-or-id>`.
    Invite { room: Name, who: Peer },
    /// `ROOMS [page]`: this client's rooms, most recent first, with unread counts.
    Rooms { page: u32 },
    /// `MEMBERS <room> [page]`.
    Members { room: Target, page: u32 },
    /// `LIST [page]`: the public rooms.
    List { page: u32 },
    /// `HISTORY <room-or-name> [count] [before <message_id>]`.
    History {
        of: Target,
        count: u32,
        before: Option<u64>,
    },
    /// `READ <room-or-name> <message_id>|all`.
    Read { of: Target, up_to: ReadUpTo },
}

impl ChatCommand {
    /// Whether the command hashes a password (slow on purpose).
    pub fn hashes_password(&self) -> bool {
        matches!(
            self,
            ChatCommand::Register { .. } | ChatCommand::Password { .. }
        )
    }

    /// Whether the command answers from the read cursors (so that they must be up to date).
    pub fn reads_cursors(&self) -> bool {
        matches!(self, ChatCommand::Rooms { .. } | ChatCommand::Read { .. })
    }
}

/// Why a chat command's syntax was refused (the session stays open).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatSyntax {
    #[error("usage: {0}")]
    Usage(&'static str),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("message text must be UTF-8")]
    NotUtf8,
    #[error("message text contains control characters (only TAB is allowed)")]
    ControlCharacters,
    #[error("a password is {PASSWORD_MIN} to {PASSWORD_MAX} bytes without blanks")]
    PasswordRules,
    #[error("{0} is not a page number (1 to {MAX_PAGE})")]
    BadPage(Echo),
    #[error("the count is 1 to {HISTORY_MAX} messages, not {0}")]
    BadCount(Echo),
}

const USAGE_REGISTER: &str = "REGISTER <name> <password>";
const USAGE_PASSWORD: &str = "PASSWORD <old password> <new password>";
const USAGE_SEND: &str = "SEND <name-or-id> <text>";
const USAGE_SAY: &str = "SAY <room> <text> (or SAY @name <text>)";
const USAGE_PRIVATE: &str = "PRIVATE <name-or-id>";
const USAGE_CONTACT: &str = "CONTACT ADD <name-or-id> or CONTACT DEL <name-or-id>";
const USAGE_CREATE: &str = "CREATE <room> [INVITE]";
const USAGE_JOIN: &str = "JOIN <room>";
const USAGE_LEAVE: &str = "LEAVE <room>";
const USAGE_INVITE: &str = "INVITE <room> <name-or-id>";
const USAGE_MEMBERS: &str = "MEMBERS <room> [page]";
const USAGE_HISTORY: &str = "HISTORY <#room-or-name> [count] [BEFORE <message_id>]";
const USAGE_READ: &str = "READ <#room-or-name> <message_id>|ALL";

/// Parses the chat command `verb` (upper case) of `line`; `None` when `verb` is not one.
pub fn parse(verb: &str, line: &[u8]) -> Option<Result<ChatCommand, ChatSyntax>> {
    let mut args = words(line).skip(1);
    let parsed = match verb {
        "REGISTER" => register(&mut args),
        "WHOAMI" | "NAME" => no_more(args, ChatCommand::WhoAmI, "WHOAMI"),
        "PASSWORD" => password(&mut args),
        "SEND" => send(line),
        "SAY" => say(line),
        "PRIVATE" => {
            one(&mut args, USAGE_PRIVATE).and_then(|w| Ok(ChatCommand::Private(Peer::parse(w)?)))
        }
        "ONLINE" => page_only(args, "ONLINE [page]").map(|page| ChatCommand::Online { page }),
        "CONTACT" => contact(&mut args),
        "CONTACTS" => page_only(args, "CONTACTS [page]").map(|page| ChatCommand::Contacts { page }),
        "CREATE" => create(&mut args),
        "JOIN" => one(&mut args, USAGE_JOIN).and_then(|w| match Target::room_first(w)? {
            Target::Room(room) => Ok(ChatCommand::Join(room)),
            Target::Person(_) => Err(TargetError::PrivateName(Echo::of(w)).into()),
        }),
        "LEAVE" => {
            one(&mut args, USAGE_LEAVE).and_then(|w| Ok(ChatCommand::Leave(Target::room_first(w)?)))
        }
        "INVITE" => invite(&mut args),
        "ROOMS" => page_only(args, "ROOMS [page]").map(|page| ChatCommand::Rooms { page }),
        "MEMBERS" => members(&mut args),
        "LIST" => page_only(args, "LIST [page]").map(|page| ChatCommand::List { page }),
        "HISTORY" => history(&mut args),
        "READ" => read(&mut args),
        _ => return None,
    };
    Some(parsed)
}

type Words<'a> = std::iter::Skip<super::Words<'a>>;

fn one<'a>(args: &mut Words<'a>, usage: &'static str) -> Result<&'a [u8], ChatSyntax> {
    match (args.next(), args.next()) {
        (Some(w), None) => Ok(w),
        _ => Err(ChatSyntax::Usage(usage)),
    }
}

fn no_more(
    mut args: Words<'_>,
    cmd: ChatCommand,
    usage: &'static str,
) -> Result<ChatCommand, ChatSyntax> {
    match args.next() {
        None => Ok(cmd),
        Some(_) => Err(ChatSyntax::Usage(usage)),
    }
}

/// An optional page number (1-based), the only argument.
fn page_only(mut args: Words<'_>, usage: &'static str) -> Result<u32, ChatSyntax> {
    let page = match args.next() {
        None => 1,
        Some(w) => parse_page(w)?,
    };
    match args.next() {
        None => Ok(page),
        Some(_) => Err(ChatSyntax::Usage(usage)),
    }
}

fn parse_page(w: &[u8]) -> Result<u32, ChatSyntax> {
    std::str::from_utf8(w)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|p| (1..=MAX_PAGE).contains(p))
        .ok_or_else(|| ChatSyntax::BadPage(Echo::of(w)))
}

fn password_word(w: &[u8]) -> Result<String, ChatSyntax> {
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&w.len()) {
        return Err(ChatSyntax::PasswordRules);
    }
    String::from_utf8(w.to_vec()).map_err(|_| ChatSyntax::PasswordRules)
}

fn register(args: &mut Words<'_>) -> Result<ChatCommand, ChatSyntax> {
    let (Some(name), Some(password), None) = (args.next(), args.next(), args.next()) else {
        return Err(ChatSyntax::Usage(USAGE_REGISTER));
    };
    Ok(ChatCommand::Register {
        name: Name::parse(name)?,
        password: password_word(password)?,
    })
}

fn password(args: &mut Words<'_>) -> Result<ChatCommand, ChatSyntax> {
    let (Some(old), Some(new), None) = (args.next(), args.next(), args.next()) else {
        return Err(ChatSyntax::Usage(USAGE_PASSWORD));
    };
    Ok(ChatCommand::Password {
        old: String::from_utf8_lossy(old).into_owned(),
        new: password_word(new)?,
    })
}

/// The text after the first `n` words of `line`, blanks around it trimmed; `None` when empty.
fn tail(line: &[u8], n: usize) -> Option<&[u8]> {
    let mut rest = line;
    for _ in 0..n {
        let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        rest = &rest[start..];
        let end = rest
            .iter()
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    let text = super::trim(rest);
    (!text.is_empty()).then_some(text)
}

/// The second word and the text after it.
fn target_and_text<'a>(
    line: &'a [u8],
    usage: &'static str,
) -> Result<(&'a [u8], String), ChatSyntax> {
    let target = words(line).nth(1).ok_or(ChatSyntax::Usage(usage))?;
    let text = tail(line, 2).ok_or(ChatSyntax::Usage(usage))?;
    // A CR inside a line, ESC and the like would reach other people's terminals.
    if text.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(ChatSyntax::ControlCharacters);
    }
    let text = String::from_utf8(text.to_vec()).map_err(|_| ChatSyntax::NotUtf8)?;
    Ok((target, text))
}

fn send(line: &[u8]) -> Result<ChatCommand, ChatSyntax> {
    let (to, text) = target_and_text(line, USAGE_SEND)?;
    Ok(ChatCommand::Send {
        to: Peer::parse(to)?,
        text,
    })
}

fn say(line: &[u8]) -> Result<ChatCommand, ChatSyntax> {
    let (to, text) = target_and_text(line, USAGE_SAY)?;
    Ok(ChatCommand::Say {
        to: Target::room_first(to)?,
        text,
    })
}

fn contact(args: &mut Words<'_>) -> Result<ChatCommand, ChatSyntax> {
    let (Some(op), Some(who), None) = (args.next(), args.next(), args.next()) else {
        return Err(ChatSyntax::Usage(USAGE_CONTACT));
    };
    let who = Peer::parse(who)?;
    if op.eq_ignore_ascii_case(b"ADD") {
        Ok(ChatCommand::ContactAdd(who))
    } else if op.eq_ignore_ascii_case(b"DEL") || op.eq_ignore_ascii_case(b"DELETE") {
        Ok(ChatCommand::ContactDel(who))
    } else {
        Err(ChatSyntax::Usage(USAGE_CONTACT))
    }
}

/// A room name where only a room makes sense (`#` optional, private rooms refused).
fn room_name(w: &[u8]) -> Result<Name, ChatSyntax> {
    match Target::room_first(w)? {
        Target::Room(room) => Ok(room),
        Target::Person(_) => Err(TargetError::PrivateName(Echo::of(w)).into()),
    }
}

fn create(args: &mut Words<'_>) -> Result<ChatCommand, ChatSyntax> {
    let room = room_name(args.next().ok_or(ChatSyntax::Usage(USAGE_CREATE))?)?;
    let invite_only = match (args.next(), args.next()) {
        (None, _) => false,
        (Some(w), None) if w.eq_ignore_ascii_case(b"INVITE") => true,
        _ => return Err(ChatSyntax::Usage(USAGE_CREATE)),
    };
    Ok(ChatCommand::Create { room, invite_only })
}

fn invite(args: &mut Words<'_>) -> Result<ChatCommand, ChatSyntax> {
    let (Some(room), Some(who), None) = (args.next(), args.next(), args.next()) else {
        return Err(ChatSyntax::Usage(USAGE_INVITE));
    };
    Ok(ChatCommand::Invite {
        room: room_name(room)?,
        who: Peer::parse(who)?,
    })
}

fn members(args: &mut Words<'_>) -> Result<ChatCommand, ChatSyntax> {
    let room = Target::room_first(args.next().ok_or(ChatSyntax::Usage(USAGE_MEMBERS))?)?;
    let page = match (args.next(), args.next()) {
        (None, _) => 1,
        (Some(w), None) => parse_page(w)?,
        _ => return Err(ChatSyntax::Usage(USAGE_MEMBERS)),
    };
    Ok(ChatCommand::Members { room, page })
}

fn history(args: &mut Words<'_>) -> Result<ChatCommand, ChatSyntax> {
    let of = Target::person_first(args.next().ok_or(ChatSyntax::Usage(USAGE_HISTORY))?)?;
    let mut count = HISTORY_DEFAULT;
    let mut before = None;
    let mut next = args.next();
    if let Some(w) = next.filter(|w| !w.eq_ignore_ascii_case(b"BEFORE")) {
        count = std::str::from_utf8(w)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|n| (1..=HISTORY_MAX).contains(n))
            .ok_or_else(|| ChatSyntax::BadCount(Echo::of(w)))?;
        next = args.next();
    }
    if let Some(w) = next {
        if !w.eq_ignore_ascii_case(b"BEFORE") {
            return Err(ChatSyntax::Usage(USAGE_HISTORY));
        }
        let id = args
            .next()
            .and_then(|w| std::str::from_utf8(w).ok()?.parse::<u64>().ok())
            .ok_or(ChatSyntax::Usage(USAGE_HISTORY))?;
        before = Some(id);
    }
    match args.next() {
        None => Ok(ChatCommand::History { of, count, before }),
        Some(_) => Err(ChatSyntax::Usage(USAGE_HISTORY)),
    }
}

fn read(args: &mut Words<'_>) -> Result<ChatCommand, ChatSyntax> {
    let (Some(of), Some(up_to), None) = (args.next(), args.next(), args.next()) else {
        return Err(ChatSyntax::Usage(USAGE_READ));
    };
    let up_to = if up_to.eq_ignore_ascii_case(b"ALL") {
        ReadUpTo::All
    } else {
        std::str::from_utf8(up_to)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(ReadUpTo::Message)
            .ok_or(ChatSyntax::Usage(USAGE_READ))?
    };
    Ok(ChatCommand::Read {
        of: Target::person_first(of)?,
        up_to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_line(line: &str) -> Result<ChatCommand, ChatSyntax> {
        let verb = line.split_whitespace().next().unwrap().to_ascii_uppercase();
        parse(&verb, line.as_bytes()).expect("a chat verb")
    }

    fn name(s: &str) -> Name {
        Name::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn messages_keep_their_text() {
        assert_eq!(
            parse_line("SEND bob   hello,  world  "),
            Ok(ChatCommand::Send {
                to: Peer::Name(name("bob")),
                text: "hello,  world".into()
            })
        );
        assert_eq!(
            parse_line("say #general hi there"),
            Ok(ChatCommand::Say {
                to: Target::Room(name("general")),
                text: "hi there".into()
            })
        );
        assert_eq!(
            parse_line("SAY @bob psst"),
            Ok(ChatCommand::Say {
                to: Target::Person(Peer::Name(name("bob"))),
                text: "psst".into()
            })
        );
        assert_eq!(parse_line("SEND bob"), Err(ChatSyntax::Usage(USAGE_SEND)));
        assert_eq!(
            parse_line("SEND bob   "),
            Err(ChatSyntax::Usage(USAGE_SEND))
        );
        assert_eq!(
            parse("SEND", b"SEND bob \xff\xfe"),
            Some(Err(ChatSyntax::NotUtf8))
        );
        for bad in [&b"SAY #x a\rb"[..], b"SAY #x \x1b[2Jhi", b"SEND bob a\x7fb"] {
            let verb = if bad.starts_with(b"SAY") {
                "SAY"
            } else {
                "SEND"
            };
            assert_eq!(parse(verb, bad), Some(Err(ChatSyntax::ControlCharacters)));
        }
        assert!(matches!(parse("SAY", b"SAY #xy a\tb"), Some(Ok(_))));
    }

    #[test]
    fn arity_and_names_are_checked() {
        assert_eq!(
            parse_line("REGISTER alice"),
            Err(ChatSyntax::Usage(USAGE_REGISTER))
        );
        assert_eq!(
            parse_line("REGISTER alice short"),
            Err(ChatSyntax::PasswordRules)
        );
        assert!(matches!(
            parse_line("REGISTER 9lives secret-enough"),
            Err(ChatSyntax::Name(_))
        ));
        assert_eq!(
            parse_line("JOIN general extra"),
            Err(ChatSyntax::Usage(USAGE_JOIN))
        );
        assert!(matches!(
            parse_line("JOIN @bob"),
            Err(ChatSyntax::Target(TargetError::PrivateName(_)))
        ));
        assert!(matches!(
            parse_line("JOIN alice+bob"),
            Err(ChatSyntax::Target(TargetError::PrivateName(_)))
        ));
        assert_eq!(
            parse_line("CREATE #team invite"),
            Ok(ChatCommand::Create {
                room: name("team"),
                invite_only: true
            })
        );
        assert_eq!(
            parse_line("CREATE team secret"),
            Err(ChatSyntax::Usage(USAGE_CREATE))
        );
        assert_eq!(parse_line("WHOAMI now"), Err(ChatSyntax::Usage("WHOAMI")));
        assert_eq!(parse_line("ONLINE 2"), Ok(ChatCommand::Online { page: 2 }));
        assert!(matches!(
            parse_line("ONLINE 0"),
            Err(ChatSyntax::BadPage(_))
        ));
        assert_eq!(
            parse_line("contact add bob"),
            Ok(ChatCommand::ContactAdd(Peer::Name(name("bob"))))
        );
        assert_eq!(
            parse_line("CONTACT KISS bob"),
            Err(ChatSyntax::Usage(USAGE_CONTACT))
        );
    }

    #[test]
    fn history_takes_a_count_and_a_start() {
        let room = || Target::Room(name("general"));
        assert_eq!(
            parse_line("HISTORY #general"),
            Ok(ChatCommand::History {
                of: room(),
                count: HISTORY_DEFAULT,
                before: None
            })
        );
        assert_eq!(
            parse_line("HISTORY #general 5 before 99"),
            Ok(ChatCommand::History {
                of: room(),
                count: 5,
                before: Some(99)
            })
        );
        assert_eq!(
            parse_line("HISTORY #general BEFORE 99"),
            Ok(ChatCommand::History {
                of: room(),
                count: HISTORY_DEFAULT,
                before: Some(99)
            })
        );
        assert!(matches!(
            parse_line("HISTORY #general 101"),
            Err(ChatSyntax::BadCount(_))
        ));
        assert_eq!(
            parse_line("HISTORY #general 5 after 3"),
            Err(ChatSyntax::Usage(USAGE_HISTORY))
        );
        assert_eq!(
            parse_line("READ bob all"),
            Ok(ChatCommand::Read {
                of: Target::Person(Peer::Name(name("bob"))),
                up_to: ReadUpTo::All
            })
        );
        assert_eq!(
            parse_line("READ #general 42"),
            Ok(ChatCommand::Read {
                of: room(),
                up_to: ReadUpTo::Message(42)
            })
        );
        assert_eq!(
            parse_line("READ #general soon"),
            Err(ChatSyntax::Usage(USAGE_READ))
        );
    }
}
