//! The Mosquitto side of the benchmark: the chat workloads' shapes over MQTT (QoS 1, persistent
//! sessions) against a private broker.
//!
//! Every workload starts its own `mosquitto` on a free loopback port with a config in a fresh
//! temporary directory, and kills it at the end. One MQTT client stands for one chat client: client
//! id `c<i>`, subscribed to topic `c/<i>` at QoS 1 with `clean_session=false`, so the broker keeps
//! its session (subscription and queued messages) while it is offline, like a durable queue. Every
//! wait has a deadline.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use hdrhistogram::Histogram;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet, QoS,
    SubscribeReasonCode,
};
use tokio::task::JoinSet;

use super::params::{Params, Workload};
use super::procstat::{anon_kib, rss_kib, CpuMeter};
use super::report::Row;

const SYSTEM: &str = "mosquitto";
/// The broker binary (a system one may be running on 1883: never used).
const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// Publisher connections for the throughput and drain workloads.
const PUBLISHERS: usize = 4;
/// Clients connecting at once while a fleet is set up (below Mosquitto's listen backlog of 100).
pub(super) const SETUP_WINDOW: usize = 64;
/// Most idle sessions this process holds (its open-files limit is 20,000).
const IDLE_CAP: usize = 18_000;
/// TCP connect plus CONNACK of one client, seconds (the drain's reconnection storm queues on the
/// listen backlog).
const CONNECT_TIMEOUT_S: u64 = 30;
/// Connection failures one client may have before the workload fails.
const MAX_FAILURES: usize = 5;
/// How often the waits look at the counters.
const WAIT_STEP: Duration = Duration::from_millis(2);
/// How long the broker may take to accept connections after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs workload `w` against a private Mosquitto.
pub async fn run(w: Workload, params: &Params) -> Result<Vec<Row>> {
    match w {
        Workload::Throughput => throughput(params).await,
        Workload::Latency => latency(params).await,
        Workload::Drain => drain(params).await,
        Workload::Connections => connections(params).await,
        Workload::Rooms => super::mosquitto_rooms::run(params).await,
        Workload::Scale => scale(params).await,
        Workload::EnqueueCli | Workload::EnqueueStdin | Workload::Recovery => Ok(Vec::new()),
    }
}

// -------------------------------------------------------------------------------------------------
// Workloads

/// The scale curve: for each number of clients, memory with that many idle sessions, then
/// throughput and latency with that many subscribers.
async fn scale(params: &Params) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &n in &params.scale_clients {
        eprintln!("chat-bench: mosquitto scale at {n} clients...");
        let load = Params {
            idle: n,
            clients: n,
            messages: params.scale_messages.max(n),
            latency_clients: n,
            latency_secs: params.scale_latency_secs,
            ..params.clone()
        };
        for row in connections(&load).await? {
            rows.push(row.at(n));
        }
        for row in throughput(&load).await? {
            rows.push(row.at(n));
        }
        for row in latency(&load).await? {
            rows.push(row.at(n));
        }
    }
    Ok(rows)
}

/// `clients` subscribers; `messages` QoS 1 publishes round-robin over their topics; delivered
/// messages per second.
async fn throughput(params: &Params) -> Result<Vec<Row>> {
    let (clients, total) = (params.clients, params.messages);
    ensure!(
        clients > 0 && total > 0,
        "throughput needs --clients and --messages above 0"
    );
    let broker = Broker::start().await?;
    let sink = Arc::new(Sink::new(total, None));
    let _subscribers = Fleet::subscribe(clients, broker.port, Role::Listen, &sink).await?;
    let inflight = publisher_inflight(params.batch);
    let mut publishers = Publishers::connect(PUBLISHERS, broker.port, inflight).await?;

    let cpu = CpuMeter::start(&broker.and_bench());
    let start = Instant::now();
    publishers.publish_round_robin(total, clients);
    wait_for(delivery_deadline(start, total), || {
        publishers.check()?;
        sink.check()?;
        Ok(sink.finished().is_some())
    })
    .await
    .with_context(|| {
        format!(
            "throughput: {} of {total} messages delivered",
            sink.delivered()
        )
    })?;
    let secs = seconds_since(start, sink.finished());

    let notes = format!(
        "clients {clients}, messages {total}, {PUBLISHERS} publishers with {inflight} in flight \
         each, {secs:.2} s; CPU {}{}",
        cpu.report(),
        sink.reconnect_note()
    );
    Ok(vec![Row::new(
        SYSTEM,
        "throughput",
        "delivered_msgs_per_s",
        total as f64 / secs,
        "msg/s",
    )
    .note(notes)])
}

