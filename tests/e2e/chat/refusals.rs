//! Bad input and abuse: every chat command's refusals are one ERROR line, the session stays, nothing is stored; rate and size limits.

use std::time::Duration;

use super::count;
use crate::support::chat::Chatter;
use crate::support::node::Env;

/// What the database holds that a refused command must not change.
fn footprint(env: &Env) -> Vec<u64> {
    [
        "SELECT COUNT(*) FROM messages",
        "SELECT COUNT(*) FROM rooms",
        "SELECT COUNT(*) FROM members",
        "SELECT COUNT(*) FROM room_members",
        "SELECT COUNT(*) FROM accounts",
        "SELECT COUNT(*) FROM contacts",
        "SELECT COUNT(*) FROM invites",
        "SELECT COALESCE(SUM(read_seq), 0) FROM members",
    ]
    .iter()
    .map(|sql| count(env, sql))
    .collect()
}

#[test]
fn every_bad_command_gets_one_error_line_and_changes_nothing() {
    let env = Env::new("ch_refusals");
    let a = env.node("a", &[]);
    let mut alice = Chatter::named(&a, "alice", "alice-pass");
    let mut bob = Chatter::named(&a, "bob", "bob-pass-1");
    bob.ok("CREATE #closed INVITE");
    bob.ok("CREATE #open");
    let long = "n".repeat(33);
    let cases: Vec<(String, &str)> = vec![
        // Arity and syntax.
        ("REGISTER".into(), "usage: REGISTER <name> <password>"),
        ("REGISTER carol".into(), "usage: REGISTER <name> <password>"),
        (
            "REGISTER carol pw".into(),
            "a password is 8 to 128 bytes without blanks",
        ),
        (
            "REGISTER a b c d".into(),
            "usage: REGISTER <name> <password>",
        ),
        ("SEND".into(), "usage: SEND <name-or-id> <text>"),
        (
            "SAY #open".into(),
            "usage: SAY <room> <text> (or SAY @name <text>)",
        ),
        ("JOIN".into(), "usage: JOIN <room>"),
        ("JOIN a b".into(), "usage: JOIN <room>"),
        ("LEAVE".into(), "usage: LEAVE <room>"),
        ("CREATE".into(), "usage: CREATE <room> [INVITE]"),
        ("CREATE #xy y z".into(), "usage: CREATE <room> [INVITE]"),
        ("INVITE #open".into(), "usage: INVITE <room> <name-or-id>"),
        ("MEMBERS".into(), "usage: MEMBERS <room> [page]"),
        (
            "HISTORY".into(),
            "usage: HISTORY <#room-or-name> [count] [BEFORE <message_id>]",
        ),
        (
            "HISTORY #open 0".into(),
            "the count is 1 to 100 messages, not \"0\"",
        ),
        (
            "HISTORY #open 5 BEFORE".into(),
            "usage: HISTORY <#room-or-name> [count] [BEFORE <message_id>]",
        ),
        (
            "READ #open".into(),
            "usage: READ <#room-or-name> <message_id>|ALL",
        ),
        (
            "READ #open soon".into(),
            "usage: READ <#room-or-name> <message_id>|ALL",
        ),
        (
            "ONLINE zero".into(),
            "\"zero\" is not a page number (1 to 1000)",
        ),
        ("ROOMS 1 2".into(), "usage: ROOMS [page]"),
        (
            "CONTACT".into(),
            "usage: CONTACT ADD <name-or-id> or CONTACT DEL <name-or-id>",
        ),
        (
            "CONTACT HUG bob".into(),
            "usage: CONTACT ADD <name-or-id> or CONTACT DEL <name-or-id>",
        ),
        ("WHOAMI please".into(), "usage: WHOAMI"),
        (
            "PASSWORD x".into(),
            "usage: PASSWORD <old password> <new password>",
        ),
        // Names: too long, bad characters.
        (format!("JOIN #{long}"), "is not a valid name"),
        (format!("SEND {long} hi"), "is not a valid name"),
        (
            "CREATE #bad!name".into(),
            "\"bad!name\" is not a valid name",
        ),
        ("CREATE #9lives".into(), "\"9lives\" is not a valid name"),
        ("SEND b\u{e9}b hi".into(), "is not a valid name"),
        // Unknown people and rooms.
        ("SEND nobody hi".into(), "no one is named \"nobody\""),
        (
            "JOIN #nowhere".into(),
            "no room #nowhere (CREATE #nowhere makes one)",
        ),
        (
            "SAY #nowhere hi".into(),
            "no room #nowhere (CREATE #nowhere makes one)",
        ),
        (
            "HISTORY #nowhere".into(),
            "no room #nowhere (CREATE #nowhere makes one)",
        ),
        (
            "MEMBERS #nowhere".into(),
            "no room #nowhere (CREATE #nowhere makes one)",
        ),
        (
            "INVITE #nowhere bob".into(),
            "no room #nowhere (CREATE #nowhere makes one)",
        ),
        ("CONTACT ADD nobody".into(), "no one is named \"nobody\""),
        ("PRIVATE nobody".into(), "no one is named \"nobody\""),
        // Not a member: posting, reading, listing, inviting.
        ("SAY #open hi".into(), "you are not in #open"),
        ("HISTORY #open".into(), "you are not in #open"),
        ("READ #open all".into(), "you are not in #open"),
        ("MEMBERS #closed".into(), "you are not in #closed"),
        ("INVITE #open bob".into(), "you are not in #open"),
        ("LEAVE #open".into(), "you are not in #open"),
        // Private rooms: not joinable, not someone else's history.
        ("JOIN @bob".into(), "private room"),
        ("JOIN alice+bob".into(), "private room"),
        (
            "HISTORY bob".into(),
            "you have no private room with bob yet",
        ),
        // Invite-only.
        (
            "JOIN #closed".into(),
            "#closed is invite-only: a member must INVITE you first",
        ),
        // Oneself.
        ("SEND alice me".into(), "alice is yourself"),
        // Control characters in a message.
        (
            "SAY #open a\x1b[2Jb".into(),
            "message text contains control characters",
        ),
        (
            "SEND bob ring\x07".into(),
            "message text contains control characters",
        ),
        ("PRIVATE alice".into(), "alice is yourself"),
        // Accounts.
        (
            "REGISTER bob another-pass".into(),
            "you already have a name: alice",
        ),
        (
            "PASSWORD wrong-pass new-pass-1".into(),
            "the old password is wrong",
        ),
        ("LOGIN alice alice-pass".into(), "unknown command \"LOGIN\""),
    ];
    let before = footprint(&env);
    for (line, expected) in &cases {
        let e = alice.err(line);
        assert!(
            e.contains(expected),
            "{line:?}: {e:?}, expected {expected:?}"
        );
        assert!(e.len() < 200 && !e.chars().any(char::is_control), "{e:?}");
    }
    // The session stays, and nothing was stored or changed.
    assert_eq!(alice.cmd("PING"), ["PONG"]);
    assert_eq!(footprint(&env), before);
}

