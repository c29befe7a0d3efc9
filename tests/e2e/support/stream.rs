//! Load for fault tests: producers that enqueue numbered messages through the library, receivers that
//! follow a client across reconnects, and the per-client checks (all delivered, in order, no extra copies).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chat::bus::Bus;
use chat::enqueue::{EnqueueError, Enqueuer, DEFAULT_MAX_BYTES};
use chat::store::Store;
use chat::ClientId;

use super::client::TestClient;

/// The addresses of the nodes a receiver may (re)connect to; tests update it on restarts.
pub type Nodes = Arc<Mutex<Vec<SocketAddr>>>;

pub fn nodes(addrs: Vec<SocketAddr>) -> Nodes {
    Arc::new(Mutex::new(addrs))
}

/// Enqueues `per_client` numbered messages ("0", "1", ...) for each client, interleaved across
/// clients, `pause` between rounds. A failed enqueue is retried until it is stored (MySQL down);
/// with `retry == false` a failure panics instead.
pub fn produce(
    db_url: &str,
    redis_url: &str,
    clients: Vec<String>,
    per_client: u64,
    pause: Duration,
    retry: bool,
) -> JoinHandle<()> {
    let (db_url, redis_url) = (db_url.to_string(), redis_url.to_string());
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let store = Store::new(&db_url, 2).unwrap();
            let bus = Bus::connect(&redis_url).await.ok();
            let enqueuer = Enqueuer::new(store, bus, DEFAULT_MAX_BYTES);
            let ids: Vec<ClientId> = clients.iter().map(|c| c.parse().unwrap()).collect();
            let deadline = Instant::now() + Duration::from_secs(120);
            for n in 0..per_client {
                for id in &ids {
                    loop {
                        match enqueuer.enqueue(*id, &n.to_string()).await {
                            Ok(_) => break,
                            Err(EnqueueError::Store(e)) if retry && Instant::now() < deadline => {
                                let _ = e;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Err(e) => panic!("enqueue {id} {n}: {e}"),
                        }
                    }
                }
                tokio::time::sleep(pause).await;
            }
            enqueuer.close().await;
        })
    })
}

/// What one receiver saw.
#[derive(Debug, Default)]
pub struct Record {
    pub client: String,
    /// Message numbers, one list per session, in arrival order.
    pub sessions: Vec<Vec<u64>>,
    /// When each number was first acknowledged (acknowledged mode).
    pub acked_at: HashMap<u64, Instant>,
    /// How each session ended.
    pub ends: Vec<String>,
    /// Whether the last expected message arrived before the deadline.
    pub complete: bool,
    /// With `linger`, the connection that was open at the deadline, left unread.
    pub open: Option<TestClient>,
}

impl Record {
    /// Reads what the lingering connection still gets, up to its `BYE:` or close; the numbers join
    /// the last session. Returns how the connection ended.
    pub fn drain(&mut self) -> String {
        let Some(mut client) = self.open.take() else {
            return "not open".into();
        };
        loop {
            match client.try_line(Duration::from_secs(10)) {
                Ok(Some(line)) => match line.split_once(": ") {
                    Some((head, n)) if head.starts_with("MESSAGE") => {
                        self.sessions.last_mut().unwrap().push(n.parse().unwrap());
                    }
                    _ => return line,
                },
                Ok(None) => return "silent".into(),
                Err(e) => return e,
            }
        }
    }

    /// Appends a later receiver's record of the same client.
    pub fn merge(&mut self, later: Record) {
        self.sessions.extend(later.sessions);
        self.ends.extend(later.ends);
        self.acked_at.extend(later.acked_at);
        self.complete = later.complete;
    }
}

/// Follows client `id` until message `expected - 1` (the last) arrived, or `limit` passed:
/// connects to the nodes in turn, resumes after every close or `BYE`, acknowledges every message
/// in ack mode. Whether all arrived, in order, is for `check` to say.
pub fn receive(
    id: String,
    ack: bool,
    nodes: Nodes,
    expected: u64,
    limit: Duration,
) -> JoinHandle<Record> {
    follow(id, ack, nodes, expected, limit, false, plain_number)
}

/// Like `receive`, with `number` reading a message's number from its text (a room post's text
/// carries its room and sender before the number).
pub fn receive_parsed(
    id: String,
    ack: bool,
    nodes: Nodes,
    expected: u64,
    limit: Duration,
    number: fn(&str) -> Option<u64>,
) -> JoinHandle<Record> {
    follow(id, ack, nodes, expected, limit, false, number)
}

/// The number a producer's message is.
fn plain_number(text: &str) -> Option<u64> {
    text.parse().ok()
}

