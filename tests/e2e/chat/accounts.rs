//! Accounts: REGISTER, LOGIN on any node, WHOAMI, PASSWORD; hashes only; wrong logins limited and telling nothing.

use super::cluster;
use crate::support::chat::Chatter;
use crate::support::node::Env;

#[test]
fn a_name_registered_on_one_node_logs_in_on_another_with_its_queue_and_rooms() {
    let env = Env::new("ch_login");
    let [a, b, c] = cluster(&env, &[]);
    let mut alice = Chatter::named(&a, "Alice", "correct-horse");
    let reply = alice.ok("WHOAMI");
    assert!(
        reply[0].contains("you are Alice") && reply[0].contains(&alice.id),
        "{reply:?}"
    );
    alice.ok("CREATE #garden");
    alice.disconnect();
    // A message for her own queue while she is away, from a producer.
    env.enqueue(&alice.id, "from the backend");
    // Any case of the name; another node; the same client id, queue and rooms.
    let mut again = Chatter::login(&b, "aLiCe", "correct-horse");
    assert_eq!(again.id, alice.id);
    assert_eq!(again.messages(1), ["from the backend"]);
    let rooms = again.ok("ROOMS");
    assert!(rooms[0].starts_with("ROOM #garden 0"), "{rooms:?}");
    // The name is taken whatever the case; a client has one name.
    let mut other = Chatter::new(&c);
    assert_eq!(
        other.err("REGISTER ALICE another-pass"),
        "the name \"ALICE\" is taken"
    );
    assert_eq!(
        again.err("REGISTER Alice2 another-pass"),
        "you already have a name: Alice"
    );
    // NAME is WHOAMI; an unnamed client is told how to take a name.
    let reply = other.ok("NAME");
    assert!(
        reply[0].starts_with("OK: you are ~") && reply[0].contains("REGISTER"),
        "{reply:?}"
    );
    // LOGIN in acknowledged mode.
    again.disconnect();
    let mut acked = Chatter::login(&c, "alice", "correct-horse ACK");
    let reply = acked.ok("WHOAMI");
    assert!(reply[0].ends_with("acknowledged mode"), "{reply:?}");
}

#[test]
fn passwords_are_salted_hashes_never_in_clear_and_can_change() {
    let env = Env::new("ch_password");
    let a = env.node("a", &[]);
    let mut bob = Chatter::named(&a, "bob", "s3cret-horse");
    let mut twin = Chatter::named(&a, "twin", "s3cret-horse");
    let rows = env.query("SELECT password FROM accounts ORDER BY name_key");
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert!(row[0].starts_with("$argon2id$"), "{row:?}");
        assert!(!row[0].contains("s3cret-horse"));
    }
    assert_ne!(
        rows[0][0], rows[1][0],
        "salted: same password, different hashes"
    );
    assert_eq!(
        bob.err("PASSWORD wrong-old new-horse-1"),
        "the old password is wrong"
    );
    bob.ok("PASSWORD s3cret-horse new-horse-1");
    twin.disconnect();
    bob.disconnect();
    Chatter::login(&a, "bob", "new-horse-1");
    let mut c = a.connect();
    c.send("LOGIN bob s3cret-horse");
    c.expect("ERROR: wrong name or password");
    assert!(!a.log().contains("s3cret-horse"), "a password in the log");
    assert!(!a.log().contains("new-horse-1"), "a password in the log");
}

#[test]
fn wrong_logins_tell_nothing_and_count_as_failed_handshakes() {
    let env = Env::new("ch_wrong");
    let a = env.node("a", &["--max-failed-handshakes", "3"]);
    Chatter::named(&a, "carol", "right-pass-1");
    // A wrong password and an unknown name get the same line.
    for hello in [
        "LOGIN carol wrong-pass-1",
        "LOGIN nobody wrong-pass-1",
        "LOGIN carol",
    ] {
        let mut c = a.connect();
        c.send(hello);
        let line = c.line();
        if hello == "LOGIN carol" {
            assert_eq!(line, "ERROR: usage: LOGIN <name> <password> [ACK]");
        } else {
            assert_eq!(line, "ERROR: wrong name or password", "{hello}");
        }
        c.expect_closed();
    }
    // Three failures: the address is refused before the handshake, even the right password.
    let mut c = crate::support::client::TestClient::connect(a.addr());
    c.expect("ERROR: too many failed handshakes from your address, try again later");
}