/// `latency_clients` subscribers; `rate` msg/s for `latency_secs` s; publish-call-to-arrival
/// percentiles.
async fn latency(params: &Params) -> Result<Vec<Row>> {
    let clients = params.latency_clients;
    let total = usize::try_from(params.rate.saturating_mul(params.latency_secs))
        .context("latency: too many messages")?;
    ensure!(
        clients > 0 && total > 0,
        "latency needs --latency-clients, --rate and --latency-secs above 0"
    );
    let broker = Broker::start().await?;
    let histogram =
        Histogram::new_with_bounds(1, 3_600_000_000_000, 3).context("latency histogram")?;
    let sink = Arc::new(Sink::new(total, Some(histogram)));
    let _subscribers = Fleet::subscribe(clients, broker.port, Role::Listen, &sink).await?;
    let publishers = Publishers::connect(1, broker.port, publisher_inflight(params.batch)).await?;

    let cpu = CpuMeter::start(&broker.and_bench());
    let pacing = Duration::from_secs(params.latency_secs.saturating_mul(2).saturating_add(30));
    tokio::time::timeout(
        pacing,
        publish_paced(&publishers, &sink, params.rate, total, clients),
    )
    .await
    .map_err(|_| {
        anyhow!(
            "latency: publishing at {}/s took over {pacing:?}",
            params.rate
        )
    })??;
    wait_for(Instant::now() + Duration::from_secs(30), || {
        sink.check()?;
        Ok(sink.finished().is_some())
    })
    .await
    .with_context(|| {
        format!(
            "latency: {} of {total} messages delivered",
            sink.delivered()
        )
    })?;

    let notes = format!(
        "{} msg/s for {} s over {clients} clients ({total} messages); CPU {}{}",
        params.rate,
        params.latency_secs,
        cpu.report(),
        sink.reconnect_note()
    );
    let h = sink.latencies().context("latency: no histogram")?;
    let ms = |nanos: u64| nanos as f64 / 1e6;
    Ok([
        ("p50_ms", ms(h.value_at_quantile(0.50))),
        ("p90_ms", ms(h.value_at_quantile(0.90))),
        ("p99_ms", ms(h.value_at_quantile(0.99))),
        ("p99.9_ms", ms(h.value_at_quantile(0.999))),
        ("max_ms", ms(h.max())),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (metric, value))| {
        // Notes on the first row only, as the chat side does.
        let row = Row::new(SYSTEM, "latency", metric, value, "ms");
        if i == 0 {
            row.note(notes.clone())
        } else {
            row
        }
    })
    .collect())
}

/// `drain_clients` offline persistent sessions with `drain_per_client` queued messages each
/// reconnect at once; time until every message has arrived. Run a second time with the clients
/// reconnecting [`SETUP_WINDOW`] at a time, which keeps Mosquitto's listen backlog (100) from
/// overflowing: the first figure is mostly the kernel's SYN retransmission backoff.
async fn drain(params: &Params) -> Result<Vec<Row>> {
    let (clients, per) = (params.drain_clients, params.drain_per_client);
    ensure!(
        clients > 0 && per > 0,
        "drain needs --drain-clients and --drain-per-client above 0"
    );
    let burst = drain_once(params, None).await?;
    let paced = drain_once(params, Some(SETUP_WINDOW)).await?;
    let total = clients.saturating_mul(per) as f64;
    let notes = format!(
        "{clients} offline sessions x {per} queued messages, all reconnect at once; 99% delivered \
         after {:.2} s, last CONNACK after {} s; broker rss with them queued {} KiB; CPU {}{}",
        burst.mostly_secs, burst.reconnected, burst.queued_rss, burst.cpu, burst.failures
    );
    let paced_notes = format!(
        "same, reconnecting {SETUP_WINDOW} at a time (Mosquitto listens with backlog 100: at \
         once, the kernel drops SYNs and clients retry after 1, 3, 7.. s); last CONNACK after {} \
         s; CPU {}{}",
        paced.reconnected, paced.cpu, paced.failures
    );
    Ok(vec![
        Row::new(SYSTEM, "drain", "seconds", burst.secs, "s").note(notes),
        Row::new(SYSTEM, "drain", "msgs_per_s", total / burst.secs, "msg/s"),
        Row::new(SYSTEM, "drain", "seconds_paced", paced.secs, "s").note(paced_notes),
    ])
}

