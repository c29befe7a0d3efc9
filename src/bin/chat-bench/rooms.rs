//! The rooms workload, chat side: rooms of members spread over nodes, a steady rate of posts; delivered room messages per second, post-to-member latency, and what each post cost MySQL and Redis.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use chat::config::ServiceUrls;

use super::client::Client;
use super::dbstats::DbStats;
use super::node::Node;
use super::params::Params;
use super::procstat::CpuMeter;
use super::report::Row;

/// Bound on the setup of one member and on the final wait for deliveries.
const WAIT: Duration = Duration::from_secs(120);

/// What the member readers share.
struct Tally {
    delivered: AtomicU64,
    latencies: Mutex<Histogram<u64>>,
    error: OnceLock<String>,
}

/// Nanoseconds since a clock base shared by the posters and the readers (one process).
fn now_nanos() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// `rooms` rooms of `room_members` members each (one client per membership), spread round-robin
/// over `room_nodes` nodes; the first member of each room posts, `room_rate` posts a second in all,
/// for `room_secs`; every other member reads.
pub async fn run(params: &Params, urls: &ServiceUrls) -> Result<Vec<Row>> {
    let (rooms, members) = (params.rooms.max(1), params.room_members.max(2));
    let tag = std::process::id();
    let mut nodes = Vec::new();
    for n in 0..params.room_nodes.max(1) {
        // Posting in a benchmark is far above a person's rate.
        let extra = ["--send-rate", "100000", "--max-room-members", "100000"];
        nodes.push(Node::start_named(urls, &format!("bench-rooms-{tag}-{n}"), &extra).await?);
    }
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();

    // Members: connected, in their room; the first one of each room creates it.
    let setup = Instant::now();
    let gate = Arc::new(Semaphore::new(200));
    let mut joining = JoinSet::new();
    for k in 0..rooms {
        let mut creator = Client::connect(addrs[k % addrs.len()], "NONE").await?;
        command(
            &mut creator,
            &format!("CREATE #bench{k}-{tag}"),
            "OK: created",
        )
        .await?;
        joining.spawn(async move { Ok::<_, anyhow::Error>((k, 0, creator)) });
        for m in 1..members {
            let addr = addrs[(k * members + m) % addrs.len()];
            let gate = gate.clone();
            joining.spawn(async move {
                let _turn = gate.acquire_owned().await?;
                let mut c = Client::connect(addr, "NONE").await?;
                command(&mut c, &format!("JOIN #bench{k}-{tag}"), "OK: joined").await?;
                Ok((k, m, c))
            });
        }
    }
    let mut posters: Vec<Option<Client>> = (0..rooms).map(|_| None).collect();
    let tally = Arc::new(Tally {
        delivered: AtomicU64::new(0),
        latencies: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000_000, 3)?),
        error: OnceLock::new(),
    });
    let mut readers = JoinSet::new();
    while let Some(joined) = joining.join_next().await {
        let (k, m, client) = joined??;
        if m == 0 {
            posters[k] = Some(client);
        } else {
            readers.spawn(read(client, tally.clone()));
        }
    }
    let setup_secs = setup.elapsed().as_secs_f64();

    let stats = DbStats::connect(urls)?;
    let before = stats.read().await?;
    let mut pids: Vec<(String, u32)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("chat-server-{i}"), n.pid))
        .collect();
    pids.push(("bench".to_string(), std::process::id()));
    pids.extend(super::chat_side::service_pids(urls));
    let cpu = CpuMeter::start(&pids);

    // Posting, paced: room k % rooms next; each post's text is its send time.
    let total = (params.room_rate * params.room_secs).max(1) as usize;
    let mut writers = Vec::with_capacity(rooms);
    let mut acks = JoinSet::new();
    for poster in posters {
        let Client { reader, writer, .. } = poster.context("a room without its poster")?;
        writers.push(writer);
        acks.spawn(read_sent(reader, tally.clone()));
    }
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0usize;
    while sent < total {
        tick.tick().await;
        if let Some(e) = tally.error.get() {
            bail!("rooms: {e}");
        }
        let due =
            ((start.elapsed().as_secs_f64() * params.room_rate as f64) as usize + 1).min(total);
        while sent < due {
            let k = sent % rooms;
            let line = format!("SAY #bench{k}-{tag} {}\r\n", now_nanos());
            writers[k].write_all(line.as_bytes()).await?;
            sent += 1;
        }
    }
    let posting_secs = start.elapsed().as_secs_f64();
    let expected = (total * (members - 1)) as u64;
    let deadline = Instant::now() + WAIT;
    while tally.delivered.load(Ordering::Relaxed) < expected {
        if Instant::now() > deadline {
            bail!(
                "rooms: {} of {expected} deliveries after the wait",
                tally.delivered.load(Ordering::Relaxed)
            );
        }
        if let Some(e) = tally.error.get() {
            bail!("rooms: {e}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu_note = cpu.report();
    // The last cursor records (1 s after the last deliveries) belong to the run.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = stats.read().await?;
    let per_post = |i: usize| (after[i] - before[i]) as f64 / total as f64;
    readers.abort_all();
    acks.abort_all();
    drop(writers);
    for node in nodes {
        node.stop().await;
    }
    stats.close().await;

    let h = tally
        .latencies
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|e| e.into_inner().clone());
    let ms = |nanos: u64| nanos as f64 / 1e6;
    let notes = format!(
        "{rooms} rooms x {members} members ({} sessions) over {} nodes; {} posts/s for {:.1} s \
         ({total} posts, {expected} deliveries, each member reads the others' posts); setup {setup_secs:.1} s; \
         per post, everything the cluster did meanwhile (members' cursor records included): MySQL \
         {:.2} rows inserted, {:.2} rows updated, {:.2} statements, {:.3} fsyncs; Redis {:.2} \
         PUBLISH; CPU {cpu_note}",
        rooms * members,
        addrs.len(),
        params.room_rate,
        posting_secs,
        per_post(0),
        per_post(1),
        per_post(2),
        per_post(3),
        per_post(4),
    );
    Ok(vec![
        Row::new(
            "chat",
            "rooms",
            "delivered_msgs_per_s",
            expected as f64 / secs,
            "msg/s",
        )
        .note(notes),
        Row::new(
            "chat",
            "rooms",
            "p50_ms",
            ms(h.value_at_quantile(0.5)),
            "ms",
        ),
        Row::new(
            "chat",
            "rooms",
            "p99_ms",
            ms(h.value_at_quantile(0.99)),
            "ms",
        ),
        Row::new(
            "chat",
            "rooms",
            "p99.9_ms",
            ms(h.value_at_quantile(0.999)),
            "ms",
        ),
        Row::new(
            "chat",
            "rooms",
            "mysql_rows_written_per_post",
            per_post(0) + per_post(1),
            "rows",
        ),
        Row::new(
            "chat",
            "rooms",
            "mysql_fsyncs_per_post",
            per_post(3),
            "fsyncs",
        ),
        Row::new(
            "chat",
            "rooms",
            "redis_publish_per_post",
            per_post(4),
            "cmds",
        ),
    ])
}

/// A poster's replies: every one must be `SENT <id>` (a refusal fails the run).
async fn read_sent(
    mut reader: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    tally: Arc<Tally>,
) {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if line.starts_with("SENT ") => {}
            Ok(_) => {
                let _ = tally.error.set(format!("a post was refused: {line:?}"));
                return;
            }
        }
    }
}