#[test]
fn posting_is_rate_limited_and_rooms_and_members_are_bounded() {
    let env = Env::new("ch_limits");
    let a = env.node(
        "a",
        &[
            "--send-rate",
            "2",
            "--max-rooms-per-client",
            "2",
            "--max-room-members",
            "2",
            "--max-private-rooms",
            "1",
        ],
    );
    let mut alice = Chatter::named(&a, "alice", "alice-pass");
    let mut bob = Chatter::named(&a, "bob", "bob-pass-1");
    let mut carol = Chatter::named(&a, "carol", "carol-pass");
    alice.ok("CREATE #one");
    alice.ok("CREATE #two");
    assert_eq!(
        alice.err("CREATE #three"),
        "you are in 2 rooms, the most allowed; LEAVE one first"
    );
    bob.ok("JOIN #one");
    assert_eq!(carol.err("JOIN #one"), "#one is full (2 members)");
    // One private room each: bob has one with alice, so carol cannot open one with him.
    alice.ok("PRIVATE bob");
    assert_eq!(
        carol.err("SEND bob hi"),
        "bob has too many private rooms to open another"
    );
    assert_eq!(
        alice.err("PRIVATE carol"),
        "you have 1 private rooms, the most allowed"
    );
    // A flood: a burst of twice the rate (REGISTER and PRIVATE spent some: let it refill), then
    // refusals; nothing refused is stored.
    std::thread::sleep(Duration::from_millis(2100));
    let before = count(&env, "SELECT COUNT(*) FROM messages");
    let (mut sent, mut refused) = (0, 0);
    for n in 0..30 {
        let reply = alice.cmd(&format!("SAY #one flood {n}"));
        if reply[0].starts_with("SENT ") {
            sent += 1;
        } else {
            assert_eq!(
                reply,
                ["ERROR: sending too fast: at most 2 messages per second; nothing was sent"]
            );
            refused += 1;
        }
    }
    assert!(sent >= 4 && refused > 0, "sent {sent}, refused {refused}");
    assert_eq!(count(&env, "SELECT COUNT(*) FROM messages"), before + sent);
    // The flood slowed nobody: bob got the posts that were stored.
    assert_eq!(bob.messages(sent as usize).len(), sent as usize);

    std::thread::sleep(Duration::from_millis(1100));
    alice.sent("SAY #one after the flood");
    assert_eq!(bob.messages(1), ["#one alice: after the flood"]);
    carol.quiet(Duration::from_millis(200));
}

#[test]
fn a_post_refused_for_its_rate_makes_nothing_at_all() {
    let env = Env::new("ch_rate_nothing");
    let a = env.node("a", &["--send-rate", "1"]);
    let mut dave = Chatter::named(&a, "dave", "dave-pass");
    let mut frank = Chatter::named(&a, "frank", "frank-pass");
    let _erin = Chatter::named(&a, "erin", "erin-pass");
    // REGISTER spent a post: let the burst refill.
    std::thread::sleep(Duration::from_millis(2100));
    dave.sent("SEND erin one");
    dave.sent("SEND erin two");
    dave.ok("CREATE #club");
    // The burst (twice the rate) is spent: neither a new private room nor an invitation.
    let too_fast = "sending too fast: at most 1 messages per second; nothing was sent";
    assert_eq!(dave.err("SEND frank three"), too_fast);
    assert_eq!(dave.err("INVITE #club frank"), too_fast);
    assert_eq!(count(&env, "SELECT COUNT(*) FROM rooms WHERE kind = 2"), 1);
    assert_eq!(count(&env, "SELECT COUNT(*) FROM invites"), 0);
    frank.quiet(Duration::from_millis(300));
}
