//! The chat side of the benchmark: starts a node, drives clients over real sockets, enqueues through the library.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::Semaphore;

use chat::bus::Bus;
use chat::config::ServiceUrls;
use chat::enqueue::{Enqueuer, DEFAULT_MAX_BYTES};
use chat::store::Store;
use chat::ClientId;

use super::client::{register, Client};
use super::dbstats::{per_thousand, DbStats};
use super::node::{sibling, Node};
use super::params::{Params, Workload};
use super::procstat::{anon_kib, find_pid, rss_kib, CpuMeter};
use super::report::Row;

const SYSTEM: &str = "chat";
/// Bound on any one wait of the benchmark.
const WAIT: Duration = Duration::from_secs(120);

/// Runs workload `w` against a fresh node.
pub async fn run(w: Workload, params: &Params, urls: &ServiceUrls) -> Result<Vec<Row>> {
    // These start (and kill) nodes of their own.
    if w == Workload::Recovery {
        return super::recovery::run(params, urls).await;
    }
    if w == Workload::Rooms {
        return super::rooms::run(params, urls).await;
    }
    if w == Workload::Scale {
        return scale(params, urls).await;
    }
    let node = Node::start(urls).await?;
    let rows = match w {
        Workload::Throughput => {
            let mut rows = throughput(&node, params, urls, false).await?;
            rows.extend(throughput(&node, params, urls, true).await?);
            rows
        }
        Workload::Latency => latency(&node, params, urls).await?,
        Workload::Drain => drain(&node, params, urls).await?,
        Workload::Connections => connections(&node, params).await?,
        Workload::EnqueueCli => enqueue_cli(&node, params, urls).await?,
        Workload::EnqueueStdin => super::enqueue_stdin::run(node.addr, params, urls).await?,
        Workload::Recovery | Workload::Rooms | Workload::Scale => unreachable!("handled above"),
    };
    node.stop().await;
    Ok(rows)
}

pub async fn enqueuer(urls: &ServiceUrls, pool: usize) -> Result<Arc<Enqueuer>> {
    let store = Store::new(&urls.database_url, pool)?;
    let bus = Bus::connect(&urls.redis_url).await?;
    Ok(Arc::new(Enqueuer::new(store, Some(bus), DEFAULT_MAX_BYTES)))
}

/// Enqueues a batch; every item must be stored.
async fn enqueue_all(enq: &Enqueuer, items: &[(ClientId, &str)]) -> Result<()> {
    let (results, _) = enq.enqueue_batch(items).await?;
    match results.into_iter().find_map(|r| r.err()) {
        Some(e) => bail!("enqueue failed: {e}"),
        None => Ok(()),
    }
}

/// The processes whose CPU a workload reports: the node, this bench, MariaDB, Redis.
fn all_pids(node: &Node, urls: &ServiceUrls) -> Vec<(String, u32)> {
    let mut pids = vec![
        ("chat-server".to_string(), node.pid),
        ("bench".to_string(), std::process::id()),
    ];
    pids.extend(service_pids(urls));
    pids
}

/// Pid of the MariaDB and Redis behind the URLs, for CPU figures (best effort).
pub fn service_pids(urls: &ServiceUrls) -> Vec<(String, u32)> {
    let mut pids = Vec::new();
    // Matched by port, so that another MariaDB or Redis on the machine is never measured instead.
    if let Some(port) = url_port(&urls.database_url) {
        if let Some(pid) = find_pid(&["mariadbd", &format!("--port={port}")]) {
            pids.push(("mariadbd".to_string(), pid));
        }
    }
    if let Some(port) = url_port(&urls.redis_url) {
        if let Some(pid) = find_pid(&["redis-server", &format!(":{port}")]) {
            pids.push(("redis".to_string(), pid));
        }
    }
    pids
}

/// The port of `scheme://[user[:pass]@]host:port[/...]`.
fn url_port(url: &str) -> Option<u16> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    host_port.rsplit_once(':')?.1.parse().ok()
}