/// Sends `line` and reads until a line starting with `expect` (anything else before it is a
/// failure, but pushed messages).
async fn command(c: &mut Client, line: &str, expect: &str) -> Result<()> {
    c.writer.write_all(format!("{line}\r\n").as_bytes()).await?;
    let mut reply = String::new();
    loop {
        reply.clear();
        if tokio::time::timeout(WAIT, c.reader.read_line(&mut reply)).await?? == 0 {
            bail!("{line}: connection closed");
        }
        if reply.starts_with(expect) {
            return Ok(());
        }
        if !reply.starts_with("MESSAGE") {
            bail!("{line}: {reply:?}");
        }
    }
}

/// A member: counts room messages and the latency from each one's send time in its text.
async fn read(mut c: Client, tally: Arc<Tally>) {
    let mut line = String::new();
    loop {
        line.clear();
        match c.reader.read_line(&mut line).await {
            Ok(0) | Err(_) => {
                let _ = tally.error.set("a member's connection closed".into());
                return;
            }
            Ok(_) => {}
        }
        let Some(sent) = line
            .trim_end()
            .rsplit(": ")
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|_| line.starts_with("MESSAGE: #bench"))
        else {
            let _ = tally.error.set(format!("unexpected line {line:?}"));
            return;
        };
        if let Ok(mut h) = tally.latencies.lock() {
            h.saturating_record(now_nanos().saturating_sub(sent));
        }
        tally.delivered.fetch_add(1, Ordering::Relaxed);
    }
}
