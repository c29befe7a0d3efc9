//! The TLS listener: same protocol inside TLS, through `openssl s_client` and a rustls client;
//! certificate reload on SIGHUP; bad certificates.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use crate::support::node::{run_with_timeout, signal, Env};
use crate::support::tls::{cert_path, key_path, make_cert, tls_node, TlsClient};

const SERVER: &str = env!("CARGO_BIN_EXE_chat-server");

/// `openssl s_client` to `addr` with `input` on its stdin; its stdout (certificate text with
/// `quiet == false`, only the session's bytes with `quiet`).
fn s_client(addr: SocketAddr, input: &str, quiet: bool) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &addr.to_string(),
        "-servername",
        "localhost",
    ]);
    if quiet {
        cmd.arg("-quiet");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl s_client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !waiter.is_finished() {
        if std::time::Instant::now() > deadline {
            signal(pid, "KILL");
            panic!("openssl s_client did not finish");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = waiter.join().unwrap().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_protocol_works_over_tls_with_openssl_and_rustls() {
    let env = Env::new("tls_proto");
    let dir = tempfile::tempdir().unwrap();
    let der = make_cert(dir.path(), "chat-test-one");
    let (node, tls_addr) = tls_node(&env, dir.path(), &[]);

    // The real openssl binary: a whole session, typed lines with LF.
    let out = s_client(tls_addr, "NONE\nPING\nDISCONNECT\n", true);
    let lines: Vec<&str> = out.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 4, "{out:?}");
    assert_eq!(lines[0], "GET_CLIENT_ID");
    assert!(lines[1].starts_with("SET_CLIENT_ID: "), "{out:?}");
    assert_eq!(&lines[2..], ["PONG", "BYE: disconnected"]);
    assert!(out.ends_with("\r\n"), "{out:?}");
    let id = lines[1]["SET_CLIENT_ID: ".len()..].to_string();
    let subject = s_client(tls_addr, "", false);
    assert!(subject.contains("CN = chat-test-one"), "{subject}");

    // The rustls client resumes the same client and gets a message enqueued for it.
    let mut client = TlsClient::connect(tls_addr, &der).expect("TLS handshake");
    client.expect("GET_CLIENT_ID");
    client.send(&id);
    client.expect(&format!("SET_CLIENT_ID: {id}"));
    env.enqueue(&id, "over tls");
    client.expect("MESSAGE: over tls");

    // The plain listener is still plain.
    let mut plain = node.connect();
    plain.register();
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_sessions() {
    let env = Env::new("tls_reload");
    let dir = tempfile::tempdir().unwrap();
    let first = make_cert(dir.path(), "chat-test-first");
    let (node, tls_addr) = tls_node(&env, dir.path(), &[]);

    let mut old = TlsClient::connect(tls_addr, &first).expect("TLS handshake");
    old.expect("GET_CLIENT_ID");
    old.send("NONE");
    let id = old.line()["SET_CLIENT_ID: ".len()..].to_string();

    let second = make_cert(dir.path(), "chat-test-second");
    signal(node.pid(), "HUP");
    node.wait_log("TLS certificate reloaded");
    // New connections see the new certificate, and only it.
    assert!(TlsClient::connect(tls_addr, &first).is_err());
    let mut new = TlsClient::connect(tls_addr, &second).expect("new certificate");
    new.expect("GET_CLIENT_ID");
    let subject = s_client(tls_addr, "", false);
    assert!(subject.contains("CN = chat-test-second"), "{subject}");
    // The session opened before the reload goes on.
    old.send("PING");
    old.expect("PONG");
    env.enqueue(&id, "still here");
    old.expect("MESSAGE: still here");

    // Broken files: the reload fails, the last good certificate stays.
    std::fs::write(cert_path(dir.path()), "not a certificate").unwrap();
    signal(node.pid(), "HUP");
    node.wait_log("TLS certificate not reloaded");
    let mut after = TlsClient::connect(tls_addr, &second).expect("the previous certificate");
    after.expect("GET_CLIENT_ID");
    old.send("PING");
    old.expect("PONG");
}

#[test]
fn a_bad_certificate_or_key_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    make_cert(dir.path(), "chat-test-bad");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN NOTHING-----\n").unwrap();
    let cert = cert_path(dir.path());
    let key = key_path(dir.path());
    let missing = dir.path().join("missing.pem");
    let cases = [
        (&garbage, &key, "holds no PEM certificate"),
        (&cert, &garbage, "holds no PEM private key"),
        (&missing, &key, "cannot read"),
        (&key, &cert, "holds no PEM certificate"),
    ];
    for (cert, key, expected) in cases {
        let out = start_with(cert, key);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{expected:?} not in {stderr}");
    }
    // A key that does not belong to the certificate.
    let other = tempfile::tempdir().unwrap();
    make_cert(other.path(), "chat-test-other");
    let out = start_with(&cert, &key_path(other.path()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("do not make a usable TLS setup"),
        "{stderr}"
    );
}

/// Runs `chat-server` with this certificate and key (and no reachable MySQL) to its exit.
fn start_with(cert: &std::path::Path, key: &std::path::Path) -> std::process::Output {
    run_with_timeout(
        Command::new(SERVER)
            .env_clear()
            .args(["--port", "0", "--tls-port", "0"])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .args(["--database-url", "mysql://root@127.0.0.1:1/none"]),
    )
}