/// What one drain run saw.
struct Drained {
    /// From the first reconnection to the last message.
    secs: f64,
    /// From the first reconnection to 99% of the messages.
    mostly_secs: f64,
    /// When the last client had its CONNACK, in seconds ("-" if not seen).
    reconnected: String,
    /// Broker RSS with all messages queued.
    queued_rss: u64,
    cpu: String,
    failures: String,
}

/// One drain on a fresh broker: sessions go offline, messages are queued for them, and they come
/// back, all at once or at most `window` connecting at a time.
async fn drain_once(params: &Params, window: Option<usize>) -> Result<Drained> {
    let (clients, per) = (params.drain_clients, params.drain_per_client);
    let total = clients.saturating_mul(per);
    let broker = Broker::start().await?;

    // Sessions that subscribe, then go offline.
    let setup = Arc::new(Sink::new(0, None));
    Fleet::subscribe(clients, broker.port, Role::Leave, &setup)
        .await?
        .finish()
        .await?;
    queue_for_offline(broker.port, total, clients, params.batch).await?;
    let queued_rss = broker.rss_kib().unwrap_or_default();

    let sink = Arc::new(Sink::new(total, None));
    let cpu = CpuMeter::start(&broker.and_bench());
    let start = Instant::now();
    let deadline = delivery_deadline(start, total) + Duration::from_secs(60);
    let _resumed =
        Fleet::start(clients, broker.port, Role::Resume, window, &sink, deadline).await?;
    let mut reconnected = None;
    wait_for(deadline, || {
        sink.check()?;
        if reconnected.is_none() && sink.connected() >= clients {
            reconnected = Some(start.elapsed().as_secs_f64());
        }
        Ok(sink.finished().is_some())
    })
    .await
    .with_context(|| {
        format!(
            "drain: {} of {total} queued messages delivered, {} of {clients} reconnected",
            sink.delivered(),
            sink.connected()
        )
    })?;
    Ok(Drained {
        secs: seconds_since(start, sink.finished()),
        mostly_secs: seconds_since(start, sink.mostly.get().copied()),
        reconnected: reconnected.map_or("-".to_string(), |s| format!("{s:.2}")),
        queued_rss,
        cpu: cpu.report(),
        failures: sink.reconnect_note(),
    })
}

/// Publishes messages `0..total` round-robin to topics `c/0..c/<clients>` and waits until the
/// broker has acknowledged them all (so they are queued for the offline sessions).
async fn queue_for_offline(port: u16, total: usize, clients: usize, batch: usize) -> Result<()> {
    let mut publishers = Publishers::connect(PUBLISHERS, port, publisher_inflight(batch)).await?;
    let start = Instant::now();
    publishers.publish_round_robin(total, clients);
    wait_for(delivery_deadline(start, total), || {
        publishers.check()?;
        Ok(publishers.acked() >= total)
    })
    .await
    .with_context(|| {
        format!(
            "drain: {} of {total} publishes acknowledged",
            publishers.acked()
        )
    })
}

/// `idle` connected persistent sessions with one subscription each; broker RSS per session.
async fn connections(params: &Params) -> Result<Vec<Row>> {
    let sessions = params.idle.min(IDLE_CAP);
    ensure!(sessions > 0, "connections needs --idle above 0");
    let broker = Broker::start().await?;
    let before = broker.rss_kib()?;
    let anon_before = broker.anon_kib()?;

    let sink = Arc::new(Sink::new(0, None));
    let cpu = CpuMeter::start(&broker.and_bench());
    let connecting = Instant::now();
    let _idle = Fleet::subscribe(sessions, broker.port, Role::Listen, &sink).await?;
    let connect_secs = connecting.elapsed().as_secs_f64();
    let cpu_note = cpu.report();
    // Held idle as long as the chat side's sessions (past whatever the broker does after the last
    // SUBACK) before reading its memory.
    tokio::time::sleep(Duration::from_secs(params.settle_secs)).await;
    let after = broker.rss_kib()?;
    let anon_after = broker.anon_kib()?;
    // Anonymous memory, as on the chat side (the executable's pages are not per session).
    let per_session = anon_after.saturating_sub(anon_before) as f64 * 1024.0 / sessions as f64;

    let capped = if sessions < params.idle {
        format!(
            " (capped from {}: one process holds at most {IDLE_CAP} sockets)",
            params.idle
        )
    } else {
        String::new()
    };
    let notes = format!(
        "{sessions} idle sessions{capped}, one subscription each, held {} s; broker anonymous RSS \
         {anon_before} -> {anon_after} KiB, whole RSS {before} -> {after} KiB; connected in {connect_secs:.1} s, {SETUP_WINDOW} at a time, CPU meanwhile \
         {cpu_note}{}",
        params.settle_secs,
        sink.reconnect_note()
    );
    Ok(vec![
        Row::new(
            SYSTEM,
            "connections",
            "rss_per_session_bytes",
            per_session,
            "bytes",
        )
        .note(notes),
        Row::new(SYSTEM, "connections", "broker_rss_kib", after as f64, "KiB"),
    ])
}

