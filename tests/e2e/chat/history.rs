//! History pages and read cursors: HISTORY back through a room or a private room, READ, unread counts in ROOMS across reconnects, nodes and a Redis outage.

use super::cluster;
use crate::support::chat::Chatter;
use crate::support::node::Env;

/// The message ids of `HISTORY` lines.
fn ids(reply: &[String]) -> Vec<u64> {
    reply
        .iter()
        .filter_map(|l| l.strip_prefix("HISTORY "))
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect()
}

/// The unread count of `label` in a `ROOMS` reply.
fn unread(reply: &[String], label: &str) -> u64 {
    reply
        .iter()
        .find_map(|l| l.strip_prefix(&format!("ROOM {label} ")))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{label} not in {reply:?}"))
        .parse()
        .unwrap()
}

#[test]
fn history_pages_back_with_ids_times_and_senders() {
    let env = Env::new("ch_history");
    let [a, b, _] = cluster(&env, &[]);
    let mut alice = Chatter::named(&a, "alice", "alice-pass");
    let mut bob = Chatter::named(&b, "bob", "bob-pass-1");
    alice.ok("CREATE #log");
    bob.ok("JOIN #log");
    let mut posted = Vec::new();
    for n in 0..25 {
        let who = if n % 2 == 0 { &mut alice } else { &mut bob };
        posted.push(who.sent(&format!("SAY #log line {n}")));
    }
    // The newest page first (20 by default), oldest first within it, and how to go back.
    let page = bob.ok("HISTORY #log");
    assert_eq!(ids(&page), posted[5..].to_vec());
    assert!(
        page[0].starts_with(&format!("HISTORY #log {} 20", posted[5])),
        "{page:?}"
    );
    assert!(page[0].ends_with("bob: line 5"), "{page:?}");
    assert_eq!(
        page.last().unwrap(),
        &format!(
            "OK: 20 messages; older: HISTORY #log 20 BEFORE {}",
            posted[5]
        )
    );
    let older = bob.ok(&format!("HISTORY #log 20 BEFORE {}", posted[5]));
    assert_eq!(ids(&older), posted[..5].to_vec());
    assert_eq!(older.last().unwrap(), "OK: 5 messages; no older ones");
    let three = alice.ok(&format!("HISTORY #log 3 before {}", posted[10]));
    assert_eq!(ids(&three), posted[7..10].to_vec());
    // Bounded and checked.
    assert_eq!(
        bob.err("HISTORY #log 101"),
        "the count is 1 to 100 messages, not \"101\""
    );
    assert_eq!(
        bob.err("HISTORY #log 5 BEFORE 999999"),
        "message 999999 is not in #log"
    );
    // A private room's history: both directions, with senders.
    alice.sent("SEND bob psst");
    bob.sent("SEND alice what");
    let private = bob.ok("HISTORY alice");
    assert_eq!(private.len(), 3);
    assert!(private[0].ends_with("alice: psst") && private[0].starts_with("HISTORY @alice "));
    assert!(private[1].ends_with("bob: what"));
    assert_eq!(
        bob.err("HISTORY log"),
        "no one is named \"log\" (for the room, write #log)"
    );
}

#[test]
fn unread_counts_follow_the_read_cursor_across_reconnects_nodes_and_a_redis_outage() {
    let mut env = Env::private("ch_unread");
    let [a, b, c] = cluster(&env, &[]);
    let mut alice = Chatter::named(&a, "alice", "alice-pass");
    let mut bob = Chatter::named(&b, "bob", "bob-pass-1");
    alice.ok("CREATE #news");
    bob.ok("JOIN #news");
    bob.disconnect();
    let posted: Vec<u64> = (0..5)
        .map(|n| alice.sent(&format!("SAY #news item {n}")))
        .collect();
    alice.sent("SEND bob read the news");
    // Offline, then on another node: five unread in the room, one in the private room.
    let mut bob = Chatter::login(&c, "bob", "bob-pass-1");
    assert_eq!(bob.messages(6).len(), 6);
    let rooms = bob.ok("ROOMS");
    assert_eq!(unread(&rooms, "#news"), 5);
    assert_eq!(unread(&rooms, "@alice"), 1);
    // Most recent first: the private message came last.
    assert!(rooms[0].starts_with("ROOM @alice 1 "), "{rooms:?}");
    assert_eq!(
        bob.ok(&format!("READ #news {}", posted[2])),
        [format!(
            "OK: #news read up to message {}; 2 unread",
            posted[2]
        )]
    );
    // The cursor never moves back.
    bob.ok(&format!("READ #news {}", posted[0]));
    bob.disconnect();
    // Another node: the same counts, from MySQL.
    let mut bob = Chatter::login(&a, "bob", "bob-pass-1");
    assert_eq!(unread(&bob.ok("ROOMS"), "#news"), 2);
    // Posting reads what came before it.
    bob.sent("SAY #news my take");
    assert_eq!(unread(&bob.ok("ROOMS"), "#news"), 0);
    alice.sent("SAY #news later");
    assert_eq!(unread(&bob.ok("ROOMS"), "#news"), 1);
    // Redis down: ROOMS and READ still answer, right, from MySQL.
    env.redis_mut().kill();
    assert_eq!(unread(&bob.ok("ROOMS"), "#news"), 1);
    let read = bob.ok("READ #news all");
    assert!(read[0].ends_with("; 0 unread"), "{read:?}");
    let rooms = bob.ok("ROOMS");
    assert_eq!((unread(&rooms, "#news"), unread(&rooms, "@alice")), (0, 1));
}
