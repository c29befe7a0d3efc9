//! The operations port: Prometheus metrics that move with real deliveries, health and readiness.

use std::time::{Duration, Instant};

use crate::support::node::{signal, Env};
use crate::support::ops::{get, scrape, wait_metric};

#[test]
fn metrics_count_a_real_delivery() {
    let env = Env::new("metrics_delivery");
    let node = env.node("a", &["--metrics-addr", "127.0.0.1:0"]);
    let port = node.logged_port("metrics listening");

    let before = scrape(port);
    assert_eq!(before.value("chat_sessions_open"), 0.0, "{}", before.0);

    // A plain session: three messages.
    let mut plain = node.connect();
    let id = plain.register();
    wait_metric(port, "chat_sessions_open", 1.0);
    for text in ["one", "two", "three"] {
        env.enqueue(&id, text);
    }
    assert_eq!(plain.messages(3), vec!["one", "two", "three"]);
    let m = wait_metric(port, "chat_messages_delivered_total{mode=\"plain\"}", 3.0);
    assert_eq!(
        m.value("chat_messages_delivered_total{mode=\"plain\"}"),
        3.0
    );
    // Read from MySQL, or carried whole by their notifications: each message one way.
    assert_eq!(
        m.value("chat_messages_fetched_total") + m.value("chat_messages_carried_total"),
        3.0
    );
    assert_eq!(m.value("chat_delivery_latency_seconds_count"), 3.0);
    assert!(m.value("chat_delivery_latency_seconds_sum") >= 0.0);
    assert_eq!(m.value("chat_handshakes_total{outcome=\"new\"}"), 1.0);
    // Each enqueue sent one wake to this node (the sweep may have woken the session as well).
    let m = wait_metric(port, "chat_notifications_received_total", 3.0);
    assert_eq!(m.value("chat_notifications_received_total"), 3.0);

    // An acknowledged session: two messages, one acknowledged, one left for the next session.
    let mut acked = node.connect();
    let ack_id = acked.register_ack();
    wait_metric(port, "chat_sessions_open", 2.0);
    let first = env.enqueue(&ack_id, "a1");
    env.enqueue(&ack_id, "a2");
    assert_eq!(acked.line(), format!("MESSAGE {first}: a1"));
    assert!(acked.line().ends_with(": a2"));
    acked.send(&format!("ACK {first}"));
    acked.send("DISCONNECT");
    acked.expect("BYE: disconnected");
    let m = wait_metric(port, "chat_messages_redelivered_total", 1.0);
    assert_eq!(m.value("chat_messages_acknowledged_total"), 1.0);
    assert_eq!(m.value("chat_messages_redelivered_total"), 1.0);
    assert_eq!(m.value("chat_messages_delivered_total{mode=\"ack\"}"), 2.0);
    assert_eq!(
        m.value("chat_messages_delivered_total{mode=\"plain\"}"),
        3.0
    );

    // Refusals are counted by outcome; the resumed session by its own.
    let mut bad = node.connect();
    bad.send("not-an-id");
    assert!(bad.line().starts_with("ERROR: malformed client id"));
    let mut again = node.connect();
    again.resume(&ack_id);
    assert!(
        again.line().ends_with(": a2"),
        "the unacknowledged message comes again"
    );
    let m = wait_metric(port, "chat_handshakes_total{outcome=\"resumed\"}", 1.0);
    assert_eq!(m.value("chat_handshakes_total{outcome=\"malformed\"}"), 1.0);
    assert_eq!(m.value("chat_handshakes_total{outcome=\"new\"}"), 2.0);

    // The sweep runs while sessions are open; the backlog gauge and MySQL errors are exported.
    let m = wait_metric(port, "chat_sweeps_total", 1.0);
    assert!(m.0.contains("chat_messages_pending "), "{}", m.0);
    assert_eq!(m.value("chat_mysql_errors_total"), 0.0);
    assert!(m
        .0
        .contains("# TYPE chat_delivery_latency_seconds histogram"));

    plain.send("DISCONNECT");
    plain.expect("BYE: disconnected");
    again.send("DISCONNECT");
    again.expect("BYE: disconnected");
    let deadline = Instant::now() + Duration::from_secs(30);
    while scrape(port).value("chat_sessions_open") != 0.0 {
        assert!(Instant::now() < deadline, "sessions_open did not drop to 0");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn health_and_readiness_and_draining_on_sigterm() {
    let env = Env::new("metrics_ready");
    let mut node = env.node(
        "a",
        &["--metrics-addr", "127.0.0.1:0", "--drain-delay", "3"],
    );
    let port = node.logged_port("metrics listening");
    assert_eq!(get(port, "/healthz"), (200, "ok\n".to_string()));
    assert_eq!(get(port, "/readyz"), (200, "ready\n".to_string()));
    assert_eq!(get(port, "/nothing").0, 404);

    let mut client = node.connect();
    client.register();
    signal(node.pid(), "TERM");
    // Unready at once, while the listeners still accept during the drain delay.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(port, "/readyz");
        if status == 503 {
            assert_eq!(body, "shutting down\n");
            break;
        }
        assert!(Instant::now() < deadline, "/readyz stayed {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(get(port, "/healthz").0, 200);
    client.expect("BYE: server shutting down, reconnect later");
    let status = node.wait(Duration::from_secs(30)).expect("node exits");
    assert_eq!(status.code(), Some(0), "{}", node.log());
}

#[test]
fn a_fresh_node_exports_every_documented_metric() {
    let env = Env::new("metrics_fresh");
    let node = env.node("a", &["--metrics-addr", "127.0.0.1:0"]);
    let port = node.logged_port("metrics listening");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let documented: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `chat_"))
        .filter_map(|l| l.split(['`', '{']).next())
        .collect();
    assert!(documented.len() >= 18, "{documented:?}");
    let m = scrape(port);
    for name in documented {
        assert!(
            m.0.contains(&format!("# TYPE chat_{name} ")),
            "chat_{name} missing from a fresh node's /metrics:\n{}",
            m.0
        );
    }
    // Known label values are there at 0 before they first move.
    for series in [
        "chat_handshakes_total{outcome=\"new\"} 0",
        "chat_handshakes_total{outcome=\"server_full\"} 0",
        "chat_messages_delivered_total{mode=\"plain\"} 0",
        "chat_messages_delivered_total{mode=\"ack\"} 0",
        "chat_tls_reloads_total{result=\"ok\"} 0",
        "chat_tls_reloads_total{result=\"error\"} 0",
        "chat_mysql_errors_total 0",
        "chat_delivery_latency_seconds_count 0",
    ] {
        assert!(m.0.lines().any(|l| l == series), "{series}:\n{}", m.0);
    }
}

/// A raw request on the operations port: everything the node sent back.
fn raw(port: u16, request: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn head_gets_headers_only_and_a_full_node_is_not_ready() {
    let env = Env::new("metrics_full");
    let node = env.node(
        "a",
        &["--metrics-addr", "127.0.0.1:0", "--max-connections", "1"],
    );
    let port = node.logged_port("metrics listening");
    for path in ["/healthz", "/readyz"] {
        let response = raw(port, &format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response.ends_with("\r\n\r\n"),
            "a body after HEAD: {response:?}"
        );
        assert!(response.contains("Content-Length: "), "{response}");
    }
    assert_eq!(get(port, "/readyz"), (200, "ready\n".to_string()));

    // The one slot taken: new clients get `server full`, and /readyz says so.
    let mut held = node.connect();
    held.register();
    assert_eq!(
        get(port, "/readyz"),
        (503, "at --max-connections\n".to_string())
    );
    let mut refused = crate::support::client::TestClient::connect(node.addr());
    refused.expect("ERROR: server full, try again later");
    held.send("DISCONNECT");
    held.expect("BYE: disconnected");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(port, "/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "/readyz stayed unready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn slow_connections_do_not_starve_health_checks() {
    let env = Env::new("metrics_slowloris");
    let node = env.node("a", &["--metrics-addr", "127.0.0.1:0"]);
    let port = node.logged_port("metrics listening");
    // 600 connections that never finish their request head (more than the port serves at once).
    let idle: Vec<std::net::TcpStream> = (0..600)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            std::io::Write::write_all(&mut s, b"GET /readyz HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    // Health checks are still answered (each slow connection is dropped after its head timeout).
    for _ in 0..3 {
        assert_eq!(get(port, "/healthz"), (200, "ok\n".to_string()));
    }
    drop(idle);
}

/// An idle session on plain TCP waits without a task (`chat_sessions_parked`); a message, a
/// command and the shutdown each wake it, and the shutdown still waits for its goodbye.
#[test]
fn idle_sessions_park_and_wake_for_messages_commands_and_shutdown() {
    let env = Env::new("metrics_parked");
    let mut node = env.node("a", &["--metrics-addr", "127.0.0.1:0"]);
    let port = node.logged_port("metrics listening");
    let mut client = node.connect();
    let id = client.register();
    let mut acked = node.connect();
    let ack_id = acked.register_ack();
    wait_metric(port, "chat_sessions_parked", 2.0);

    // A message wakes it; once its cursor is recorded it parks again.
    env.enqueue(&id, "to a parked session");
    assert_eq!(client.messages(1), vec!["to a parked session"]);
    wait_metric(port, "chat_sessions_parked", 2.0);
    let recorded = |hex: &str| {
        env.count(&format!(
            "SELECT delivered_seq FROM cursors WHERE client_id = UNHEX('{hex}')"
        ))
    };
    assert_eq!(recorded(&id.replace('-', "")), 1);

    // Acknowledged mode: the message waits for its ACK while the session is parked.
    let sent = env.enqueue(&ack_id, "acknowledge me");
    assert_eq!(acked.line(), format!("MESSAGE {sent}: acknowledge me"));
    wait_metric(port, "chat_sessions_parked", 2.0);
    acked.send(&format!("ACK {sent}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while recorded(&ack_id.replace('-', "")) != 1 {
        assert!(Instant::now() < deadline, "the ACK was not recorded");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A command wakes it.
    wait_metric(port, "chat_sessions_parked", 2.0);
    client.send("PING");
    client.expect("PONG");

    // The shutdown wakes every parked session and waits for its goodbye.
    wait_metric(port, "chat_sessions_parked", 2.0);
    signal(node.pid(), "TERM");
    client.expect("BYE: server shutting down, reconnect later");
    acked.expect("BYE: server shutting down, reconnect later");
    let status = node.wait(Duration::from_secs(30)).expect("node exits");
    assert_eq!(status.code(), Some(0), "{}", node.log());
}