// -------------------------------------------------------------------------------------------------
// The broker

/// A private Mosquitto: its process, its directory (config, persistence, log) and its port. Killed
/// when dropped.
pub(super) struct Broker {
    child: Child,
    dir: PathBuf,
    pub(super) port: u16,
}

impl Broker {
    /// Starts a fresh broker and waits until it accepts connections (a few tries: the free port may
    /// be taken).
    pub(super) async fn start() -> Result<Broker> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Broker::try_start().await {
                Ok(broker) => return Ok(broker),
                Err(e) if attempt < 3 => {
                    eprintln!("chat-bench: mosquitto did not start ({e:#}); retrying")
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_start() -> Result<Broker> {
        let port = free_port()?;
        let dir = private_dir()?;
        let child = match spawn_mosquitto(&dir, port) {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut broker = Broker { child, dir, port };
        broker.wait_ready().await?;
        Ok(broker)
    }

    /// Waits until the port accepts, failing early if the broker exits.
    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_alive()?;
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                // Something else may hold the port if the broker failed to bind it: look again.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return self.check_alive();
            }
            if Instant::now() >= deadline {
                bail!(
                    "mosquitto did not accept on port {} within {START_TIMEOUT:?}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait().context("waiting on mosquitto")? {
            Some(status) => bail!("mosquitto exited ({status}): {}", self.log()),
            None => Ok(()),
        }
    }

    /// The broker's own log and stderr, for error messages.
    fn log(&self) -> String {
        ["mosquitto.log", "stderr.log"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(self.dir.join(f)).ok())
            .collect::<Vec<_>>()
            .join("")
            .trim()
            .to_string()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid()).context("reading mosquitto's RSS")
    }

    fn anon_kib(&self) -> Result<u64> {
        anon_kib(self.pid()).context("reading mosquitto's RSS")
    }

    /// The broker and this process, for a [`CpuMeter`].
    pub(super) fn and_bench(&self) -> [(String, u32); 2] {
        [
            ("mosquitto".to_string(), self.pid()),
            ("bench".to_string(), std::process::id()),
        ]
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The broker's configuration: durable sessions, unlimited queues, loopback only, `TCP_NODELAY` (as
/// the chat server sets), quiet log. `user root` only means "do not switch users" (so it can write
/// to our directory).
fn config(dir: &Path, port: u16) -> String {
    let dir = dir.display();
    format!(
        "listener {port} 127.0.0.1\n\
         max_connections -1\n\
         allow_anonymous true\n\
         persistence true\n\
         persistence_location {dir}/\n\
         max_queued_messages 0\n\
         max_inflight_messages 20\n\
         log_dest file {dir}/mosquitto.log\n\
         log_type error\n\
         log_type warning\n\
         connection_messages false\n\
         set_tcp_nodelay true\n\
         user root\n"
    )
}

fn spawn_mosquitto(dir: &Path, port: u16) -> Result<Child> {
    let conf = dir.join("mosquitto.conf");
    std::fs::write(&conf, config(dir, port))
        .with_context(|| format!("writing {}", conf.display()))?;
    let stderr = File::create(dir.join("stderr.log")).context("creating mosquitto's stderr log")?;
    let stdout = stderr
        .try_clone()
        .context("creating mosquitto's stdout log")?;
    Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {MOSQUITTO}"))
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr().context("finding a free port")?.port())
}

/// A new empty directory of this process under the temporary directory.
fn private_dir() -> Result<PathBuf> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("chat-bench-mosquitto-{}-{n}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing stale {}", dir.display()))?;
    }
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