async fn throughput(
    node: &Node,
    params: &Params,
    urls: &ServiceUrls,
    ack: bool,
) -> Result<Vec<Row>> {
    let clients = params.clients.max(1);
    let per_client = (params.messages / clients).max(1);
    let total = per_client * clients;
    let ids = register(node.addr, clients).await?;
    let mut readers = Vec::with_capacity(clients);
    let delivered = Arc::new(AtomicU64::new(0));
    for id in &ids {
        let hello = if ack {
            format!("{id} ACK")
        } else {
            id.to_string()
        };
        let mut c = Client::connect(node.addr, &hello).await?;
        let delivered = delivered.clone();
        readers.push(tokio::spawn(async move {
            c.take(per_client, ack, |_| {
                delivered.fetch_add(1, Ordering::Relaxed);
            })
            .await?;
            Ok::<Instant, anyhow::Error>(Instant::now())
        }));
    }
    let enq = enqueuer(urls, 4).await?;
    let stats = DbStats::connect(urls)?;
    let before = stats.read().await?;
    let cpu = CpuMeter::start(&all_pids(node, urls));
    let start = Instant::now();
    // Batches round-robin over the clients, four in flight.
    let gate = Arc::new(Semaphore::new(4));
    let texts: Vec<String> = (0..per_client).map(|n| n.to_string()).collect();
    let texts = Arc::new(texts);
    let ids = Arc::new(ids);
    let mut producers = Vec::new();
    let mut next = 0usize;
    while next < total {
        let end = (next + params.batch).min(total);
        let permit = gate.clone().acquire_owned().await?;
        let (enq, texts, ids) = (enq.clone(), texts.clone(), ids.clone());
        producers.push(tokio::spawn(async move {
            let items: Vec<(ClientId, &str)> = (next..end)
                .map(|k| (ids[k % clients], texts[k / clients].as_str()))
                .collect();
            let stored = enqueue_all(&enq, &items).await;
            drop(permit);
            stored
        }));
        next = end;
    }
    for p in producers {
        p.await??;
    }
    let enqueued_in = start.elapsed();
    let mut last = start;
    for r in readers {
        let done = tokio::time::timeout(WAIT, r).await.map_err(|_| {
            anyhow!(
                "delivery timed out at {} of {total}",
                delivered.load(Ordering::Relaxed)
            )
        })???;
        last = last.max(done);
    }
    let secs = last.duration_since(start).as_secs_f64();
    let cpu_note = cpu.report();
    let node_cpu_ms = cpu.seconds(node.pid) * 1000.0;
    // The last cursor records land just after the last delivery.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = stats.read().await?;
    stats.close().await;
    let mode = if ack { "ack" } else { "plain" };
    let notes = format!(
        "{clients} clients, {total} msgs, batches of {}; enqueue alone {:.0} msg/s; {}; CPU {}",
        params.batch,
        total as f64 / enqueued_in.as_secs_f64(),
        per_thousand(&before, &after, total),
        cpu_note
    );
    Ok(vec![
        Row::new(
            SYSTEM,
            "throughput",
            if ack {
                "delivered_msgs_per_s_ack"
            } else {
                "delivered_msgs_per_s"
            },
            total as f64 / secs,
            "msg/s",
        )
        .note(format!("{mode}: {notes}")),
        Row::new(
            SYSTEM,
            "throughput",
            if ack {
                "node_cpu_ms_per_1000_ack"
            } else {
                "node_cpu_ms_per_1000"
            },
            node_cpu_ms * 1000.0 / total as f64,
            "ms",
        ),
    ])
}

