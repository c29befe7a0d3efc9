//! Established sessions: commands, pending and live delivery, takeover, slow clients.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::node::Env;

#[test]
fn commands_ping_unknown_and_disconnect() {
    let env = Env::new("ss_cmds");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    c.register();
    c.send("PING");
    c.expect("PONG");
    c.send("hello there");
    c.expect("ERROR: unknown command \"hello\"");
    c.send("PING extra");
    c.expect("ERROR: PING takes no arguments");
    // Empty lines are ignored; the session stays open.
    c.send("");
    c.send("ping");
    c.expect("PONG");
    c.send("disconnect");
    c.expect("BYE: disconnected");
    c.expect_closed();
}

#[test]
fn pending_messages_arrive_in_order_on_connect() {
    let env = Env::new("ss_pending");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register();
    c.send("DISCONNECT");
    c.expect("BYE: disconnected");

    let texts: Vec<String> = (1..=25).map(|i| format!("pending {i} ✓")).collect();
    for t in &texts {
        env.enqueue(&id, t);
    }
    let mut c = node.connect();
    c.resume(&id);
    assert_eq!(c.messages(texts.len()), texts);
    c.expect_silence(Duration::from_millis(300));
    // Delivered means delivered: a new session gets nothing again.
    c.send("DISCONNECT");
    c.expect("BYE: disconnected");
    let mut c = node.connect();
    c.resume(&id);
    c.expect_silence(Duration::from_millis(500));
    assert_eq!(
        env.count("SELECT delivered_seq FROM cursors"),
        texts.len() as u64
    );
}

#[test]
fn live_messages_arrive_in_enqueue_order() {
    let env = Env::new("ss_live");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register();
    let start = Instant::now();
    env.enqueue(&id, "first");
    assert_eq!(c.messages(1), vec!["first"]);
    // Well under the 1 s sweep: the Redis notification did it. (Not a timing assertion on
    // speed, only on which path delivered it.)
    assert!(start.elapsed() < Duration::from_secs(5));
    for i in 0..10 {
        env.enqueue(&id, &format!("live {i}"));
    }
    let got = c.messages(10);
    let want: Vec<String> = (0..10).map(|i| format!("live {i}")).collect();
    assert_eq!(got, want);
}

#[test]
fn a_second_connection_takes_the_session_over() {
    let env = Env::new("ss_takeover");
    let node = env.node("a", &[]);
    let mut old = node.connect();
    let id = old.register();
    let mut new = node.connect();
    new.resume(&id);
    old.expect("BYE: session taken over by a newer connection");
    old.expect_closed();
    env.enqueue(&id, "to the new one");
    assert_eq!(new.messages(1), vec!["to the new one"]);
}

#[test]
fn a_client_that_stops_reading_does_not_stall_others() {
    let env = Env::new("ss_slow");
    let node = env.node("a", &["--write-timeout", "3"]);
    let mut stalled = node.connect();
    let stalled_id = stalled.register();
    let _stalled_socket = stalled.into_stream();
    let mut healthy = node.connect();
    let healthy_id = healthy.register();

    // About 16 MB for the stalled client: far more than the socket buffers hold.
    let body = "x".repeat(4000);
    let db = env.mariadb();
    let hex = stalled_id.replace('-', "");
    db.query(
        &env.database,
        &format!(
            "INSERT INTO messages (client_id, seq, body) \
             SELECT X'{hex}', seq, '{body}' FROM seq_1_to_4000"
        ),
    );
    db.query(
        &env.database,
        &format!("UPDATE clients SET last_seq = 4000 WHERE id = X'{hex}'"),
    );
    env.enqueue(&stalled_id, "wake up");
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..5 {
        env.enqueue(&healthy_id, &format!("still served {i}"));
        assert_eq!(healthy.messages(1), vec![format!("still served {i}")]);
    }
    // The stalled session is dropped after the write timeout; its messages stay pending.
    std::thread::sleep(Duration::from_secs(4));
    let delivered = env.count(&format!(
        "SELECT delivered_seq FROM cursors WHERE client_id = X'{hex}'"
    ));
    assert!(delivered < 4001, "delivered_seq {delivered}");
    healthy.send("PING");
    healthy.expect("PONG");
    let mut again = node.connect();
    again.resume(&stalled_id);
    let rest = again.messages((4001 - delivered) as usize);
    assert_eq!(rest.last().unwrap(), "wake up");
    let _ = std::io::stdout().flush();
}

#[test]
fn a_gap_in_a_queue_does_not_stop_delivery() {
    let env = Env::new("ss_gap");
    // Pages of 2: the gap spans a whole page.
    let node = env.node("a", &["--page-size", "2"]);
    let id = node.register(1).remove(0);
    for i in 1..=5 {
        env.enqueue(&id, &format!("g{i}"));
    }
    // Rows removed by hand (or a partial restore): seqs 2 and 3 are gone.
    env.query("DELETE FROM messages WHERE seq IN (2, 3)");
    let mut c = node.connect();
    c.resume(&id);
    assert_eq!(c.messages(3), vec!["g1", "g4", "g5"]);
    env.enqueue(&id, "g6");
    assert_eq!(c.messages(1), vec!["g6"]);
}
