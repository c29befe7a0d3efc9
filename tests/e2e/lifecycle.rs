//! A node's life: refusing to start without MySQL or Redis, graceful shutdown, help text.

use std::process::Command;
use std::time::Duration;

use crate::support::node::{run_with_timeout, spawn_logged, Env, Node};
use crate::support::services::free_port;

const SERVER: &str = env!("CARGO_BIN_EXE_chat-server");

fn start_failure(db_url: &str, redis_url: &str) -> (Option<i32>, String) {
    let mut cmd = Command::new(SERVER);
    cmd.env_clear().args([
        "--port",
        "0",
        "--database-url",
        db_url,
        "--redis-url",
        redis_url,
    ]);
    let (mut child, log, port) = spawn_logged(cmd);
    assert!(port.is_err(), "node started without its services");
    let status = child.wait().unwrap();
    let text = log.lock().unwrap().clone();
    (status.code(), text)
}

#[test]
fn refuses_to_start_without_mysql_or_redis() {
    let env = Env::new("lc_deps");
    let nowhere_db = format!("mysql://root@127.0.0.1:{}/chat", free_port());
    let (code, log) = start_failure(&nowhere_db, &env.redis_url);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("cannot reach MySQL at mysql://root@127.0.0.1:"),
        "{log}"
    );

    let nowhere_redis = format!("redis://127.0.0.1:{}/", free_port());
    let (code, log) = start_failure(&env.db_url, &nowhere_redis);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("cannot reach Redis at redis://127.0.0.1:"),
        "{log}"
    );
}

#[test]
fn sigterm_says_goodbye_to_every_client_and_exits_zero() {
    let env = Env::new("lc_term");
    let mut node = env.node("a", &[]);
    let mut clients: Vec<_> = (0..3).map(|_| node.connect()).collect();
    for c in &mut clients {
        c.register();
    }
    let mut mid_handshake = node.connect();
    let status = node.terminate();
    assert_eq!(status.code(), Some(0), "{}", node.log());
    for c in &mut clients {
        c.expect("BYE: server shutting down, reconnect later");
        c.expect_closed();
    }
    mid_handshake.expect_closed();
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect_timeout(&node.addr(), Duration::from_secs(1)).is_err());
}

#[test]
fn sigint_is_a_graceful_shutdown_too() {
    let env = Env::new("lc_int");
    let mut node = env.node("a", &[]);
    let mut c = node.connect();
    c.register();
    crate::support::node::signal(node.pid(), "INT");
    c.expect("BYE: server shutting down, reconnect later");
    c.expect_closed();
    let status = node
        .wait(Duration::from_secs(30))
        .expect("exit after SIGINT");
    assert_eq!(status.code(), Some(0), "{}", node.log());
}

#[test]
fn help_explains_every_flag() {
    let out = run_with_timeout(Command::new(SERVER).arg("--help"));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for flag in [
        "--port",
        "--bind",
        "--database-url",
        "--redis-url",
        "--node-id",
        "--log-level",
        "--log-format",
        "CHAT_DATABASE_URL",
        "CHAT_REDIS_URL",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn bind_restricts_the_listener() {
    let env = Env::new("lc_bind");
    let node = Node::start(&env, &env.node_id("v4"), &["--bind", "127.0.0.1"]);
    let mut c = node.connect();
    c.register();
    let v6 = format!("[::1]:{}", node.port).parse().unwrap();
    assert!(std::net::TcpStream::connect_timeout(&v6, Duration::from_secs(1)).is_err());
}
