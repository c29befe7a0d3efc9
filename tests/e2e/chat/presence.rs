//! ONLINE (cluster-wide, paged, a crashed node's clients gone) and contacts with their online state.

use super::cluster;
use crate::support::chat::Chatter;
use crate::support::node::{eventually, Env};

/// The names listed by an `ONLINE` reply.
fn listed(reply: &[String]) -> Vec<String> {
    reply
        .iter()
        .filter_map(|l| l.strip_prefix("ONLINE "))
        .map(String::from)
        .collect()
}

#[test]
fn online_lists_the_whole_cluster_in_pages_and_drops_a_crashed_nodes_clients() {
    let env = Env::new("ch_online");
    let [a, b, mut c] = cluster(&env, &[]);
    let mut alice = Chatter::named(&a, "alice", "alice-pass");
    let _bob = Chatter::named(&b, "bob", "bob-pass-1");
    let _carol = Chatter::named(&c, "carol", "carol-pass");
    // Unnamed clients are listed by public id, after the names; never by client id (a credential).
    let mut plain: Vec<_> = (0..49).map(|_| Chatter::new(&b)).collect();
    let first = alice.ok("ONLINE");
    assert_eq!(&listed(&first)[..3], ["alice", "bob", "carol"]);
    assert_eq!(listed(&first).len(), 50);
    assert_eq!(
        first.last().unwrap(),
        "OK: 50 online, page 1 of 2; next: ONLINE 2"
    );
    let second = alice.ok("ONLINE 2");
    assert_eq!(listed(&second).len(), 2);
    let publics: Vec<String> = plain.iter_mut().map(|p| p.public_id()).collect();
    assert!(publics.iter().any(|p| listed(&second).contains(p)));
    for p in &plain {
        assert!(
            !first.iter().chain(&second).any(|l| l.contains(&p.id)),
            "a client id listed"
        );
    }
    // A node killed: its clients drop out at once (its lock in MySQL is gone with it).
    c.kill();
    eventually(
        "carol is gone from ONLINE",
        std::time::Duration::from_secs(10),
        || !listed(&alice.ok("ONLINE")).contains(&"carol".to_string()),
    );
    assert_eq!(listed(&alice.ok("ONLINE 2")).len(), 1);
    drop(plain);
}

#[test]
fn contacts_show_who_is_online() {
    let env = Env::new("ch_contacts");
    let [a, b, _] = cluster(&env, &[]);
    let mut alice = Chatter::named(&a, "alice", "alice-pass");
    let mut bob = Chatter::named(&b, "bob", "bob-pass-1");
    let mut zed = Chatter::named(&b, "zed", "zed-pass-1");
    zed.disconnect();
    eventually("zed is offline", std::time::Duration::from_secs(10), || {
        !listed(&alice.ok("ONLINE")).contains(&"zed".to_string())
    });
    assert_eq!(
        alice.ok("CONTACT ADD bob"),
        ["OK: bob added to your contacts"]
    );
    assert_eq!(
        alice.ok("CONTACT ADD @bob"),
        ["OK: bob is already one of your contacts"]
    );
    alice.ok("contact add zed");
    assert_eq!(
        alice.ok("CONTACTS"),
        [
            "CONTACT bob online",
            "CONTACT zed offline",
            "OK: 2 contacts, page 1 of 1"
        ]
    );
    bob.disconnect();
    // Its session records its cursor and gives up its right just after the goodbye line.
    eventually(
        "bob shows offline",
        std::time::Duration::from_secs(10),
        || alice.ok("CONTACTS")[0] == "CONTACT bob offline",
    );
    assert_eq!(
        alice.ok("CONTACT DEL bob"),
        ["OK: bob removed from your contacts"]
    );
    assert_eq!(
        alice.err("CONTACT DEL bob"),
        "bob is not one of your contacts"
    );
    assert_eq!(alice.err("CONTACT ADD alice"), "alice is yourself");
    assert_eq!(
        alice.err("CONTACT ADD nobody"),
        "no one is named \"nobody\""
    );
    assert_eq!(alice.ok("CONTACTS").len(), 2);
}
