//! Acknowledged mode: ids on messages, ACK, the in-flight bound, redelivery of what was not acknowledged.

use std::time::Duration;

use crate::support::node::Env;

fn acked(line: &str) -> (u64, String) {
    let rest = line
        .strip_prefix("MESSAGE ")
        .unwrap_or_else(|| panic!("expected MESSAGE <id>: ..., got {line:?}"));
    let (id, text) = rest.split_once(": ").unwrap();
    (id.parse().unwrap(), text.to_string())
}

#[test]
fn messages_carry_ids_and_unacknowledged_ones_come_again() {
    let env = Env::new("ack_redeliver");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register_ack();
    let printed: Vec<u64> = (0..3).map(|i| env.enqueue(&id, &format!("m{i}"))).collect();
    let got: Vec<(u64, String)> = (0..3).map(|_| acked(&c.line())).collect();
    assert_eq!(
        got,
        printed
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, format!("m{i}")))
            .collect::<Vec<_>>()
    );
    // Acknowledge the first only; the other two come again on the next connect, in order.
    c.send(&format!("ACK {}", got[0].0));
    c.send("PING");
    c.expect("PONG");
    std::thread::sleep(Duration::from_millis(200));
    c.send("DISCONNECT");
    c.expect("BYE: disconnected");

    let mut c = node.connect();
    c.send(&format!("{id} ack"));
    c.expect(&format!("SET_CLIENT_ID: {id}"));
    assert_eq!(acked(&c.line()), got[1]);
    assert_eq!(acked(&c.line()), got[2]);
    c.send(&format!("ACK {}", got[2].0));
    c.send(&format!("ACK {}", got[1].0));
    c.send("DISCONNECT");
    c.expect("BYE: disconnected");

    // All acknowledged: a plain session gets nothing.
    let mut c = node.connect();
    c.resume(&id);
    c.expect_silence(Duration::from_millis(500));
}

#[test]
fn bad_acks_get_an_error_and_the_session_stays() {
    let env = Env::new("ack_errors");
    let node = env.node("a", &[]);
    let mut plain = node.connect();
    plain.register();
    plain.send("ACK 1");
    plain.expect(
        "ERROR: ACK outside acknowledged mode (answer GET_CLIENT_ID with NONE ACK or <id> ACK)",
    );

    let mut other = node.connect();
    let other_id = other.register_ack();
    let foreign = env.enqueue(&other_id, "not yours");
    let mut c = node.connect();
    let id = c.register_ack();
    c.send(&format!("ACK {foreign}"));
    c.expect(&format!(
        "ERROR: message {foreign} is not awaiting acknowledgement"
    ));
    c.send("ACK 999999");
    c.expect("ERROR: message 999999 is not awaiting acknowledgement");
    c.send("ACK");
    c.expect("ERROR: ACK needs one message id, as in ACK 42");
    let mine = env.enqueue(&id, "mine");
    assert_eq!(acked(&c.line()), (mine, "mine".to_string()));
    c.send(&format!("ACK {mine}"));
    c.send(&format!("ACK {mine}"));
    c.expect(&format!(
        "ERROR: message {mine} is not awaiting acknowledgement"
    ));
    c.send("PING");
    c.expect("PONG");
    let mut bad_mode = node.connect();
    bad_mode.send("NONE FAST");
    bad_mode.expect("ERROR: unknown mode \"FAST\" (expected ACK or nothing)");
    bad_mode.expect_closed();
}

#[test]
fn the_in_flight_window_bounds_unacknowledged_messages() {
    let env = Env::new("ack_window");
    let node = env.node("a", &["--max-inflight", "3"]);
    let mut c = node.connect();
    let id = c.register_ack();
    for i in 0..7 {
        env.enqueue(&id, &format!("w{i}"));
    }
    let first: Vec<(u64, String)> = (0..3).map(|_| acked(&c.line())).collect();
    assert_eq!(first[2].1, "w2");
    c.expect_silence(Duration::from_millis(1500));
    // Acknowledging out of order does not open the window; the oldest does.
    c.send(&format!("ACK {}", first[1].0));
    c.expect_silence(Duration::from_millis(500));
    c.send(&format!("ACK {}", first[0].0));
    let next: Vec<(u64, String)> = (0..2).map(|_| acked(&c.line())).collect();
    assert_eq!(next[0].1, "w3");
    assert_eq!(next[1].1, "w4");
    c.expect_silence(Duration::from_millis(500));
    c.send(&format!("ACK {}", first[2].0));
    c.send(&format!("ACK {}", next[0].0));
    c.send(&format!("ACK {}", next[1].0));
    assert_eq!(acked(&c.line()).1, "w5");
    assert_eq!(acked(&c.line()).1, "w6");
}

#[test]
fn a_message_woken_for_while_the_window_is_full_comes_once_it_opens() {
    let env = Env::new("ack_window_wake");
    // No sweep to fall back on: only the acknowledgement that opens the window can bring w2.
    let node = env.node("a", &["--max-inflight", "2", "--sweep-interval", "3600"]);
    let mut c = node.connect();
    let id = c.register_ack();
    env.enqueue(&id, "w0");
    env.enqueue(&id, "w1");
    let first: Vec<(u64, String)> = (0..2).map(|_| acked(&c.line())).collect();
    assert_eq!(first[1].1, "w1");
    // A message with a deadline is not carried: its notification only says "look", and the
    // session looks while its window is full.
    let out = env.enqueue_raw(&["--ttl", "60", &id, "w2"]);
    assert!(out.status.success(), "{out:?}");
    c.expect_silence(Duration::from_millis(800));
    c.send(&format!("ACK {}", first[0].0));
    assert_eq!(acked(&c.line()).1, "w2");
    // The window had room when w3 came: no look was held back, and w3 still comes.
    c.send(&format!("ACK {}", first[1].0));
    c.expect_silence(Duration::from_millis(300));
    env.enqueue(&id, "w3");
    assert_eq!(acked(&c.line()).1, "w3");
}