async fn latency(node: &Node, params: &Params, urls: &ServiceUrls) -> Result<Vec<Row>> {
    let clients = params.latency_clients.max(1);
    let total = (params.rate * params.latency_secs) as usize;
    let ids = register(node.addr, clients).await?;
    let base = Instant::now();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let mut readers = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let mut c = Client::connect(node.addr, &id.to_string()).await?;
        let expect = total / clients + usize::from(i < total % clients);
        let hist = hist.clone();
        readers.push(tokio::spawn(async move {
            c.take(expect, false, |text| {
                if let Ok(sent) = text.parse::<u64>() {
                    let now = base.elapsed().as_micros() as u64;
                    let _ = hist.lock().unwrap().record(now.saturating_sub(sent));
                }
            })
            .await
        }));
    }
    let enq = enqueuer(urls, 16).await?;
    // How long the enqueue call itself takes (the durable commit, then the notification).
    let calls = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let gate = Arc::new(Semaphore::new(64));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / params.rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let stats = DbStats::connect(urls)?;
    let before = stats.read().await?;
    let cpu = CpuMeter::start(&all_pids(node, urls));
    let mut sends = Vec::with_capacity(total);
    for k in 0..total {
        tick.tick().await;
        let permit = gate.clone().acquire_owned().await?;
        let (enq, id, calls) = (enq.clone(), ids[k % clients], calls.clone());
        sends.push(tokio::spawn(async move {
            let sent = base.elapsed().as_micros() as u64;
            let r = enq.enqueue(id, &sent.to_string()).await;
            let took = (base.elapsed().as_micros() as u64).saturating_sub(sent);
            let _ = calls.lock().unwrap().record(took);
            drop(permit);
            r.map(drop).map_err(anyhow::Error::from)
        }));
    }
    for s in sends {
        s.await??;
    }
    for r in readers {
        tokio::time::timeout(WAIT, r)
            .await
            .map_err(|_| anyhow!("latency run timed out"))???;
    }
    let cpu_note = cpu.report();
    let after = stats.read().await?;
    stats.close().await;
    let h = hist.lock().unwrap();
    let c = calls.lock().unwrap();
    let ms = |v: u64| v as f64 / 1000.0;
    let notes = format!(
        "{} msg/s for {} s over {clients} clients, single-message enqueues; the enqueue call \
         alone: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; {}; CPU {cpu_note}",
        params.rate,
        params.latency_secs,
        ms(c.value_at_quantile(0.5)),
        ms(c.value_at_quantile(0.99)),
        ms(c.value_at_quantile(0.999)),
        per_thousand(&before, &after, total),
    );
    Ok(vec![
        Row::new(
            SYSTEM,
            "latency",
            "p50_ms",
            ms(h.value_at_quantile(0.5)),
            "ms",
        )
        .note(notes),
        Row::new(
            SYSTEM,
            "latency",
            "p99_ms",
            ms(h.value_at_quantile(0.99)),
            "ms",
        ),
        Row::new(
            SYSTEM,
            "latency",
            "p99.9_ms",
            ms(h.value_at_quantile(0.999)),
            "ms",
        ),
        Row::new(SYSTEM, "latency", "max_ms", ms(h.max()), "ms"),
    ])
}

async fn drain(node: &Node, params: &Params, urls: &ServiceUrls) -> Result<Vec<Row>> {
    let clients = params.drain_clients.max(1);
    let per = params.drain_per_client.max(1);
    let ids = register(node.addr, clients).await?;
    let enq = enqueuer(urls, 4).await?;
    let texts: Vec<String> = (0..per).map(|n| n.to_string()).collect();
    for chunk in (0..clients * per).collect::<Vec<_>>().chunks(1000) {
        let items: Vec<(ClientId, &str)> = chunk
            .iter()
            .map(|k| (ids[k % clients], texts[k / clients].as_str()))
            .collect();
        enqueue_all(&enq, &items).await?;
    }
    let cpu = CpuMeter::start(&all_pids(node, urls));
    let start = Instant::now();
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let (addr, id) = (node.addr, *id);
            tokio::spawn(async move {
                let mut c = Client::connect(addr, &id.to_string()).await?;
                c.take(per, false, |_| {}).await?;
                Ok::<(Instant, Client), anyhow::Error>((Instant::now(), c))
            })
        })
        .collect();
    let mut finished = Vec::with_capacity(clients);
    let mut held = Vec::with_capacity(clients);
    for t in tasks {
        let (done, c) = tokio::time::timeout(WAIT, t)
            .await
            .map_err(|_| anyhow!("drain timed out"))???;
        finished.push(done.duration_since(start).as_secs_f64());
        held.push(c);
    }
    finished.sort_by(f64::total_cmp);
    let at = |q: f64| finished[((finished.len() - 1) as f64 * q) as usize];
    let secs = at(1.0);
    let notes = format!(
        "{clients} clients x {per} pending, all connecting at once; a client had all its messages after \
         {:.2} s (half of them), {:.2} s (99%); CPU {}",
        at(0.5),
        at(0.99),
        cpu.report()
    );
    Ok(vec![
        Row::new(SYSTEM, "drain", "seconds", secs, "s").note(notes),
        Row::new(
            SYSTEM,
            "drain",
            "msgs_per_s",
            (clients * per) as f64 / secs,
            "msg/s",
        ),
    ])
}

