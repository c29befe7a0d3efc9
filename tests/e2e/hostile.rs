//! Hostile input and limits: each case checks the exact reply, and that a well-behaved client on the
//! same node is served during and after.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::time::Duration;

use crate::support::client::TestClient;
use crate::support::node::{signal, Env, Node};

/// A well-behaved client, connected before the abuse starts.
struct Witness {
    client: TestClient,
    id: String,
    n: usize,
}

impl Witness {
    fn new(node: &Node) -> Witness {
        let mut client = node.connect();
        let id = client.register();
        Witness { client, id, n: 0 }
    }

    /// Still answered, and still receives its messages.
    fn served(&mut self, env: &Env) {
        self.client.send("PING");
        self.client.expect("PONG");
        let text = format!("witness {}", self.n);
        self.n += 1;
        env.enqueue(&self.id, &text);
        assert_eq!(self.client.messages(1), vec![text]);
    }
}

fn from(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

#[test]
fn a_too_long_line_is_refused_without_buffering_the_rest() {
    let env = Env::new("ho_long");
    let node = env.node("a", &[]);
    let mut w = Witness::new(&node);
    // In the handshake.
    let mut c = node.connect();
    c.send_raw(&[b'x'; 1025]);
    c.send_raw(b"\r\n");
    c.expect("ERROR: line too long (limit 1024 bytes)");
    c.expect_closed();
    let mut c = node.connect();
    c.send_raw(&[b'x'; 2000]);
    c.expect("ERROR: line too long (limit 1024 bytes)");
    c.expect_closed();
    // In a session, with far more coming: the node answers and closes after the limit.
    let mut c = node.connect();
    c.register();
    let mut raw = c.into_stream();
    let mut sent = 0usize;
    let chunk = [b'y'; 64 * 1024];
    while sent < 64 * 1024 * 1024 {
        match raw.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(
        sent < 64 * 1024 * 1024,
        "the node kept reading a 64 MiB line"
    );
    w.served(&env);
    // Exactly at the limit is fine.
    let mut c = node.connect();
    c.register();
    c.send(&(" ".repeat(1020) + "PING"));
    c.expect("PONG");
    w.served(&env);
}

#[test]
fn a_full_node_refuses_new_connections_and_keeps_the_others() {
    let env = Env::new("ho_full");
    let node = env.node("a", &["--max-connections", "3"]);
    let mut w = Witness::new(&node);
    let mut others: Vec<_> = (0..2).map(|_| node.connect()).collect();
    let mut refused = TestClient::connect(node.addr());
    refused.expect("ERROR: server full, try again later");
    refused.expect_closed();
    w.served(&env);
    others.pop();
    std::thread::sleep(Duration::from_millis(200));
    let mut again = node.connect();
    again.register();
    w.served(&env);
}

#[test]
fn failed_handshakes_are_rate_limited_per_address() {
    let env = Env::new("ho_rate");
    let node = env.node(
        "a",
        &[
            "--max-failed-handshakes",
            "3",
            "--failed-handshake-window",
            "600",
        ],
    );
    let mut w = Witness::new(&node);
    let guesser = from(2);
    for attempt in ["0b3e3f8a-6a57-4f0e-9d6c-2f1f6f1de6a4", "junk", ""] {
        let mut c = TestClient::connect_from(guesser, node.addr());
        c.expect("GET_CLIENT_ID");
        c.send(attempt);
        assert!(c.line().starts_with("ERROR: "));
        c.expect_closed();
    }
    let mut blocked = TestClient::connect_from(guesser, node.addr());
    blocked.expect("ERROR: too many failed handshakes from your address, try again later");
    blocked.expect_closed();
    // Other addresses, and good handshakes, are not affected.
    let mut other = TestClient::connect_from(from(3), node.addr());
    other.expect("GET_CLIENT_ID");
    other.register();
    w.served(&env);
    assert_eq!(env.count("SELECT COUNT(*) FROM clients"), 2);
}

#[test]
fn bans_refuse_addresses_and_ids_and_reload_on_sighup() {
    let env = Env::new("ho_ban");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bans.txt");
    std::fs::write(&file, "# nobody yet\n").unwrap();
    let node = env.node(
        "a",
        &[
            "--ban",
            "127.0.0.9,127.0.1.0/24",
            "--ban-file",
            file.to_str().unwrap(),
        ],
    );
    let mut w = Witness::new(&node);
    let mut c = TestClient::connect_from(from(9), node.addr());
    c.expect("ERROR: banned");
    c.expect_closed();
    let mut c = TestClient::connect_from("127.0.1.77".parse().unwrap(), node.addr());
    c.expect("ERROR: banned");
    // A live client is banned by id: SIGHUP closes its session and refuses it from then on.
    let mut victim = node.connect();
    let victim_id = victim.register();
    std::fs::write(&file, format!("{victim_id}  # abuse report 42\n")).unwrap();
    signal(node.pid(), "HUP");
    victim.expect("BYE: banned");
    victim.expect_closed();
    let mut again = node.connect();
    again.send(&victim_id);
    again.expect("ERROR: banned");
    again.expect_closed();
    w.served(&env);
    // Unbanned by the next reload.
    std::fs::write(&file, "").unwrap();
    signal(node.pid(), "HUP");
    std::thread::sleep(Duration::from_millis(300));
    let mut back = node.connect();
    back.resume(&victim_id);
    // A broken file keeps the previous list.
    std::fs::write(&file, "not-an-address\n").unwrap();
    signal(node.pid(), "HUP");
    std::thread::sleep(Duration::from_millis(300));
    let mut still = node.connect();
    still.register();
    assert!(
        node.log().contains("ban list not reloaded"),
        "{}",
        node.log()
    );
    w.served(&env);
}

#[test]
fn telnet_control_sequences_are_stripped() {
    let env = Env::new("ho_telnet");
    let node = env.node("a", &[]);
    let mut w = Witness::new(&node);
    let mut c = node.connect();
    // IAC WILL ECHO, IAC DO SUPPRESS-GO-AHEAD, then the answer; a subnegotiation inside it.
    c.send_raw(b"\xff\xfb\x01\xff\xfd\x03NO\xff\xfa\x18\x00xterm\xff\xf0NE\r\n");
    assert!(c.line().starts_with("SET_CLIENT_ID: "));
    // Ctrl-C in telnet: IAC IP IAC DO TIMING-MARK. Then a command.
    c.send_raw(b"\xff\xf4\xff\xfd\x06");
    c.send_raw(b"PING\r\n");
    c.expect("PONG");
    // IAC IAC is a literal 0xFF byte: not a command.
    c.send_raw(b"\xff\xffPING\r\n");
    c.expect("ERROR: unknown command \"?PING\"");
    w.served(&env);
}

#[test]
fn odd_bytes_and_framing_do_not_hurt() {
    let env = Env::new("ho_bytes");
    let node = env.node("a", &[]);
    let mut w = Witness::new(&node);
    let mut c = node.connect();
    c.register();
    c.send_raw(b"\xc3\x28\xa0\xa1\r\n");
    c.expect("ERROR: unknown command \"?(??\"");
    c.send_raw(b"PI\0NG\r\n");
    c.expect("PONG");
    c.send_raw(b"PING\rPING\n");
    c.expect("ERROR: PING takes no arguments");
    c.send_raw(b"\r\n\n\r\n");
    c.send_raw(format!("{}PING{}\r\n", " ".repeat(500), "\t".repeat(500)).as_bytes());
    c.expect("PONG");
    // One line in many tiny segments.
    let mut raw = c.into_stream();
    raw.set_nodelay(true).unwrap();
    for b in b"PING\r\n" {
        raw.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut c = TestClient::from_stream(raw);
    c.expect("PONG");
    // A flood of lines in one segment: every one answered, in order.
    let flood: Vec<u8> = (0..500)
        .flat_map(|i| {
            if i % 2 == 0 {
                b"PING\r\n".to_vec()
            } else {
                b"nope\n".to_vec()
            }
        })
        .collect();
    c.send_raw(&flood);
    for i in 0..500 {
        if i % 2 == 0 {
            c.expect("PONG");
        } else {
            c.expect("ERROR: unknown command \"nope\"");
        }
    }
    w.served(&env);
}

#[test]
fn half_closed_and_reset_connections_end_cleanly() {
    let env = Env::new("ho_half");
    let node = env.node("a", &[]);
    let mut w = Witness::new(&node);
    // Half-closed after the answer: the session is set up, then ends as the client stopped sending.
    let mut c = node.connect();
    c.send("NONE");
    c.shutdown_write();
    assert!(c.line().starts_with("SET_CLIENT_ID: "));
    c.expect_closed();
    // Half-closed before answering: nothing created.
    let mut c = node.connect();
    c.shutdown_write();
    c.expect_closed();
    // Reset in the middle of the handshake answer.
    for _ in 0..20 {
        let c = node.connect();
        let raw = c.into_stream();
        (&raw).write_all(b"NO").unwrap();
        socket2::SockRef::from(&raw)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(raw);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(env.count("SELECT COUNT(*) FROM clients"), 2);
    w.served(&env);
}

#[test]
fn message_text_is_delivered_byte_for_byte_and_cannot_inject_lines() {
    let env = Env::new("ho_text");
    let node = env.node("a", &[]);
    let mut c = node.connect();
    let id = c.register();
    let texts = [
        "tab\there \"quoted\" 'single' \\back\\slash",
        "ERROR: not really an error",
        "MESSAGE: not really a second message",
        "ünïcødé ☃ 日本語 🎉",
        "\u{1b}[31mred\u{1b}[0m",
        "   leading and trailing spaces   ",
    ];
    for t in texts {
        env.enqueue(&id, t);
    }
    assert_eq!(c.messages(texts.len()), texts);
    // A body that reached the database some other way cannot break the line either.
    let hex = id.replace('-', "");
    env.query(&format!(
        "INSERT INTO messages (client_id, seq, body) VALUES (X'{hex}', 7, 'a\\r\\nERROR: forged\\nb'); \
         UPDATE clients SET last_seq = 7 WHERE id = X'{hex}'"
    ));
    assert_eq!(c.messages(1), vec!["a  ERROR: forged b"]);
    c.send("PING");
    c.expect("PONG");
}

#[test]
fn abuse_5000_silent_and_100_flooding_connections_while_100_clients_are_served() {
    let env = Env::new("ho_abuse");
    let node = env.node(
        "a",
        &[
            "--max-connections",
            "6000",
            "--handshake-timeout",
            "60",
            "--write-timeout",
            "2",
        ],
    );
    let ids = node.register(100);
    let idle_before = node.rss_kib();
    // 5,000 connections that open and never speak, from many source addresses.
    let silent: Vec<TcpStream> = (0..5000)
        .map(|i| {
            let c = TestClient::connect_from(from(10 + (i % 200) as u8), node.addr());
            c.into_stream()
        })
        .collect();
    // 100 that flood garbage, before and after a handshake, without reading the answers.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..100)
        .map(|i| {
            let addr = node.addr();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = TestClient::connect_from(from(230 + (i % 20) as u8), addr);
                if i % 2 == 0 {
                    c.send("NONE");
                }
                let mut raw = c.into_stream();
                let garbage: Vec<u8> = (0..64 * 1024u32).map(|k| (k * 7919 % 251) as u8).collect();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if raw.write_all(&garbage).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    let addrs = crate::support::stream::nodes(vec![node.addr()]);
    let per_client = 10;
    let receivers: Vec<_> = ids
        .iter()
        .map(|id| {
            crate::support::stream::receive(
                id.clone(),
                false,
                addrs.clone(),
                per_client,
                Duration::from_secs(60),
            )
        })
        .collect();
    env.produce(&ids, per_client, Duration::from_millis(20))
        .join()
        .unwrap();
    let mut peak = 0;
    for r in receivers {
        let record = r.join().unwrap();
        crate::support::stream::check(&record, per_client, &crate::support::stream::Copies::None);
        peak = peak.max(node.rss_kib());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    let sessions = 5000 + 100 + 100;
    println!(
        "abuse: node RSS {idle_before} KiB with 100 idle sessions, peak {peak} KiB with {sessions} \
         connections ({} bytes per extra connection)",
        (peak - idle_before) * 1024 / 5100
    );
    // The documented bound (docs/PROTOCOL.md): under 48 MiB for these 5,200 connections.
    assert!(peak < 48 * 1024, "node RSS {peak} KiB");
    // The silent ones are still open, each prompted once.
    let mut sample = TestClient::from_stream(silent[0].try_clone().unwrap());
    sample.expect("GET_CLIENT_ID");
    drop(silent);
}
