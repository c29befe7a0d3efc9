//! Group rooms: create, join, say, leave, invite; every member on every node gets every message, in the room's one order.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{cluster, count};
use crate::support::chat::Chatter;
use crate::support::node::Env;

/// The id and text of an acknowledged-mode line `MESSAGE <id>: <rest>`.
fn id_and_text(line: &str) -> (u64, String) {
    let rest = line.strip_prefix("MESSAGE ").expect("MESSAGE");
    let (id, text) = rest.split_once(": ").expect("id");
    (id.parse().expect("id"), text.to_string())
}

#[test]
fn every_member_on_every_node_gets_every_post_in_one_order() {
    let env = Env::new("ch_room_order");
    let nodes = cluster(&env, &[]);
    // Six members, two per node, in acknowledged mode (lines carry ids).
    let mut members: Vec<Chatter> = (0..6)
        .map(|i| {
            let node = &nodes[i % 3];
            let mut c = Chatter::named(node, &format!("m{i}"), "member-pass");
            c.disconnect();
            Chatter::login(node, &format!("m{i}"), "member-pass ACK")
        })
        .collect();
    members[0].ok("CREATE #busy");
    for m in &mut members[1..] {
        m.ok("JOIN #busy");
    }
    // Every member posts 10, interleaved: the room serializes them.
    let mut mine: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); 6];
    for round in 0..10 {
        for (i, m) in members.iter_mut().enumerate() {
            mine[i].insert(m.sent(&format!("SAY #busy m{i} says {round}")));
        }
    }
    let all: BTreeSet<u64> = mine.iter().flatten().copied().collect();
    assert_eq!(all.len(), 60);
    for (i, m) in members.iter_mut().enumerate() {
        let lines: Vec<String> = (0..50).map(|_| m.pushed()).collect();
        let got: Vec<(u64, String)> = lines.iter().map(|l| id_and_text(l)).collect();
        for (id, _) in &got {
            m.client.send(&format!("ACK {id}"));
        }
        // Everyone else's, once each, in the room's order (ids grow with it), sender shown.
        let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "m{i}: {ids:?}");
        let expected: Vec<u64> = all.difference(&mine[i]).copied().collect();
        assert_eq!(ids, expected, "m{i}");
        for (_, text) in &got {
            let (sender, said) = text
                .strip_prefix("#busy ")
                .and_then(|t| t.split_once(": "))
                .unwrap_or_else(|| panic!("label and sender: {text}"));
            assert!(said.starts_with(&format!("{sender} says ")), "{text}");
            assert_ne!(sender, format!("m{i}"), "its own post came back");
        }
        m.quiet(Duration::from_millis(200));
    }
    // HISTORY shows the same order to everyone.
    let h0 = members[0].ok("HISTORY #busy 60");
    let h5 = members[5].ok("HISTORY #busy 60");
    assert_eq!(h0.len(), 61);
    assert_eq!(h0, h5);
}

#[test]
fn create_join_say_leave_and_producers_post_too() {
    let env = Env::new("ch_rooms");
    let [a, b, c] = cluster(&env, &[]);
    let mut alice = Chatter::named(&a, "alice", "alice-pass");
    let mut bob = Chatter::named(&b, "bob", "bob-pass-1");
    assert_eq!(
        alice.ok("CREATE #Lobby"),
        ["OK: created #Lobby (public); you are its first member"]
    );
    assert_eq!(
        bob.err("CREATE lobby"),
        "the room #Lobby exists (JOIN #Lobby to enter it)"
    );
    assert_eq!(bob.ok("JOIN lobby"), ["OK: joined #Lobby"]);
    assert_eq!(bob.ok("JOIN #LOBBY"), ["OK: you are already in #Lobby"]);
    alice.sent("SAY #lobby first");
    assert_eq!(bob.messages(1), ["#Lobby alice: first"]);
    // A producer posts with chat-enqueue --room, shown as *.
    let out = env.enqueue_raw(&["--room", "lobby", "deploy", "finished"]);
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let status = env.enqueue_raw(&["status", &id]);
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        status.starts_with(&format!("{id} posted room=")),
        "{status}"
    );
    assert_eq!(alice.messages(1), ["#Lobby *: deploy finished"]);
    assert_eq!(bob.messages(1), ["#Lobby *: deploy finished"]);
    let out = env.enqueue_raw(&["--room", "#nowhere", "x"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no room #nowhere"));
    // A third member on the third node, joining late, gets what follows.
    let mut carol = Chatter::named(&c, "carol", "carol-pass");
    carol.ok("JOIN lobby");
    bob.sent("SAY lobby second");
    assert_eq!(alice.messages(1), ["#Lobby bob: second"]);
    assert_eq!(carol.messages(1), ["#Lobby bob: second"]);
    // Leave: nothing more comes; leaving twice is an error; members see it.
    assert_eq!(carol.ok("LEAVE #lobby"), ["OK: left #Lobby"]);
    assert_eq!(carol.err("LEAVE #lobby"), "you are not in #Lobby");
    alice.sent("SAY #lobby third");
    assert_eq!(bob.messages(1), ["#Lobby alice: third"]);
    carol.quiet(Duration::from_millis(500));
    assert_eq!(carol.err("SAY #lobby let me in"), "you are not in #Lobby");
    let members = alice.ok("MEMBERS #lobby");
    assert_eq!(
        members,
        [
            "MEMBER alice online",
            "MEMBER bob online",
            "OK: 2 members, page 1 of 1"
        ]
    );
    assert_eq!(
        count(&env, "SELECT members FROM rooms WHERE name = 'Lobby'"),
        2
    );
}

#[test]
fn invite_only_rooms_need_an_invitation_which_arrives_as_a_notice() {
    let env = Env::new("ch_invite");
    let [a, b, _] = cluster(&env, &[]);
    let mut alice = Chatter::named(&a, "alice", "alice-pass");
    let mut bob = Chatter::named(&b, "bob", "bob-pass-1");
    alice.ok("CREATE #team INVITE");
    assert_eq!(
        bob.err("JOIN #team"),
        "#team is invite-only: a member must INVITE you first"
    );
    assert!(!bob.ok("LIST").iter().any(|l| l.contains("#team")));
    assert_eq!(bob.err("INVITE #team alice"), "you are not in #team");
    assert_eq!(alice.ok("INVITE #team bob"), ["OK: invited bob to #team"]);
    // Inviting again stores no second notice.
    alice.ok("INVITE #team bob");
    assert_eq!(
        bob.messages(1),
        ["* alice invited you to #team (JOIN #team to accept)"]
    );
    bob.quiet(std::time::Duration::from_millis(300));
    bob.ok("JOIN #team");
    assert_eq!(
        alice.ok("INVITE #team bob"),
        ["OK: bob is already in #team"]
    );
    alice.sent("SAY #team welcome");
    assert_eq!(bob.messages(1), ["#team alice: welcome"]);
    // Once used, the invitation is gone: leave, and the door is shut again.
    bob.ok("LEAVE #team");
    assert!(bob.err("JOIN #team").contains("invite-only"));
}