async fn connections(node: &Node, params: &Params) -> Result<Vec<Row>> {
    let (before, anon_before) = memory_kib(node.pid);
    let procs = params.procs.max(1);
    let held = Held::open(node, params.idle, procs).await?;
    tokio::time::sleep(Duration::from_secs(params.settle_secs)).await;
    let (after, anon_after) = memory_kib(node.pid);
    held.release().await;
    let per = anon_after.saturating_sub(anon_before) as f64 * 1024.0 / params.idle.max(1) as f64;
    let rss_per = after.saturating_sub(before) as f64 * 1024.0 / params.idle.max(1) as f64;
    Ok(vec![
        Row::new(SYSTEM, "connections", "rss_per_session_bytes", per, "bytes").note(format!(
            "{} idle sessions (handshake done) from {procs} processes, {} handshakes at a time, \
             held {} s; anonymous RSS {anon_before} -> {anon_after} KiB; whole RSS {before} -> {after} KiB \
             ({rss_per:.0} B per session with the executable's pages the run touched)",
            params.idle,
            HOLD_WINDOW * procs,
            params.settle_secs
        )),
        Row::new(SYSTEM, "connections", "server_rss_kib", after as f64, "KiB"),
    ])
}

/// Handshakes each holder process has under way at once (the Mosquitto side connects 64 at a
/// time in all; two holders make the same).
const HOLD_WINDOW: usize = 32;

/// Idle sessions held open by child processes of this benchmark (`--hold`).
struct Held {
    children: Vec<tokio::process::Child>,
}

impl Held {
    /// `count` sessions to `node`, spread over `procs` processes (the open-files limit is per
    /// process); returns once every one has its client id.
    async fn open(node: &Node, count: usize, procs: usize) -> Result<Held> {
        let exe = std::env::current_exe()?;
        let mut children = Vec::new();
        let mut ready = Vec::new();
        for p in 0..procs {
            let share = count / procs + usize::from(p < count % procs);
            let mut child = Command::new(&exe)
                .arg("--hold")
                .arg(format!("{}/{share}", node.addr))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
            ready.push(tokio::spawn(async move { out.next_line().await }));
            children.push(child);
        }
        for r in ready {
            let line = tokio::time::timeout(WAIT, r)
                .await
                .map_err(|_| anyhow!("holders timed out"))???;
            if line.as_deref() != Some("ready") {
                bail!("a holder process failed: {line:?}");
            }
        }
        Ok(Held { children })
    }

    /// Closes every session (the holders exit when their stdin closes).
    async fn release(self) {
        for mut child in self.children {
            drop(child.stdin.take());
            let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        }
    }
}

