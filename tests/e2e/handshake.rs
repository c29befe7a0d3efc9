//! The handshake: new clients, resumed clients, refused ids, and the lines around it.

use std::time::Duration;

use crate::support::client::TestClient;
use crate::support::node::Env;

#[test]
fn new_client_gets_a_random_v4_id_and_a_row() {
    let env = Env::new("hs_new");
    let node = env.node("a", &[]);
    let mut a = node.connect();
    let id_a = a.register();
    let mut b = node.connect();
    let id_b = b.register();
    for id in [&id_a, &id_b] {
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(&id[14..15], "4", "UUID version 4: {id}");
        assert!(id.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
    }
    assert_ne!(id_a, id_b);
    assert_eq!(env.count("SELECT COUNT(*) FROM clients"), 2);
    let hex = id_a.replace('-', "");
    assert_eq!(
        env.count(&format!("SELECT COUNT(*) FROM clients WHERE id = X'{hex}'")),
        1
    );
}

#[test]
fn an_existing_id_resumes_in_any_case() {
    let env = Env::new("hs_resume");
    let node = env.node("a", &[]);
    let mut first = node.connect();
    let id = first.register();
    first.send("DISCONNECT");
    first.expect("BYE: disconnected");
    first.expect_closed();

    let mut again = node.connect();
    again.send(&id.to_uppercase());
    again.expect(&format!("SET_CLIENT_ID: {id}"));
    again.send("PING");
    again.expect("PONG");
    assert_eq!(env.count("SELECT COUNT(*) FROM clients"), 1);
}

#[test]
fn unknown_and_malformed_ids_are_refused_and_leave_no_row() {
    let env = Env::new("hs_refuse");
    let node = env.node("a", &[]);

    let mut unknown = node.connect();
    unknown.send("0b3e3f8a-6a57-4f0e-9d6c-2f1f6f1de6a4");
    unknown.expect("ERROR: unknown client id");
    unknown.expect_closed();

    let mut malformed = node.connect();
    malformed.send("3000");
    malformed.expect("ERROR: malformed client id \"3000\"");
    malformed.expect_closed();

    let mut empty = node.connect();
    empty.send("");
    empty.expect("ERROR: expected NONE or a client id");
    empty.expect_closed();

    // Port-scan style: connect, maybe read the prompt, leave.
    for _ in 0..5 {
        drop(TestClient::connect(node.addr()));
        let c = node.connect();
        drop(c);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(env.count("SELECT COUNT(*) FROM clients"), 0);

    // The node still serves.
    let mut ok = node.connect();
    ok.register();
}

#[test]
fn handshake_deadline_closes_silent_connections() {
    let env = Env::new("hs_deadline");
    let node = env.node("a", &["--handshake-timeout", "1"]);
    let mut silent = node.connect();
    silent.expect("ERROR: handshake timed out after 1 s");
    silent.expect_closed();
    assert_eq!(env.count("SELECT COUNT(*) FROM clients"), 0);
}

#[test]
fn lf_and_crlf_clients_are_both_understood() {
    let env = Env::new("hs_eol");
    let node = env.node("a", &[]);
    let mut lf = node.connect();
    lf.send_raw(b"NONE\n");
    let line = lf.line();
    assert!(line.starts_with("SET_CLIENT_ID: "), "{line}");
    lf.send_raw(b"ping\n");
    lf.expect("PONG");

    let mut crlf = node.connect();
    crlf.send_raw(b"none\r\n");
    let line = crlf.line();
    assert!(line.starts_with("SET_CLIENT_ID: "), "{line}");
    crlf.send_raw(b"Ping\r\n");
    crlf.expect("PONG");
}

#[test]
fn telnet_localhost_works_over_ipv4_and_ipv6() {
    let env = Env::new("hs_dual");
    let node = env.node("a", &[]);
    for addr in [
        format!("127.0.0.1:{}", node.port),
        format!("[::1]:{}", node.port),
    ] {
        let mut client = TestClient::connect(addr.parse().unwrap());
        client.expect("GET_CLIENT_ID");
        client.register();
        client.send("PING");
        client.expect("PONG");
    }
    // "localhost" resolves to one or both; whichever the resolver gives must work.
    let addrs: Vec<_> = std::net::ToSocketAddrs::to_socket_addrs(&("localhost", node.port))
        .unwrap()
        .collect();
    assert!(!addrs.is_empty());
    for addr in addrs {
        let mut client = TestClient::connect(addr);
        client.expect("GET_CLIENT_ID");
    }
}
