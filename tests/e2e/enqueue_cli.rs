//! `chat-enqueue`: joining words, every refusal (exit code, message, nothing stored), Redis down.

use std::time::Duration;

use crate::support::node::Env;
use crate::support::services::free_port;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn words_are_joined_like_echo_and_the_id_is_printed() {
    let env = Env::new("eq_join");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register();
    let out = env.enqueue_raw(&[&id, "hello", "big", "-world", "--not-a-flag"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(c.messages(1), vec!["hello big -world --not-a-flag"]);
    assert_eq!(
        env.count(&format!(
            "SELECT COUNT(*) FROM messages WHERE id = {printed}"
        )),
        1
    );
}

#[test]
fn every_refusal_has_a_message_an_exit_code_and_stores_nothing() {
    let env = Env::new("eq_refuse");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register();
    let long = "y".repeat(4097);
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["0b3e3f8a-6a57-4f0e-9d6c-2f1f6f1de6a4", "hi"],
            3,
            "unknown client id",
        ),
        (vec!["not-an-id", "hi"], 2, "not a client id"),
        (vec![&id], 2, "message text is empty"),
        (vec![&id, ""], 2, "message text is empty"),
        (
            vec![&id, "two\nlines"],
            2,
            "newline, carriage return or NUL",
        ),
        (
            vec![&id, "carriage\rreturn"],
            2,
            "newline, carriage return or NUL",
        ),
        (
            vec![&id, &long],
            2,
            "4097 bytes, over the limit of 4096 bytes",
        ),
        (
            vec!["--max-bytes", "5", &id, "123456"],
            2,
            "over the limit of 5 bytes",
        ),
    ];
    for (args, code, text) in cases {
        let out = env.enqueue_raw(&args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(text), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert_eq!(env.count("SELECT COUNT(*) FROM messages"), 0);
    assert_eq!(env.count("SELECT last_seq FROM clients"), 0);
    // Exactly at the limit is fine, and multi-byte text counts bytes.
    let exact = "z".repeat(4096);
    env.enqueue(&id, &exact);
    assert_eq!(c.messages(1), vec![exact]);
    let out = env.enqueue_raw(&["--max-bytes", "5", &id, "ééé"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn mysql_down_is_a_clear_failure() {
    let env = Env::new("eq_nodb");
    let url = format!("mysql://root@127.0.0.1:{}/chat", free_port());
    let out = env.enqueue_raw(&[
        "--database-url",
        &url,
        "0b3e3f8a-6a57-4f0e-9d6c-2f1f6f1de6a4",
        "hi",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot store the message in MySQL"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn redis_down_still_stores_and_the_message_arrives_on_connect() {
    let env = Env::new("eq_noredis");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register();
    c.send("DISCONNECT");
    c.expect("BYE: disconnected");
    let url = format!("redis://127.0.0.1:{}/", free_port());
    let out = env.enqueue_raw(&["--redis-url", &url, &id, "stored", "anyway"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));
    assert_eq!(env.count("SELECT COUNT(*) FROM messages"), 1);
    let mut c = node.connect();
    c.resume(&id);
    assert_eq!(c.messages(1), vec!["stored anyway"]);
}

#[test]
fn a_lost_notification_is_found_by_the_sweep() {
    let env = Env::new("eq_sweep");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register();
    // Enqueue with Redis unreachable: no notification at all, the client stays connected.
    let url = format!("redis://127.0.0.1:{}/", free_port());
    let out = env.enqueue_raw(&["--redis-url", &url, &id, "found", "by", "sweep"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Test nodes sweep every second.
    assert_eq!(c.messages(1), vec!["found by sweep"]);
    c.expect_silence(Duration::from_millis(1500));
}
