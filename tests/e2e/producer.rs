//! Producer features of `chat-enqueue`: --wait, status, --ttl, --dedupe-key, --collapse-key,
//! --stdin, several clients per call, and the DROPPED line.

use std::process::Output;
use std::time::Duration;

use crate::support::node::Env;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs chat-enqueue, asserts the exit code, returns stdout.
fn enqueue_expect(env: &Env, args: &[&str], code: i32) -> String {
    let out = env.enqueue_raw(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: stdout {} stderr {}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// The first stdout line as a message id.
fn first_id(out: &str) -> u64 {
    out.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no message id in {out:?}"))
}

/// `chat-enqueue status --json` of these ids, parsed.
fn status(env: &Env, ids: &[u64]) -> Vec<serde_json::Value> {
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    let mut args = vec!["status", "--json"];
    args.extend(ids.iter().map(String::as_str));
    let out = env.enqueue_raw(&args);
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&out), stderr(&out)));
    parsed.as_array().expect("array").clone()
}

fn state(v: &serde_json::Value) -> &str {
    v["state"].as_str().unwrap_or("?")
}

#[test]
fn wait_returns_delivered_for_a_plain_session_and_pending_when_offline() {
    let env = Env::new("pr_wait_plain");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register();
    let out = enqueue_expect(&env, &["--wait=10", &id, "hello"], 0);
    assert_eq!(c.messages(1), vec!["hello"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let mid = first_id(&out);
    assert!(
        lines[1].starts_with(&format!("{mid} delivered client={id} ")),
        "{out}"
    );
    assert!(lines[1].contains(" delivered="), "{out}");
    // Offline: still queued when the wait runs out.
    c.disconnect();
    let out = enqueue_expect(&env, &["--wait=1", &id, "later"], 5);
    assert!(out.lines().nth(1).unwrap().contains(" queued "), "{out}");
    let mut c = node.connect();
    c.resume(&id);
    assert_eq!(c.messages(1), vec!["later"]);
}

#[test]
fn wait_returns_acknowledged_only_once_the_client_acknowledges() {
    let env = Env::new("pr_wait_ack");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register_ack();
    let waiter = env.enqueue_in_background(&["--wait=30", &id, "ack me"]);
    let line = c.line();
    let (mid, text) = line
        .strip_prefix("MESSAGE ")
        .and_then(|l| l.split_once(": "))
        .unwrap_or_else(|| panic!("expected MESSAGE <id>: , got {line:?}"));
    assert_eq!(text, "ack me");
    // Written but not acknowledged: the producer is still waiting.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!waiter.is_finished(), "--wait returned before the ACK");
    c.send(&format!("ACK {mid}"));
    let out = waiter.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains(&format!("{mid} acknowledged client={id}")),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains(" acknowledged="), "{}", stdout(&out));
}

#[test]
fn a_message_past_its_ttl_is_never_delivered_and_the_client_is_told() {
    let env = Env::new("pr_ttl");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register();
    c.disconnect();
    let a = first_id(&enqueue_expect(&env, &["--ttl", "1", &id, "a"], 0));
    enqueue_expect(&env, &[&id, "b"], 0);
    enqueue_expect(&env, &["--ttl", "1", &id, "c"], 0);
    enqueue_expect(&env, &["--ttl", "1h", &id, "d"], 0);
    // --wait on an expiring message of an offline client returns "expired".
    let out = enqueue_expect(&env, &["--ttl", "1", "--wait=20", &id, "e"], 6);
    let e = first_id(&out);
    assert!(out.contains(&format!("{e} expired ")), "{out}");
    // Offline while a, c and e expired: the client learns it missed them, in queue order.
    let mut c = node.connect();
    c.resume(&id);
    for expected in [
        "DROPPED 1",
        "MESSAGE: b",
        "DROPPED 1",
        "MESSAGE: d",
        "DROPPED 1",
    ] {
        c.expect(expected);
    }
    c.expect_silence(Duration::from_millis(500));
    let found = status(&env, &[a, e]);
    for s in &found {
        assert_eq!(state(s), "expired", "{s}");
        assert!(s["expired_at"].is_string(), "{s}");
        assert!(s["delivered_at"].is_null(), "{s}");
    }
    // The node recorded why it skipped them.
    assert_eq!(
        env.count("SELECT COUNT(*) FROM messages WHERE dropped = 1"),
        3
    );
    // Nothing comes again on the next session.
    c.disconnect();
    let mut c = node.connect();
    c.resume(&id);
    c.expect_silence(Duration::from_millis(500));
}

#[test]
fn dropped_messages_need_no_ack_in_acknowledged_mode() {
    let env = Env::new("pr_drop_ack");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register_ack();
    c.disconnect();
    enqueue_expect(&env, &["--ttl", "1", &id, "gone"], 0);
    let kept = first_id(&enqueue_expect(&env, &[&id, "kept"], 0));
    std::thread::sleep(Duration::from_millis(1500));
    let mut c = node.connect();
    c.resume_ack(&id);
    c.expect("DROPPED 1");
    c.expect(&format!("MESSAGE {kept}: kept"));
    c.send(&format!("ACK {kept}"));
    let out = enqueue_expect(&env, &["status", &kept.to_string()], 0);
    let wait_until = std::time::Instant::now() + Duration::from_secs(10);
    let mut out = out;
    while !out.contains("acknowledged") && std::time::Instant::now() < wait_until {
        std::thread::sleep(Duration::from_millis(50));
        out = enqueue_expect(&env, &["status", &kept.to_string()], 0);
    }
    assert!(out.contains(&format!("{kept} acknowledged")), "{out}");
    c.disconnect();
    let mut c = node.connect();
    c.resume_ack(&id);
    c.expect_silence(Duration::from_millis(500));
}

#[test]
fn concurrent_retries_with_one_dedupe_key_store_one_message() {
    let env = Env::new("pr_dedupe");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register();
    let retries: Vec<_> = (0..8)
        .map(|_| env.enqueue_in_background(&["--dedupe-key", "order-17", &id, "paid"]))
        .collect();
    let ids: Vec<u64> = retries
        .into_iter()
        .map(|r| {
            let out = r.join().unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            first_id(&stdout(&out))
        })
        .collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert_eq!(c.messages(1), vec!["paid"]);
    c.expect_silence(Duration::from_millis(500));
    assert_eq!(env.count("SELECT COUNT(*) FROM messages"), 1);
    // A retry says it was a duplicate; another key stores another message.
    let out = env.enqueue_raw(&["--dedupe-key", "order-17", &id, "paid"]);
    assert!(stderr(&out).contains("already used"), "{}", stderr(&out));
    assert_eq!(first_id(&stdout(&out)), ids[0]);
    enqueue_expect(&env, &["--dedupe-key", "order-18", &id, "paid too"], 0);
    assert_eq!(c.messages(1), vec!["paid too"]);
    // Past the window the key stores a new message.
    env.query("UPDATE dedupe SET created_at = created_at - INTERVAL 2 DAY");
    let again = first_id(&enqueue_expect(
        &env,
        &["--dedupe-key", "order-17", &id, "paid again"],
        0,
    ));
    assert_ne!(again, ids[0]);
    assert_eq!(c.messages(1), vec!["paid again"]);
}

/// Enqueues with a collapse key, expecting it to replace one pending message; its id.
fn replacing_one(env: &Env, args: &[&str]) -> u64 {
    let out = env.enqueue_raw(args);
    assert!(
        stderr(&out).contains("replaced 1 pending"),
        "{}",
        stderr(&out)
    );
    first_id(&stdout(&out))
}

#[test]
fn a_collapse_key_replaces_pending_messages_but_not_delivered_ones() {
    let env = Env::new("pr_collapse");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register();
    // Delivered first: a newer message with the key does not touch it.
    let v1 = first_id(&enqueue_expect(
        &env,
        &["--collapse-key", "score", &id, "1-0"],
        0,
    ));
    assert_eq!(c.messages(1), vec!["1-0"]);
    c.disconnect();
    // BYE comes once the session's deliveries are recorded.
    assert_eq!(state(&status(&env, &[v1])[0]), "delivered");
    // Pending: replaced.
    let v2 = first_id(&enqueue_expect(
        &env,
        &["--collapse-key", "score", &id, "2-0"],
        0,
    ));
    enqueue_expect(&env, &[&id, "other"], 0);
    let v3 = replacing_one(&env, &["--collapse-key", "score", &id, "2-1"]);
    let found = status(&env, &[v1, v2, v3]);
    assert_eq!(state(&found[0]), "delivered", "{}", found[0]);
    assert_eq!(state(&found[1]), "replaced", "{}", found[1]);
    assert_eq!(found[1]["replaced_by"], v3, "{}", found[1]);
    assert!(found[1]["replaced_at"].is_string());
    assert_eq!(state(&found[2]), "queued", "{}", found[2]);
    // Again: the newest pending one with the key is replaced.
    let v4 = replacing_one(&env, &["--collapse-key", "score", &id, "2-2"]);
    let found = status(&env, &[v3]);
    assert_eq!(found[0]["replaced_by"], v4, "{}", found[0]);
    let mut c = node.connect();
    c.resume(&id);
    for expected in ["DROPPED 1", "MESSAGE: other", "DROPPED 1", "MESSAGE: 2-2"] {
        c.expect(expected);
    }
    c.expect_silence(Duration::from_millis(300));
}

#[test]
fn stdin_stores_good_lines_and_reports_bad_ones_by_number() {
    let env = Env::new("pr_stdin");
    let node = env.node("a", &[]);
    let mut a = node.connect();
    let ida = a.register();
    let mut b = node.connect();
    let idb = b.register();
    let long = "x".repeat(5000);
    let input = format!(
        "{ida}\tone\n\
         {idb}\tuno\n\
         not-an-id\tbad id\n\
         {ida}\n\
         \n\
         0b3e3f8a-6a57-4f0e-9d6c-2f1f6f1de6a4\tunknown client\n\
         {ida}\ttwo\r\n\
         {idb}\t\n\
         {idb}\t{long}\n\
         {idb}\tdos\n\
         {ida}\tthree"
    );
    let out = env.enqueue_stdin(&["--stdin", "--batch", "2"], input.as_bytes());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for bad in [
        "line 3:",
        "line 4:",
        "line 6: unknown client",
        "line 8:",
        "line 9:",
    ] {
        assert!(err.contains(bad), "missing {bad:?} in {err}");
    }
    assert!(!err.contains("line 5:"), "a blank line is skipped: {err}");
    assert!(err.contains("5 stored, 5 refused, 11 lines"), "{err}");
    let numbers: Vec<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix("chat-enqueue: line "))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        numbers,
        vec!["3", "4", "6", "8", "9"],
        "in line order: {err}"
    );
    let stored: Vec<u64> = stdout(&out)
        .lines()
        .map(|l| l.split_once(' ').unwrap().0.parse().unwrap())
        .collect();
    assert_eq!(stored, vec![1, 2, 7, 10, 11]);
    assert_eq!(a.messages(3), vec!["one", "two", "three"]);
    assert_eq!(b.messages(2), vec!["uno", "dos"]);
}

