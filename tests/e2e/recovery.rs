//! After a node crash or freeze: how a client's next session takes over, and the fence that keeps the old node from delivering.

use std::time::Duration;

use crate::support::node::{eventually, Env};

/// The lines a client gets until `n` messages arrived; every line must be a `MESSAGE:` or a
/// `NOTICE:`. Returns (notices seen before the first message, message texts).
fn read_messages(c: &mut crate::support::client::TestClient, n: usize) -> (usize, Vec<String>) {
    let mut notices = 0;
    let mut texts = Vec::new();
    while texts.len() < n {
        let line = c.line();
        if let Some(text) = line.strip_prefix("MESSAGE: ") {
            texts.push(text.to_string());
        } else if line.starts_with("NOTICE: ") && texts.is_empty() {
            notices += 1;
        } else {
            panic!("unexpected line {line:?}");
        }
    }
    (notices, texts)
}

/// The query for the client's recorded delivery cursor.
fn delivered_query(id: &str) -> String {
    format!(
        "SELECT delivered_seq FROM cursors WHERE client_id = X'{}'",
        id.replace('-', "")
    )
}

/// Waits until MySQL has the client's deliveries recorded up to `seq`.
fn wait_recorded(env: &Env, id: &str, seq: u64) {
    let query = delivered_query(id);
    eventually(
        &format!("deliveries recorded up to {seq}"),
        Duration::from_secs(10),
        || env.count(&query) == seq,
    );
}

#[test]
fn a_reconnect_after_kill_9_delivers_before_the_dead_nodes_heartbeat_expires() {
    let env = Env::new("rc_kill9");
    // A's Redis heartbeat outlives it by 30 s: a takeover that waited for it would come far later.
    let mut a = env.node("a", &["--node-ttl", "30"]);
    let b = env.node("b", &[]);
    let mut old = a.connect();
    let id = old.register();
    a.kill();
    for n in 0..3 {
        env.enqueue(&id, &format!("after crash {n}"));
    }
    let mut c = b.connect();
    c.resume(&id);
    let (notices, texts) = read_messages(&mut c, 3);
    // The order of events: the first message came while the dead node's heartbeat key still
    // existed, so the takeover did not wait for it; and without a NOTICE (nothing to wait for).
    let alive = env.redis_cli(&["EXISTS", &format!("chat:alive:{}", a.node_id)]);
    assert_eq!(alive, "1", "the heartbeat of the dead node expired first");
    assert_eq!(notices, 0);
    assert_eq!(texts, ["after crash 0", "after crash 1", "after crash 2"]);
    // The new session holds the delivery right and recorded it.
    env.enqueue(&id, "live");
    assert_eq!(c.messages(1), ["live"]);
    c.disconnect();
    // BYE comes once the final cursor is recorded.
    assert_eq!(env.count(&delivered_query(&id)), 4);
}

#[test]
fn a_node_restarted_under_the_same_id_gives_up_its_old_rights() {
    let env = Env::new("rc_restart");
    let mut a = env.node("a", &[]);
    let b = env.node("b", &[]);
    let mut old = a.connect();
    let id = old.register();
    a.kill();
    // The same --node-id again: it takes the lock, so "the holder's node is dead" no longer
    // holds; it must give up what its previous process held.
    let _a2 = env.node("a", &[]);
    env.enqueue(&id, "still here");
    let mut c = b.connect();
    c.resume(&id);
    let (notices, texts) = read_messages(&mut c, 1);
    assert_eq!((notices, texts), (0, vec!["still here".to_string()]));
}

#[test]
fn a_frozen_node_is_waited_for_then_fenced_off() {
    let env = Env::new("rc_frozen");
    // A counts as dead once silent for 2 s (MySQL closes its lock connection).
    let a = env.node("a", &["--node-ttl", "2"]);
    let b = env.node("b", &[]);
    let mut old = a.connect();
    let id = old.register();
    env.enqueue(&id, "before");
    assert_eq!(old.messages(1), ["before"]);
    // Recorded before the freeze (a write not yet recorded would rightly come again).
    wait_recorded(&env, &id, 1);
    a.freeze();
    env.enqueue(&id, "while frozen 0");
    env.enqueue(&id, "while frozen 1");
    let mut c = b.connect();
    c.resume(&id);
    // A still holds its lock at first: the new session waits, says so once, then takes over.
    let (notices, texts) = read_messages(&mut c, 2);
    assert_eq!(notices, 1, "one NOTICE while waiting for the frozen node");
    assert_eq!(texts, ["while frozen 0", "while frozen 1"]);
    a.thaw();
    env.enqueue(&id, "after thaw");
    assert_eq!(c.messages(1), ["after thaw"]);
    // The old node, back to life, delivered nothing after the takeover: its session ends with
    // the takeover line or a close, never a message.
    match old.try_line(Duration::from_secs(10)) {
        Ok(Some(line)) => assert_eq!(line, "BYE: session taken over by a newer connection"),
        Ok(None) => panic!("the old session is still open"),
        Err(_) => {}
    }
    c.disconnect();
}

#[test]
fn a_second_node_with_a_running_nodes_id_refuses_to_start() {
    let env = Env::new("rc_twice");
    let a = env.node("a", &["--node-ttl", "1"]);
    let out = crate::support::node::run_with_timeout(&mut env.command(
        env!("CARGO_BIN_EXE_chat-server"),
        &["--port", "0", "--node-id", &a.node_id, "--node-ttl", "1"],
    ));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is in use"), "{stderr}");
    // The running node is untouched.
    let mut c = a.connect();
    c.register();
}
