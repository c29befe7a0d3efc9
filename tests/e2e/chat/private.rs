//! Private messages: SEND across nodes, online and offline, the sender shown, SENT after the commit; the private room refused to others.

use std::time::Duration;

use super::{cluster, count};
use crate::support::chat::Chatter;
use crate::support::node::Env;

#[test]
fn send_reaches_the_other_node_at_once_or_on_connect_in_order() {
    let env = Env::new("ch_send");
    let [a, b, c] = cluster(&env, &[]);
    let mut alice = Chatter::named(&a, "alice", "alice-pass");
    let mut bob = Chatter::named(&b, "bob", "bob-pass-1");
    // Online, across nodes; the id comes after the commit (the row is there when SENT is read).
    let id = bob.sent("SEND alice hello   there, alice");
    assert_eq!(
        count(
            &env,
            &format!("SELECT COUNT(*) FROM messages WHERE id = {id}")
        ),
        1
    );
    assert_eq!(alice.messages(1), ["@bob: hello   there, alice"]);
    assert_eq!(alice.sent("SAY @bob hi bob"), id + 1);
    assert_eq!(bob.messages(1), ["@alice: hi bob"]);
    // Offline: stored, then delivered on connect, on any node, in order.
    alice.disconnect();
    for n in 0..3 {
        bob.sent(&format!("SEND alice while away {n}"));
    }
    let mut alice = Chatter::login(&c, "alice", "alice-pass");
    assert_eq!(
        alice.messages(3),
        [
            "@bob: while away 0",
            "@bob: while away 1",
            "@bob: while away 2"
        ]
    );
    // The sender does not get its own messages back.
    bob.quiet(Duration::from_millis(300));
    // To a client without a name, by its id: it sees the sender's name on a MESSAGE line.
    let mut plain = Chatter::new(&a);
    let plain_id = plain.id.clone();
    bob.sent(&format!("SEND {plain_id} to an id"));
    assert_eq!(plain.messages(1), ["@bob: to an id"]);
    // It answers by name; the other side sees its public id, never its client id (a credential).
    let public = plain.public_id();
    assert!(public.starts_with('~') && public.len() == 17, "{public}");
    plain.sent("SEND bob back to you");
    assert_eq!(bob.messages(1), [format!("@{public}: back to you")]);
    // The public id works as an address too.
    bob.sent(&format!("SEND {public} by public id"));
    assert_eq!(plain.messages(1), ["@bob: by public id"]);
    let history = bob.ok(&format!("HISTORY {public}"));
    assert!(
        history.iter().all(|l| !l.contains(&plain_id)),
        "{history:?}"
    );
    assert!(
        history[1].ends_with(&format!("{public}: back to you")),
        "{history:?}"
    );
}

#[test]
fn an_unknown_recipient_or_oneself_is_refused_and_nothing_is_stored() {
    let env = Env::new("ch_send_refused");
    let a = env.node("a", &[]);
    let mut alice = Chatter::named(&a, "alice", "alice-pass");
    let before = count(&env, "SELECT COUNT(*) FROM messages");
    assert_eq!(alice.err("SEND nobody hi"), "no one is named \"nobody\"");
    assert_eq!(
        alice.err("SEND 0b3e3f8a-6a57-4f0e-9d6c-2f1f6f1de6a4 hi"),
        "no client has the id 0b3e3f8a-6a57-4f0e-9d6c-2f1f6f1de6a4"
    );
    assert_eq!(alice.err("SEND alice hi me"), "alice is yourself");
    assert_eq!(alice.err("SEND bob"), "usage: SEND <name-or-id> <text>");
    assert_eq!(count(&env, "SELECT COUNT(*) FROM messages"), before);
    assert_eq!(count(&env, "SELECT COUNT(*) FROM rooms"), 0);
    alice.cmd("PING");
}

#[test]
fn a_private_room_is_for_its_two_members_only() {
    let env = Env::new("ch_private");
    let [a, b, _] = cluster(&env, &[]);
    let mut alice = Chatter::named(&a, "alice", "alice-pass");
    let mut bob = Chatter::named(&b, "bob", "bob-pass-1");
    let mut carol = Chatter::named(&a, "carol", "carol-pass");
    let reply = alice.ok("PRIVATE bob");
    assert_eq!(
        reply,
        ["OK: @bob is your private room with bob; SEND bob <text> writes to it"]
    );
    // Idempotent: still one room.
    alice.ok("PRIVATE bob");
    bob.ok("PRIVATE alice");
    assert_eq!(count(&env, "SELECT COUNT(*) FROM rooms"), 1);
    alice.sent("SEND bob just us");
    assert_eq!(bob.messages(1), ["@alice: just us"]);
    // Not listed to others, not joinable, not readable, not postable.
    assert!(!carol.ok("LIST").iter().any(|l| l.contains("bob")));
    for join in ["JOIN @bob", "JOIN alice+bob", "JOIN #alice+bob"] {
        let e = carol.err(join);
        assert!(e.contains("private room"), "{join}: {e}");
    }
    let e = carol.err("HISTORY alice");
    assert!(
        e.starts_with("you have no private room with alice yet"),
        "{e}"
    );
    let e = carol.err("MEMBERS @bob");
    assert!(
        e.starts_with("you have no private room with bob yet"),
        "{e}"
    );
    assert!(carol.err("LEAVE @alice").contains("private room"));
    // Its members cannot leave it either.
    assert_eq!(
        alice.err("LEAVE @bob"),
        "@bob is a private room: it cannot be left"
    );
    // Carol's own private room with bob is another room.
    carol.sent("SEND bob hi from carol");
    assert_eq!(bob.messages(1), ["@carol: hi from carol"]);
    alice.quiet(std::time::Duration::from_millis(300));
    assert_eq!(count(&env, "SELECT COUNT(*) FROM rooms"), 2);
}