// -------------------------------------------------------------------------------------------------
// Subscribers

/// What a subscriber does with its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Connects, subscribes, and receives until stopped.
    Listen,
    /// Connects, subscribes, and disconnects cleanly (the session and subscription stay on the
    /// broker).
    Leave,
    /// Connects again to its stored session (which must be there) and receives until stopped.
    Resume,
}

/// What the subscribers of one phase share: progress, the first error, and latencies if measured.
struct Sink {
    /// Messages after which the phase is complete (0: never).
    target: usize,
    /// CONNACKs received (reconnections count again).
    connected: AtomicUsize,
    subscribed: AtomicUsize,
    delivered: AtomicUsize,
    failures: AtomicUsize,
    /// When the `target`-th message arrived.
    finished: OnceLock<Instant>,
    /// When 99% of `target` had arrived.
    mostly: OnceLock<Instant>,
    /// Publish-call-to-arrival nanoseconds, if payloads carry the send time.
    latencies: Option<Mutex<Histogram<u64>>>,
    error: OnceLock<String>,
}

impl Sink {
    fn new(target: usize, latencies: Option<Histogram<u64>>) -> Sink {
        Sink {
            target,
            connected: AtomicUsize::new(0),
            subscribed: AtomicUsize::new(0),
            delivered: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
            finished: OnceLock::new(),
            mostly: OnceLock::new(),
            latencies: latencies.map(Mutex::new),
            error: OnceLock::new(),
        }
    }

    fn deliver(&self, payload: &[u8]) {
        if let Some(latencies) = &self.latencies {
            let sent = std::str::from_utf8(payload)
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            if let (Some(sent), Ok(mut h)) = (sent, latencies.lock()) {
                h.saturating_record(now_nanos().saturating_sub(sent));
            }
        }
        let delivered = self.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        if delivered == self.target.saturating_mul(99).div_ceil(100) {
            let _ = self.mostly.set(Instant::now());
        }
        if delivered == self.target {
            let _ = self.finished.set(Instant::now());
        }
    }

    fn fail(&self, error: String) {
        let _ = self.error.set(error);
    }

    /// The first error of any subscriber.
    fn check(&self) -> Result<()> {
        match self.error.get() {
            Some(e) => bail!("{e}"),
            None => Ok(()),
        }
    }

    fn subscribed(&self) -> usize {
        self.subscribed.load(Ordering::Relaxed)
    }

    fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    fn delivered(&self) -> usize {
        self.delivered.load(Ordering::Relaxed)
    }

    fn finished(&self) -> Option<Instant> {
        self.finished.get().copied()
    }

    fn latencies(&self) -> Option<Histogram<u64>> {
        self.latencies.as_ref()?.lock().ok().map(|h| h.clone())
    }

    /// "; N connection failures (retried)" if there were any (QoS 1 may then deliver duplicates).
    fn reconnect_note(&self) -> String {
        match self.failures.load(Ordering::Relaxed) {
            0 => String::new(),
            n => format!(
                "; {n} subscriber connection failures, retried (QoS 1 may have redelivered)"
            ),
        }
    }
}

/// The subscriber clients of one phase; their tasks are aborted (sockets closed) when dropped.
struct Fleet {
    tasks: JoinSet<()>,
    sink: Arc<Sink>,
}

impl Fleet {
    /// Starts `n` subscribers in `role` (not `Resume`), at most [`SETUP_WINDOW`] connecting at a
    /// time, and waits until all have their subscription acknowledged.
    async fn subscribe(n: usize, port: u16, role: Role, sink: &Arc<Sink>) -> Result<Fleet> {
        let deadline =
            Instant::now() + Duration::from_secs(30) + Duration::from_millis(10) * n as u32;
        let fleet = Fleet::start(n, port, role, Some(SETUP_WINDOW), sink, deadline).await?;
        wait_for(deadline, || {
            sink.check()?;
            Ok(sink.subscribed() >= n)
        })
        .await
        .with_context(|| {
            format!(
                "connecting subscribers: {} of {n} subscribed",
                sink.subscribed()
            )
        })?;
        Ok(fleet)
    }