/// Like `receive`, but at the deadline the connection stays open, unread (`Record::open`).
pub fn receive_lingering(
    id: String,
    ack: bool,
    nodes: Nodes,
    expected: u64,
    limit: Duration,
) -> JoinHandle<Record> {
    follow(id, ack, nodes, expected, limit, true, plain_number)
}

fn follow(
    id: String,
    ack: bool,
    nodes: Nodes,
    expected: u64,
    limit: Duration,
    linger: bool,
    number: fn(&str) -> Option<u64>,
) -> JoinHandle<Record> {
    thread::spawn(move || {
        let deadline = Instant::now() + limit;
        let mut record = Record {
            client: id.clone(),
            ..Record::default()
        };
        let mut last_seen = false;
        let mut turn = 0usize;
        while !last_seen && Instant::now() < deadline {
            let addrs = nodes.lock().unwrap().clone();
            let addr = addrs[turn % addrs.len()];
            turn += 1;
            let Some(mut client) = TestClient::try_connect(addr) else {
                thread::sleep(Duration::from_millis(100));
                continue;
            };
            let hello = if ack { format!("{id} ACK") } else { id.clone() };
            let greeted = matches!(client.try_line(Duration::from_secs(5)), Ok(Some(l)) if l == "GET_CLIENT_ID")
                && client.try_send(&hello)
                && matches!(client.try_line(Duration::from_secs(5)), Ok(Some(l)) if l.starts_with("SET_CLIENT_ID: "));
            if !greeted {
                thread::sleep(Duration::from_millis(100));
                continue;
            }
            let mut session = Vec::new();
            let end = loop {
                if last_seen {
                    client.try_send("DISCONNECT");
                    break "done".to_string();
                }
                if Instant::now() > deadline {
                    break "deadline".to_string();
                }
                let line = match client.try_line(Duration::from_millis(500)) {
                    Ok(Some(line)) => line,
                    Ok(None) => continue,
                    Err(e) => break e,
                };
                let Some(rest) = line.strip_prefix("MESSAGE") else {
                    break line;
                };
                let (msg_id, text) = rest.split_once(": ").expect("MESSAGE line");
                let n: u64 =
                    number(text).unwrap_or_else(|| panic!("not a numbered message: {line}"));
                session.push(n);
                last_seen |= n + 1 == expected;
                if ack {
                    let msg_id = msg_id.trim();
                    assert!(
                        !msg_id.is_empty(),
                        "acknowledged mode without an id: {line}"
                    );
                    client.try_send(&format!("ACK {msg_id}"));
                    record.acked_at.entry(n).or_insert_with(Instant::now);
                }
            };
            record.sessions.push(session);
            if linger && end == "deadline" {
                record.open = Some(client);
            }
            record.ends.push(end);
        }
        record.complete = last_seen;
        record
    })
}

/// What may be delivered more than once.
#[derive(Debug, Clone)]
pub enum Copies {
    /// Nothing: every message exactly once.
    None,
    /// After a reconnect, messages that were not acknowledged, or acknowledged within a second
    /// of one of these events (a crash, a restart, a takeover: the ACK may not have been read),
    /// may come again.
    Unacked(Vec<Instant>),
    /// After a reconnect, anything not recorded (plain mode after a crash).
    AfterReconnect,
}

/// Asserts that the client got 0..expected, each session in order without gaps, and copies only
/// as `copies` allows.
pub fn check(record: &Record, expected: u64, copies: &Copies) {
    let who = &record.client;
    assert!(record.complete, "{who}: incomplete: {record:?}");
    let mut max_before: Option<u64> = None;
    for (i, session) in record.sessions.iter().enumerate() {
        for pair in session.windows(2) {
            assert_eq!(
                pair[1],
                pair[0] + 1,
                "{who}: session {i} out of order: {session:?}"
            );
        }
        let Some(&first) = session.first() else {
            continue;
        };
        let next = max_before.map_or(0, |m| m + 1);
        assert!(
            first <= next,
            "{who}: session {i} skipped from {next} to {first}"
        );
        if first < next {
            match copies {
                Copies::None => panic!(
                    "{who}: session {i} repeated {first}..{next} (ends: {:?})",
                    record.ends
                ),
                Copies::Unacked(ref events) => {
                    for n in first..next {
                        if let Some(at) = record.acked_at.get(&n) {
                            let near = |e: &Instant| {
                                *at + Duration::from_secs(1) > *e
                                    && *at < *e + Duration::from_secs(1)
                            };
                            assert!(
                                events.iter().any(near),
                                "{who}: {n} came again though acknowledged far from any fault"
                            );
                        }
                    }
                }
                Copies::AfterReconnect => {}
            }
        }
        let last = *session.last().unwrap();
        max_before = Some(max_before.map_or(last, |m| m.max(last)));
    }
    assert_eq!(max_before, Some(expected - 1), "{who}: {record:?}");
}