/// The scale curve: for each number of clients, a fresh node; its memory and idle CPU with that
/// many sessions, then throughput and latency with that many clients.
pub async fn scale(params: &Params, urls: &ServiceUrls) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &n in &params.scale_clients {
        eprintln!("chat-bench: chat scale at {n} clients...");
        let node = Node::start(urls).await?;
        let (_, before) = memory_kib(node.pid);
        let held = Held::open(&node, n, params.procs.max(1)).await?;
        tokio::time::sleep(Duration::from_secs(params.settle_secs)).await;
        let (after_rss, after) = memory_kib(node.pid);
        let idle = Duration::from_secs(params.scale_idle_secs.max(1));
        let cpu = CpuMeter::start(&[("chat-server".to_string(), node.pid)]);
        tokio::time::sleep(idle).await;
        let idle_cpu = cpu.percent(node.pid);
        held.release().await;
        let per = after.saturating_sub(before) as f64 * 1024.0 / n.max(1) as f64;
        rows.push(Row::new(SYSTEM, "scale", "server_rss_kib", after_rss as f64, "KiB").at(n));
        rows.push(Row::new(SYSTEM, "scale", "rss_per_session_bytes", per, "bytes").at(n));
        rows.push(
            Row::new(SYSTEM, "scale", "idle_cpu_percent", idle_cpu, "%")
                .at(n)
                .note(format!(
                    "{n} idle sessions for {} s (lease renewals, sweeps)",
                    idle.as_secs()
                )),
        );
        let load = Params {
            clients: n,
            messages: params.scale_messages.max(n),
            latency_clients: n,
            latency_secs: params.scale_latency_secs,
            ..params.clone()
        };
        for row in throughput(&node, &load, urls, false).await? {
            rows.push(row.at(n));
        }
        for row in latency(&node, &load, urls).await? {
            rows.push(row.at(n));
        }
        node.stop().await;
    }
    Ok(rows)
}

/// Child process of the connections workload: opens `count` sessions to `addr`, prints `ready`,
/// holds them until stdin closes.
pub async fn hold(spec: &str) -> Result<()> {
    let window = HOLD_WINDOW;
    let (addr, count) = spec
        .rsplit_once('/')
        .ok_or_else(|| anyhow!("--hold ADDR/COUNT"))?;
    let addr: SocketAddr = addr.parse()?;
    let count: usize = count.parse()?;
    let gate = Arc::new(Semaphore::new(window));
    let tasks: Vec<_> = (0..count)
        .map(|_| {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _p = gate.acquire().await?;
                Client::connect(addr, "NONE").await
            })
        })
        .collect();
    let mut held = Vec::with_capacity(count);
    for t in tasks {
        held.push(t.await??);
    }
    println!("ready");
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 1];
    let _ = stdin.read(&mut buf).await;
    drop(held);
    Ok(())
}

async fn enqueue_cli(node: &Node, params: &Params, urls: &ServiceUrls) -> Result<Vec<Row>> {
    let id = register(node.addr, 1).await?[0];
    let exe = sibling("chat-enqueue")?;
    let mut times = Vec::with_capacity(params.cli_runs);
    for n in 0..params.cli_runs.max(1) {
        let start = Instant::now();
        let out = Command::new(&exe)
            .args([
                "--database-url",
                &urls.database_url,
                "--redis-url",
                &urls.redis_url,
            ])
            .arg(id.to_string())
            .arg(format!("cli run {n}"))
            .output()
            .await?;
        times.push(start.elapsed());
        if !out.status.success() {
            bail!(
                "chat-enqueue failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = ms(times[times.len() / 2]);
    let p90 = ms(times[times.len() * 9 / 10]);
    Ok(vec![
        Row::new(SYSTEM, "enqueue-cli", "median_ms", median, "ms").note(format!(
            "{} runs of chat-enqueue, process start to exit; client online",
            times.len()
        )),
        Row::new(SYSTEM, "enqueue-cli", "p90_ms", p90, "ms"),
    ])
}

/// Resident memory of `pid` in KiB: whole, and anonymous (what sessions hold: the executable's
/// pages are shared and counted once, however many sessions run).
fn memory_kib(pid: u32) -> (u64, u64) {
    (
        rss_kib(pid).unwrap_or_default(),
        anon_kib(pid).unwrap_or_default(),
    )
}