    /// Starts subscribers `0..n` in `role`: all at once, or with at most `window` of them not yet
    /// past their first step (SUBACK; CONNACK for `Resume`). Returns once all are started.
    async fn start(
        n: usize,
        port: u16,
        role: Role,
        window: Option<usize>,
        sink: &Arc<Sink>,
        deadline: Instant,
    ) -> Result<Fleet> {
        let mut tasks = JoinSet::new();
        let progress = || match role {
            Role::Resume => sink.connected(),
            Role::Listen | Role::Leave => sink.subscribed(),
        };
        for i in 0..n {
            if let Some(window) = window {
                wait_for(deadline, || {
                    sink.check()?;
                    Ok(i < progress() + window)
                })
                .await
                .with_context(|| {
                    format!("starting subscribers: {} of {n} under way", progress())
                })?;
            }
            tasks.spawn(subscriber(i, port, role, Arc::clone(sink)));
        }
        Ok(Fleet {
            tasks,
            sink: Arc::clone(sink),
        })
    }

    /// Waits until every subscriber task has returned (`Leave`: all disconnected).
    async fn finish(mut self) -> Result<()> {
        let deadline = Duration::from_secs(30) + Duration::from_millis(5) * self.tasks.len() as u32;
        tokio::time::timeout(deadline, async {
            while let Some(done) = self.tasks.join_next().await {
                done.context("subscriber task")?;
            }
            Ok::<_, anyhow::Error>(())
        })
        .await
        .map_err(|_| anyhow!("subscribers still connected after {deadline:?}"))??;
        self.sink.check()
    }
}

/// One subscriber; its first error goes to the sink.
async fn subscriber(i: usize, port: u16, role: Role, sink: Arc<Sink>) {
    if let Err(e) = drive_subscriber(i, port, role, &sink).await {
        sink.fail(format!("subscriber c{i}: {e:#}"));
    }
}