#[test]
fn several_clients_in_one_call_get_one_message_each() {
    let env = Env::new("pr_multi");
    let node = env.node("a", &[]);
    let mut clients: Vec<_> = (0..3).map(|_| node.connect()).collect();
    let ids: Vec<String> = clients.iter_mut().map(|c| c.register()).collect();
    let list = ids.join(",");
    let out = enqueue_expect(&env, &[&list, "to", "all"], 0);
    let printed: Vec<&str> = out.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(printed, ids.iter().map(String::as_str).collect::<Vec<_>>());
    for c in &mut clients {
        assert_eq!(c.messages(1), vec!["to all"]);
    }
    // An unknown id among them: the others still get theirs, the exit says unknown.
    let list = format!("{},0b3e3f8a-6a57-4f0e-9d6c-2f1f6f1de6a4", ids[0]);
    let out = env.enqueue_raw(&[&list, "partly"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(clients[0].messages(1), vec!["partly"]);
}

#[test]
fn status_reports_every_state_with_its_timestamps() {
    let env = Env::new("pr_status");
    let node = env.node("a", &[]);
    let mut plain = node.connect();
    let idp = plain.register();
    let mut acked = node.connect();
    let ida = acked.register_ack();
    let delivered = first_id(&enqueue_expect(&env, &["--wait=10", &idp, "d"], 0));
    let ack_id = first_id(&enqueue_expect(&env, &[&ida, "a"], 0));
    acked.expect(&format!("MESSAGE {ack_id}: a"));
    acked.send(&format!("ACK {ack_id}"));
    plain.messages(1);
    plain.disconnect();
    let queued = first_id(&enqueue_expect(&env, &[&idp, "q"], 0));
    let expired = first_id(&enqueue_expect(&env, &["--ttl", "1", &idp, "e"], 0));
    let replaced = first_id(&enqueue_expect(
        &env,
        &["--collapse-key", "k", &idp, "r1"],
        0,
    ));
    enqueue_expect(&env, &["--collapse-key", "k", &idp, "r2"], 0);
    // Wait for the ACK to be recorded and the TTL to run out.
    let all = [delivered, ack_id, queued, expired, replaced, 999_999];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let found = loop {
        let found = status(&env, &all);
        let ready = state(&found[1]) == "acknowledged" && state(&found[3]) == "expired";
        if ready || std::time::Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let states: Vec<&str> = found.iter().map(state).collect();
    assert_eq!(
        states,
        vec![
            "delivered",
            "acknowledged",
            "queued",
            "expired",
            "replaced",
            "unknown"
        ]
    );
    for (s, field) in [
        (&found[0], "delivered_at"),
        (&found[1], "acknowledged_at"),
        (&found[3], "expired_at"),
        (&found[3], "expires_at"),
        (&found[4], "replaced_at"),
    ] {
        assert!(s[field].is_string(), "{field} in {s}");
        assert!(s["queued_at"].is_string(), "{s}");
    }
    // Text form, and exit 3 for the unknown id.
    let out = env.enqueue_raw(&["status", &delivered.to_string(), "999999"]);
    assert_eq!(out.status.code(), Some(3));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{delivered} delivered client={idp} seq=1 queued=")),
        "{text}"
    );
    assert!(text.contains("999999 unknown"), "{text}");
}

#[test]
fn producer_options_are_checked_before_anything_is_stored() {
    let env = Env::new("pr_refuse");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register();
    let long_key = "k".repeat(256);
    for (args, text) in [
        (vec!["--ttl", "0", &id, "x"], "TTL"),
        (vec!["--ttl", "soon", &id, "x"], "--ttl"),
        (vec!["--dedupe-key", "", &id, "x"], "dedupe key"),
        (vec!["--collapse-key", &long_key, &id, "x"], "collapse key"),
        (vec!["--stdin", &id, "x"], "cannot be used"),
        (vec!["--wait=x", &id, "x"], "--wait"),
    ] {
        let out = env.enqueue_raw(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(text), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(env.count("SELECT COUNT(*) FROM messages"), 0);
}

#[test]
fn the_library_example_stores_waits_and_reads_states() {
    let env = Env::new("pr_example");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register();
    // The example binary sits next to this test's: <target>/debug/examples/producer.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args(["build", "--quiet", "--example", "producer"])
        .status()
        .expect("cargo build --example producer");
    assert!(built.success());
    let out = crate::support::node::run_with_timeout(
        std::process::Command::new(profile_dir.join("examples/producer"))
            .env("CHAT_DATABASE_URL", &env.db_url)
            .env("CHAT_REDIS_URL", &env.redis_url)
            .arg(&id),
    );
    assert!(out.status.success(), "{} {}", stdout(&out), stderr(&out));
    assert_eq!(
        c.messages(2),
        vec!["welcome (from examples/producer.rs)", "batch hello"]
    );
    let text = stdout(&out);
    assert!(text.contains("the retry was a duplicate: true"), "{text}");
    assert_eq!(text.matches(": delivered").count(), 2, "{text}");
}

#[test]
fn an_operator_purge_of_pending_messages_is_reported_to_client_and_producer() {
    let env = Env::new("pr_purge");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register();
    c.disconnect();
    let old = first_id(&enqueue_expect(&env, &[&id, "stale news"], 0));
    let new = first_id(&enqueue_expect(&env, &[&id, "fresh news"], 0));
    env.query(&format!(
        "UPDATE messages SET enqueued_at = enqueued_at - INTERVAL 2 DAY WHERE id = {old}"
    ));
    // Without --pending an undelivered message is never touched.
    let out = env.admin(&["purge", "--older-than", "1d"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(state(&status(&env, &[old])[0]), "queued");
    let out = env.admin(&["purge", "--older-than", "1d", "--pending"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("dropped 1 undelivered"),
        "{}",
        stdout(&out)
    );
    let found = status(&env, &[old, new]);
    assert_eq!(state(&found[0]), "purged", "{}", found[0]);
    assert!(found[0]["purged_at"].is_string(), "{}", found[0]);
    assert_eq!(state(&found[1]), "queued", "{}", found[1]);
    // The body is gone from the database; the client learns it missed one.
    assert_eq!(
        env.count(&format!(
            "SELECT LENGTH(body) FROM messages WHERE id = {old}"
        )),
        0
    );
    let mut c = node.connect();
    c.resume(&id);
    c.expect("DROPPED 1");
    c.expect("MESSAGE: fresh news");
    c.expect_silence(Duration::from_millis(300));
}

#[test]
fn words_after_the_client_id_are_text_even_when_they_look_like_flags() {
    let env = Env::new("pr_words");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register();
    enqueue_expect(&env, &[&id, "--ttl", "1", "x"], 0);
    enqueue_expect(&env, &[&id, "--help"], 0);
    enqueue_expect(&env, &["--ttl", "1h", &id, "--version", "-n"], 0);
    assert_eq!(c.messages(3), vec!["--ttl 1 x", "--help", "--version -n"]);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM messages WHERE expires_at IS NOT NULL"),
        1
    );
}

#[test]
fn a_run_of_dropped_messages_is_one_line_across_pages() {
    let env = Env::new("pr_run");
    let node = env.node("a", &["--page-size", "2"]);
    let mut c = node.connect();
    let id = c.register();
    c.disconnect();
    let lines: String = (0..7).map(|n| format!("{id}\tshort-lived {n}\n")).collect();
    let out = env.enqueue_stdin(&["--stdin", "--ttl", "300ms"], lines.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    enqueue_expect(&env, &[&id, "survivor"], 0);
    std::thread::sleep(Duration::from_millis(800));
    let mut c = node.connect();
    c.resume(&id);
    c.expect("DROPPED 7");
    c.expect("MESSAGE: survivor");
    c.expect_silence(Duration::from_millis(300));
}

#[test]
fn an_acknowledgement_in_time_is_never_reported_expired() {
    let env = Env::new("pr_ack_in_time");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register_ack();
    let first = first_id(&enqueue_expect(&env, &[&id, "no deadline"], 0));
    let timed = first_id(&enqueue_expect(&env, &["--ttl", "1", &id, "deadline"], 0));
    c.expect(&format!("MESSAGE {first}: no deadline"));
    c.expect(&format!("MESSAGE {timed}: deadline"));
    // In time, but ahead of the unacknowledged first message.
    c.send(&format!("ACK {timed}"));
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(state(&status(&env, &[timed])[0]), "queued");
    c.send(&format!("ACK {first}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let found = loop {
        let found = status(&env, &[first, timed]);
        if state(&found[1]) != "queued" || std::time::Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(state(&found[0]), "acknowledged", "{}", found[0]);
    assert_eq!(state(&found[1]), "acknowledged", "{}", found[1]);
}

#[test]
fn an_acknowledgement_after_the_deadline_leaves_the_message_expired() {
    let env = Env::new("pr_late_ack");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register_ack();
    let waiter = env.enqueue_in_background(&["--ttl", "1", "--wait=20", &id, "hurry"]);
    let line = c.line();
    let mid = line
        .strip_prefix("MESSAGE ")
        .and_then(|l| l.strip_suffix(": hurry"))
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();
    std::thread::sleep(Duration::from_millis(1500));
    c.send(&format!("ACK {mid}"));
    let out = waiter.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(6),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    // Final: it stays expired, and it is not delivered again.
    let found = status(&env, &[mid.parse().unwrap()]);
    assert_eq!(state(&found[0]), "expired", "{}", found[0]);
    c.disconnect();
    let mut c = node.connect();
    c.resume_ack(&id);
    c.expect_silence(Duration::from_millis(500));
}

#[test]
fn stdin_stores_and_reports_a_steady_stream_while_it_flows() {
    use std::io::{BufRead, Write};
    let env = Env::new("pr_linger");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register();
    let mut child = env
        .command(crate::support::node::ENQUEUE, &["--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // A producer writing a line every 50 ms, never pausing for long, for 3 s.
    let writer = std::thread::spawn(move || {
        for n in 0..60 {
            writeln!(input, "{id}\tsteady {n}").unwrap();
            input.flush().unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    // The first lines arrive, and their ids are printed, while the stream still flows.
    assert_eq!(c.messages(1), vec!["steady 0"]);
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("an id line");
    assert!(first.starts_with("1 "), "{first}");
    assert!(!writer.is_finished(), "stored only when the stream ended");
    writer.join().unwrap();
    let rest = c.messages(59);
    assert_eq!(rest.last().map(String::as_str), Some("steady 59"));
    assert!(child.wait().unwrap().success());
}

#[test]
fn wait_counts_a_stored_message_as_queued_when_mysql_goes_away() {
    let mut env = Env::private("pr_wait_nodb");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register();
    c.disconnect();
    let waiter = env.enqueue_in_background(&["--wait=4", &id, "stored first"]);
    // Stop MySQL once the message is stored (its id printed), while --wait polls.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while env.count("SELECT COUNT(*) FROM messages") == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    env.mariadb_mut().stop();
    let out = waiter.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(5),
        "{} {}",
        stdout(&out),
        stderr(&out)
    );
    // Either its last read said queued, or no read succeeded and it says so: never "error".
    assert!(!stderr(&out).contains("error"), "{}", stderr(&out));
    first_id(&stdout(&out));
    env.mariadb_mut().restart();
}
