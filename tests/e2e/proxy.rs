//! `--proxy-protocol`: the address in the PROXY header is the one bans and limits see.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use crate::support::client::TestClient;
use crate::support::node::Env;
use crate::support::ops::wait_metric;
use crate::support::tls::{make_cert, tls_node, TlsClient};

/// A connection that starts with `header` (a PROXY header, or anything else).
fn connect_with(addr: std::net::SocketAddr, header: &[u8]) -> TestClient {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream.write_all(header).unwrap();
    TestClient::from_stream(stream)
}

fn v2_ipv4(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[0x21, 0x11, 0, 12]);
    out.extend_from_slice(&src);
    out.extend_from_slice(&[127, 0, 0, 1]);
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&8000u16.to_be_bytes());
    out
}

#[test]
fn a_banned_address_in_the_proxy_header_is_refused() {
    let env = Env::new("proxy_ban");
    let node = env.node(
        "a",
        &[
            "--proxy-protocol",
            "--ban",
            "192.0.2.66,2001:db8:bad::/48",
            "--metrics-addr",
            "127.0.0.1:0",
            "--handshake-timeout",
            "2",
        ],
    );
    let port = node.logged_port("metrics listening");

    // Banned by the header's address (the socket's is 127.0.0.1, not banned).
    let mut banned = connect_with(
        node.addr(),
        b"PROXY TCP4 192.0.2.66 127.0.0.1 40000 8000\r\n",
    );
    banned.expect("ERROR: banned");
    banned.expect_closed();
    let mut banned6 = connect_with(
        node.addr(),
        b"PROXY TCP6 2001:db8:bad::7 ::1 40000 8000\r\n",
    );
    banned6.expect("ERROR: banned");
    banned6.expect_closed();

    // Another address, v1 and v2, with the client's first line in the same segment.
    let mut ok = connect_with(
        node.addr(),
        b"PROXY TCP4 192.0.2.7 127.0.0.1 40001 8000\r\nNONE\r\n",
    );
    ok.expect("GET_CLIENT_ID");
    let line = ok.line();
    assert!(line.starts_with("SET_CLIENT_ID: "), "{line}");
    let mut v2 = connect_with(node.addr(), &v2_ipv4([192, 0, 2, 8], 40002));
    v2.expect("GET_CLIENT_ID");
    v2.register();
    node.wait_log("192.0.2.8:40002");
    node.wait_log("192.0.2.7:40001");
    let mut v2_banned = connect_with(node.addr(), &v2_ipv4([192, 0, 2, 66], 40003));
    v2_banned.expect("ERROR: banned");

    // UNKNOWN: the socket's own address (127.0.0.1, allowed).
    let mut unknown = connect_with(node.addr(), b"PROXY UNKNOWN\r\n");
    unknown.expect("GET_CLIENT_ID");
    unknown.register();

    // No header: closed without a line, counted.
    let mut bare = connect_with(node.addr(), b"NONE\r\nPING\r\nPING\r\nPING\r\n");
    bare.expect_closed();
    let mut silent = TestClient::connect(node.addr());
    silent.expect_closed();
    let m = wait_metric(port, "chat_proxy_headers_rejected_total", 2.0);
    assert_eq!(m.value("chat_proxy_headers_rejected_total"), 2.0);
    assert_eq!(m.value("chat_handshakes_total{outcome=\"banned\"}"), 3.0);
}

#[test]
fn failed_handshakes_count_against_the_proxied_address() {
    let env = Env::new("proxy_limit");
    let node = env.node("a", &["--proxy-protocol", "--max-failed-handshakes", "2"]);
    for _ in 0..2 {
        let mut c = connect_with(node.addr(), b"PROXY TCP4 192.0.2.9 127.0.0.1 1 8000\r\n");
        c.expect("GET_CLIENT_ID");
        c.send("junk");
        assert!(c.line().starts_with("ERROR: malformed client id"));
    }
    let mut limited = connect_with(node.addr(), b"PROXY TCP4 192.0.2.9 127.0.0.1 1 8000\r\n");
    limited.expect("ERROR: too many failed handshakes from your address, try again later");
    // Another address behind the same proxy is not affected.
    let mut other = connect_with(node.addr(), b"PROXY TCP4 192.0.2.10 127.0.0.1 1 8000\r\n");
    other.expect("GET_CLIENT_ID");
    other.register();
}

#[test]
fn the_proxy_header_comes_before_the_tls_handshake() {
    let env = Env::new("proxy_tls");
    let dir = tempfile::tempdir().unwrap();
    let der = make_cert(dir.path(), "chat-test-proxy");
    let (node, tls) = tls_node(
        &env,
        dir.path(),
        &[
            "--proxy-protocol",
            "--ban",
            "192.0.2.66",
            "--handshake-timeout",
            "2",
        ],
    );
    let mut banned =
        TlsClient::connect_after(tls, &der, b"PROXY TCP4 192.0.2.66 127.0.0.1 1 8443\r\n").unwrap();
    banned.expect("ERROR: banned");
    let mut ok = TlsClient::connect_after(tls, &der, &v2_ipv4([192, 0, 2, 7], 40004)).unwrap();
    ok.expect("GET_CLIENT_ID");
    ok.send("NONE");
    assert!(ok.line().starts_with("SET_CLIENT_ID: "));
    node.wait_log("192.0.2.7:40004");
    // Without the header the TLS handshake never completes: the ClientHello is no PROXY header.
    assert!(TlsClient::connect(tls, &der).is_err());
}