async fn drive_subscriber(i: usize, port: u16, role: Role, sink: &Sink) -> Result<()> {
    let (client, mut events) = new_client(format!("c{i}"), port, 1, 10);
    if role != Role::Resume {
        // Queued until the connection is up.
        client
            .subscribe(format!("c/{i}"), QoS::AtLeastOnce)
            .await
            .context("subscribe")?;
    }
    let mut failures = 0;
    loop {
        let event = match events.poll().await {
            Ok(event) => event,
            Err(e) => {
                failures += 1;
                sink.failures.fetch_add(1, Ordering::Relaxed);
                if failures > MAX_FAILURES {
                    return Err(e).context(format!("connection failed {failures} times"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                if role == Role::Resume && !ack.session_present {
                    bail!("the broker lost the persistent session");
                }
                sink.connected.fetch_add(1, Ordering::Relaxed);
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);
                if ack.return_codes.iter().any(|code| *code != granted) {
                    bail!("subscription not granted at QoS 1: {:?}", ack.return_codes);
                }
                sink.subscribed.fetch_add(1, Ordering::Relaxed);
                if role == Role::Leave {
                    client.disconnect().await.context("disconnect")?;
                }
            }
            Event::Incoming(Packet::Publish(p)) => sink.deliver(&p.payload),
            Event::Outgoing(Outgoing::Disconnect) => return Ok(()),
            _ => {}
        }
    }
}

/// An MQTT client with a persistent session (`clean_session=false`), keep-alive 60 s, `TCP_NODELAY`
/// (as the chat side's clients).
pub(super) fn new_client(
    id: String,
    port: u16,
    inflight: u16,
    requests: usize,
) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options
        .set_clean_session(false)
        .set_keep_alive(Duration::from_secs(60))
        .set_inflight(inflight.max(1));
    let (client, mut events) = AsyncClient::new(options, requests);
    let mut network = NetworkOptions::new();
    network.set_connection_timeout(CONNECT_TIMEOUT_S);
    network.set_tcp_nodelay(true);
    events.set_network_options(network);
    (client, events)
}

// -------------------------------------------------------------------------------------------------
// Publishers

/// Publisher connections and their event loops (aborted when dropped).
struct Publishers {
    // Declared first so the event loops stop before their clients go away.
    tasks: JoinSet<()>,
    clients: Vec<AsyncClient>,
    state: Arc<PubState>,
}

#[derive(Default)]
struct PubState {
    connected: AtomicUsize,
    acked: AtomicUsize,
    error: OnceLock<String>,
}

impl Publishers {
    /// Connects `n` publishers (`p<j>`) with `inflight` unacknowledged publishes each and waits for
    /// their CONNACKs.
    async fn connect(n: usize, port: u16, inflight: u16) -> Result<Publishers> {
        let state = Arc::new(PubState::default());
        let mut tasks = JoinSet::new();
        let mut clients = Vec::with_capacity(n);
        for j in 0..n {
            let (client, events) =
                new_client(format!("p{j}"), port, inflight, usize::from(inflight));
            tasks.spawn(drive_publisher(j, events, Arc::clone(&state)));
            clients.push(client);
        }
        let publishers = Publishers {
            tasks,
            clients,
            state,
        };
        wait_for(
            Instant::now() + Duration::from_secs(CONNECT_TIMEOUT_S + 5),
            || {
                publishers.check()?;
                Ok(publishers.state.connected.load(Ordering::Relaxed) >= n)
            },
        )
        .await
        .context("connecting publishers")?;
        Ok(publishers)
    }

    /// Publishes messages `0..total` (payload: the message number) to topic `c/<k % clients>`,
    /// message `k` through publisher `k % n`, in the background.
    fn publish_round_robin(&mut self, total: usize, clients: usize) {
        let n = self.clients.len();
        for (j, client) in self.clients.iter().enumerate() {
            let (client, state) = (client.clone(), Arc::clone(&self.state));
            self.tasks.spawn(async move {
                for k in (j..total).step_by(n) {
                    let published = client.publish(
                        format!("c/{}", k % clients),
                        QoS::AtLeastOnce,
                        false,
                        k.to_string(),
                    );
                    if let Err(e) = published.await {
                        let _ = state.error.set(format!("publisher p{j}: publish: {e}"));
                        return;
                    }
                }
            });
        }
    }

    fn acked(&self) -> usize {
        self.state.acked.load(Ordering::Relaxed)
    }

    /// The first error of any publisher.
    fn check(&self) -> Result<()> {
        match self.state.error.get() {
            Some(e) => bail!("{e}"),
            None => Ok(()),
        }
    }
}

/// Polls one publisher's event loop: counts CONNACKs and PUBACKs; reconnects a few times on errors.
async fn drive_publisher(j: usize, mut events: EventLoop, state: Arc<PubState>) {
    let (mut failures, mut connected) = (0, false);
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) if !connected => {
                connected = true;
                state.connected.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                state.acked.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => {
                failures += 1;
                if failures > MAX_FAILURES {
                    let _ = state.error.set(format!(
                        "publisher p{j}: connection failed {failures} times: {e}"
                    ));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Publishes `total` messages at `rate` per second through the first publisher, round-robin over
/// `clients` topics; each payload is the time of the publish call, in nanoseconds since the
/// process's clock base.
async fn publish_paced(
    publishers: &Publishers,
    sink: &Sink,
    rate: u64,
    total: usize,
    clients: usize,
) -> Result<()> {
    let client = publishers.clients.first().context("no publisher")?;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        tick.tick().await;
        publishers.check()?;
        sink.check()?;
        let due = (start.elapsed().as_secs_f64() * rate as f64) as usize + 1;
        while sent < due.min(total) {
            let payload = now_nanos().to_string();
            client
                .publish(
                    format!("c/{}", sent % clients),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await
                .context("publish")?;
            sent += 1;
        }
    }
    Ok(())
}

// -------------------------------------------------------------------------------------------------
// Helpers

/// Nanoseconds since a clock base shared by the publisher and the subscribers (both in this
/// process).
pub(super) fn now_nanos() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Unacknowledged publishes per publisher: one enqueue batch's worth (MQTT packet ids are 16-bit).
fn publisher_inflight(batch: usize) -> u16 {
    u16::try_from(batch.clamp(1, 10_000)).unwrap_or(10_000)
}

/// Seconds from `start` to `end` (or now).
fn seconds_since(start: Instant, end: Option<Instant>) -> f64 {
    end.unwrap_or_else(Instant::now)
        .duration_since(start)
        .as_secs_f64()
}

/// How long `total` messages may take to get through: generous (2,000 msg/s), but bounded.
fn delivery_deadline(start: Instant, total: usize) -> Instant {
    start
        + Duration::from_secs(60)
        + Duration::from_micros(500) * u32::try_from(total).unwrap_or(u32::MAX)
}

/// Waits until `done` says so, failing with its error or at `deadline`.
pub(super) async fn wait_for(
    deadline: Instant,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<()> {
    loop {
        if done()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out");
        }
        tokio::time::sleep(WAIT_STEP).await;
    }
}
