//! Retention: the node's background purge shrinks the messages table while delivery goes on, and keeps what is undelivered.

use std::time::{Duration, Instant};

use crate::support::node::{eventually, Env};

#[test]
fn the_background_purge_removes_old_delivered_messages_while_delivery_goes_on() {
    let env = Env::new("ret_bg");
    let node = env.node("a", &["--retention", "1h", "--retention-interval", "1"]);
    let mut c = node.connect();
    let id = c.register();
    let away = node.register(1).remove(0);
    for i in 0..4 {
        env.enqueue(&id, &format!("old {i}"));
    }
    // One each with a collapse key: the delivered one's key row goes with the purge.
    assert!(env
        .enqueue_raw(&["--collapse-key", "k", &id, "old 4"])
        .status
        .success());
    for i in 0..2 {
        env.enqueue(&away, &format!("undelivered {i}"));
    }
    assert!(env
        .enqueue_raw(&["--collapse-key", "k", &away, "undelivered 2"])
        .status
        .success());
    assert_eq!(env.count("SELECT COUNT(*) FROM collapse_keys"), 2);
    assert_eq!(c.messages(5).len(), 5);
    eventually(
        "the deliveries are recorded",
        Duration::from_secs(20),
        || env.count("SELECT COALESCE(SUM(delivered_seq), 0) FROM cursors") == 5,
    );
    // Two hours old, all of them: past the 1 h retention.
    env.query("UPDATE messages SET enqueued_at = NOW(6) - INTERVAL 2 HOUR");
    assert_eq!(env.count("SELECT COUNT(*) FROM messages"), 8);

    // Keep delivering while the purge runs, until the old delivered rows are gone.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut live = 0;
    loop {
        env.enqueue(&id, &format!("live {live}"));
        assert_eq!(c.messages(1), vec![format!("live {live}")]);
        live += 1;
        if env.count("SELECT COUNT(*) FROM messages WHERE body LIKE 'old%'") == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old delivered messages still there:\n{}",
            node.log()
        );
    }
    // What is left: the undelivered old messages and every young one.
    assert_eq!(
        env.count("SELECT COUNT(*) FROM messages WHERE body LIKE 'undelivered%'"),
        3
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM messages WHERE body LIKE 'live%'"),
        live
    );
    // The pending message's collapse key stays: a newer message with the key still replaces it.
    eventually(
        "the delivered message's collapse key is purged",
        Duration::from_secs(20),
        || env.count("SELECT COUNT(*) FROM collapse_keys") == 1,
    );
    assert_eq!(
        env.count(&format!(
            "SELECT COUNT(*) FROM collapse_keys WHERE client_id = X'{}'",
            away.replace('-', "")
        )),
        1
    );
    // The purge logs once its pass is over.
    eventually("the purge is logged", Duration::from_secs(20), || {
        node.log().contains("retention: purged delivered messages")
    });
    // The client that was away gets everything still.
    let mut back = node.connect();
    back.resume(&away);
    assert_eq!(
        back.messages(3),
        vec!["undelivered 0", "undelivered 1", "undelivered 2"]
    );
}

#[test]
fn retention_off_keeps_everything() {
    let env = Env::new("ret_off");
    let node = env.node("a", &["--retention", "off", "--retention-interval", "1"]);
    let mut c = node.connect();
    let id = c.register();
    env.enqueue(&id, "keep me");
    assert_eq!(c.messages(1), vec!["keep me"]);
    env.query("UPDATE messages SET enqueued_at = NOW(6) - INTERVAL 400 DAY");
    // Several intervals pass (the node's log says it is off; nothing is deleted).
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(env.count("SELECT COUNT(*) FROM messages"), 1);
    assert!(node.log().contains("retention is off"), "{}", node.log());
}
