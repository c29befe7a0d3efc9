//! Three nodes behind Debian's HAProxy, configured by deploy/haproxy.cfg (ports replaced): clients
//! reconnect through it when a node stops, and nothing enqueued meanwhile is lost.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::client::TestClient;
use crate::support::node::{Env, Node};
use crate::support::ops::scrape;
use crate::support::services::free_port;
use crate::support::stream::{self, Copies};

const HAPROXY: &str = "/usr/sbin/haproxy";
const TEMPLATE: &str = include_str!("../../deploy/haproxy.cfg");

/// A running HAProxy, killed on drop.
struct HaProxy(Child);

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// deploy/haproxy.cfg with the frontend on `front` and the three servers replaced by `nodes`
/// (client port, operations port).
fn config(front: u16, nodes: &[(u16, u16)]) -> String {
    // The file as shipped (its maxconn too: it starts under an open-files limit of 20000).
    let mut cfg = TEMPLATE.replace("bind :7000", &format!("bind 127.0.0.1:{front}"));
    for (i, (port, ops)) in nodes.iter().enumerate() {
        let from = format!("127.0.0.1:{} check port {}", 8000 + i, 9100 + i);
        assert!(
            cfg.contains(&from),
            "deploy/haproxy.cfg has no server line {from:?}"
        );
        cfg = cfg.replace(&from, &format!("127.0.0.1:{port} check port {ops}"));
    }
    cfg
}

fn start_haproxy(cfg: &Path, log: &Path) -> HaProxy {
    let check = Command::new(HAPROXY)
        .arg("-c")
        .arg("-f")
        .arg(cfg)
        .output()
        .expect("haproxy -c");
    assert!(check.status.success(), "haproxy -c: {check:?}");
    let child = Command::new(HAPROXY)
        .arg("-f")
        .arg(cfg)
        .arg("-db")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .expect("start haproxy");
    HaProxy(child)
}

/// Waits until a client gets `GET_CLIENT_ID` through the frontend.
fn wait_frontend(front: SocketAddr, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(mut c) = TestClient::try_connect(front) {
            if matches!(c.try_line(Duration::from_secs(2)), Ok(Some(l)) if l == "GET_CLIENT_ID") {
                return;
            }
        }
        let text = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "HAProxy did not serve:\n{}\n{}",
            text(log),
            text(&log.with_extension("err"))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sum of `series` over the nodes' metrics.
fn total(ops: &[u16], series: &str) -> f64 {
    ops.iter().map(|p| scrape(*p).value(series)).sum()
}

fn wait_total(ops: &[u16], series: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while total(ops, series) < at_least {
        assert!(
            Instant::now() < deadline,
            "{series} stayed below {at_least}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn clients_reconnect_through_haproxy_when_a_node_stops_and_nothing_is_lost() {
    if !Path::new(HAPROXY).exists() {
        eprintln!(
            "\n!!!!!!!! SKIPPED haproxy test: {HAPROXY} is not installed \
             (scripts/install-deps.sh installs it) !!!!!!!!\n"
        );
        return;
    }
    let env = Env::new("haproxy");
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| env.node(n, &["--proxy-protocol", "--metrics-addr", "127.0.0.1:0"]))
        .collect();
    let ops: Vec<u16> = nodes
        .iter()
        .map(|n| n.logged_port("metrics listening"))
        .collect();
    let front_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("haproxy.cfg");
    let ports: Vec<(u16, u16)> = nodes.iter().map(|n| n.port).zip(ops.clone()).collect();
    std::fs::write(&cfg, config(front_port, &ports)).unwrap();
    let log = dir.path().join("haproxy.log");
    let _haproxy = start_haproxy(&cfg, &log);
    let front = SocketAddr::from(([127, 0, 0, 1], front_port));
    wait_frontend(front, &log);

    // Six clients, all through HAProxy, from 127.0.0.77 (HAProxy itself connects from 127.0.0.1).
    let ids: Vec<String> = (0..6)
        .map(|_| {
            let mut c = TestClient::connect_from([127, 0, 0, 77].into(), front);
            c.expect("GET_CLIENT_ID");
            let id = c.register();
            c.send("DISCONNECT");
            c.expect("BYE: disconnected");
            id
        })
        .collect();
    // The nodes saw the client's address from the PROXY header, not HAProxy's own socket.
    assert!(
        nodes.iter().any(|n| n.log().contains("127.0.0.77:")),
        "no node saw the client's address"
    );

    let per_client = 20;
    let addrs = stream::nodes(vec![front]);
    let receivers: Vec<_> = ids
        .iter()
        .map(|id| {
            stream::receive(
                id.clone(),
                false,
                addrs.clone(),
                per_client,
                Duration::from_secs(120),
            )
        })
        .collect();
    wait_total(&ops, "chat_sessions_open", 6.0);

    // Half the messages while all nodes run.
    for n in 0..per_client / 2 {
        for id in &ids {
            env.enqueue(id, &n.to_string());
        }
    }
    wait_total(
        &ops,
        "chat_messages_delivered_total{mode=\"plain\"}",
        (ids.len() as u64 * per_client / 2) as f64,
    );

    // Stop the node with the most sessions (leastconn spread them), then enqueue the rest while
    // it is down.
    let victim = (0..3)
        .max_by_key(|i| scrape(ops[*i]).value("chat_sessions_open") as u64)
        .unwrap();
    let moved = scrape(ops[victim]).value("chat_sessions_open") as usize;
    assert!(moved > 0);
    let status = nodes[victim].terminate();
    assert_eq!(status.code(), Some(0));
    for n in per_client / 2..per_client {
        for id in &ids {
            env.enqueue(id, &n.to_string());
        }
    }

    let mut reconnected = 0;
    for r in receivers {
        let record = r.join().unwrap();
        stream::check(&record, per_client, &Copies::None);
        if record
            .ends
            .iter()
            .any(|e| e == "BYE: server shutting down, reconnect later")
        {
            reconnected += 1;
            assert!(record.sessions.len() >= 2, "{record:?}");
        }
    }
    assert_eq!(
        reconnected, moved,
        "every client of the stopped node came back"
    );
    let _ = nodes.remove(victim);
}
