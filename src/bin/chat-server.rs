//! `chat-server`: one delivery node. Flags, environment and config file -> config -> `server::run` until SIGINT/SIGTERM.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::{Context, Result};
use clap::builder::TypedValueParser;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use chat::admission::{Admission, AdmissionConfig, Ban};
use chat::bus::Bus;
use chat::config::{self, redact_url, NodeConfig, ServiceUrls};
use chat::config_file::{self, ArgsError};
use chat::logging::{self, LogFormat};
use chat::node::Node;
use chat::server;
use chat::stats;
use chat::store::{NodeLock, Store};
use chat::tls::Tls;

/// A store-and-forward delivery node. Clients connect with telnet; messages come from chat-enqueue.
#[derive(Debug, Parser)]
#[command(
    name = "chat-server",
    version,
    after_help = "Every flag can also be set in the TOML file given by --config (env CHAT_CONFIG), \
                  as `long-flag-name = value`; a flag beats its environment variable, which beats \
                  the file, which beats the default. Durations take plain seconds (10, 0.5) or \
                  units (500ms, 30s, 5m, 1h)."
)]
struct Args {
    /// TOML config file: one key per long flag (`max-line = 1024`, `ban = ["10.0.0.0/8"]`).
    #[arg(long, env = "CHAT_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Check the flags, environment and config file (and load the TLS certificate and key), print
    /// which file keys are in effect, and exit: 0 valid, 2 invalid. Contacts neither MySQL nor
    /// Redis and reads no ban file.
    #[arg(long)]
    check_config: bool,
    /// TCP port to listen on (0 picks a free one).
    #[arg(short, long, env = "CHAT_PORT", default_value_t = chat::DEFAULT_PORT)]
    port: u16,
    /// Addresses to listen on, comma-separated (e.g. 127.0.0.1,::1). Default: every IPv4 and IPv6 address.
    #[arg(long, env = "CHAT_BIND", value_delimiter = ',')]
    bind: Vec<IpAddr>,
    #[command(flatten)]
    urls: ServiceUrls,
    /// This node's name in the cluster, unique per node: 1-64 of [A-Za-z0-9._-]. Default: generated.
    #[arg(long, env = "CHAT_NODE_ID", value_parser = parse_node_id)]
    node_id: Option<String>,
    /// Log filter: error, warn, info, debug, trace, or directives such as chat=debug.
    #[arg(long, env = "CHAT_LOG_LEVEL", default_value = "info", value_parser = parse_log_level)]
    log_level: String,
    /// Log line format on stderr.
    #[arg(long, env = "CHAT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Longest line accepted from a client, in bytes (at least 16).
    #[arg(long, env = "CHAT_MAX_LINE", default_value_t = config::DEFAULT_MAX_LINE,
          value_parser = clap::value_parser!(u32).range(16..).map(|n| n as usize))]
    max_line: usize,
    /// Concurrent connections accepted; past it new ones get `ERROR: server full`.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", default_value_t = config::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    max_connections: usize,
    /// Seconds a new connection has to answer GET_CLIENT_ID.
    #[arg(long, env = "CHAT_HANDSHAKE_TIMEOUT", value_parser = seconds, default_value = "10")]
    handshake_timeout: Duration,
    /// Seconds one write to a client may take before the session is closed as not reading.
    #[arg(long, env = "CHAT_WRITE_TIMEOUT", value_parser = seconds, default_value = "10")]
    write_timeout: Duration,
    /// Seconds between sweeps of MySQL for messages whose notification was lost.
    #[arg(long, env = "CHAT_SWEEP_INTERVAL", value_parser = seconds, default_value = "5")]
    sweep_interval: Duration,
    /// Seconds a client's ownership lease lives in Redis (renewed every third of it); at least 1 s.
    #[arg(long, env = "CHAT_LEASE", value_parser = at_least_a_second, default_value = "30")]
    lease: Duration,
    /// Seconds a graceful shutdown waits for sessions to finish.
    #[arg(long, env = "CHAT_SHUTDOWN_TIMEOUT", value_parser = seconds, default_value = "10")]
    shutdown_timeout: Duration,
    /// Messages fetched from MySQL and written per delivery round of one session.
    #[arg(long, env = "CHAT_PAGE_SIZE", default_value_t = config::DEFAULT_PAGE_SIZE,
          value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
    page_size: usize,
    /// Acknowledged mode: unacknowledged messages in flight per session; the rest wait their turn.
    #[arg(long, env = "CHAT_MAX_INFLIGHT", default_value_t = config::DEFAULT_MAX_INFLIGHT,
          value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
    max_inflight: usize,
    /// Seconds a new session waits for a live node to hand over the previous session of its client.
    #[arg(long, env = "CHAT_HANDOFF_TIMEOUT", value_parser = seconds, default_value = "15")]
    handoff_timeout: Duration,
    /// Seconds a silent node still counts as alive: its lock in MySQL (and its Redis heartbeat)
    /// outlive its last sign of life by this much (it renews them every fifth). A node whose
    /// process is gone counts as dead at once. At least 1 s.
    #[arg(long, env = "CHAT_NODE_TTL", value_parser = at_least_a_second, default_value = "5")]
    node_ttl: Duration,
    /// File of bans, one per line: an IP address, a network (10.0.0.0/8, 2001:db8::/32) or a client
    /// id; `#` starts a comment. Re-read on SIGHUP.
    #[arg(long, env = "CHAT_BAN_FILE")]
    ban_file: Option<std::path::PathBuf>,
    /// Bans on the command line, comma-separated, in the ban-file syntax.
    #[arg(long, env = "CHAT_BAN", value_delimiter = ',', value_parser = ban)]
    ban: Vec<String>,
    /// Failed handshakes (wrong or malformed ids) one address (IPv6: one /64) may make in a burst;
    /// past it, connections from there are refused until the allowance refills.
    #[arg(long, env = "CHAT_MAX_FAILED_HANDSHAKES", default_value_t = config::DEFAULT_MAX_FAILED_HANDSHAKES,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_failed_handshakes: u32,
    /// Seconds in which a spent allowance of failed handshakes refills completely.
    #[arg(long, env = "CHAT_FAILED_HANDSHAKE_WINDOW", value_parser = seconds, default_value = "60")]
    failed_handshake_window: Duration,
    /// MySQL connections this node keeps at most.
    #[arg(long, env = "CHAT_DB_POOL", default_value_t = config::DEFAULT_DB_POOL,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    db_pool: usize,
    /// Delete delivered messages older than this (7d, 12h, 30m, 45s; a bare number is days);
    /// `off` or 0 keeps them forever. One node of the cluster purges at a time.
    #[arg(long, env = "CHAT_RETENTION", value_parser = config::parse_retention, default_value = "7d")]
    retention: Retention,
    /// Seconds between retention purges.
    #[arg(long, env = "CHAT_RETENTION_INTERVAL", value_parser = seconds, default_value = "3600")]
    retention_interval: Duration,
    /// Seconds between reloads of the cluster-wide bans from MySQL (a `chat-admin ban` also tells
    /// every node at once over Redis).
    #[arg(long, env = "CHAT_BANS_POLL", value_parser = seconds, default_value = "30")]
    bans_poll: Duration,
    /// Address of the operations port: Prometheus `/metrics`, `/healthz`, `/readyz` (e.g.
    /// 127.0.0.1:9108). Default: off.
    #[arg(long, env = "CHAT_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Seconds between a shutdown signal and closing the listeners, while `/readyz` already says
    /// 503, so that a load balancer stops sending clients first.
    #[arg(long, env = "CHAT_DRAIN_DELAY", value_parser = seconds_or_zero, default_value = "0")]
    drain_delay: Duration,
    /// TCP port of a TLS listener (same protocol, same addresses as --bind; 0 picks a free one).
    /// Needs --tls-cert and --tls-key. Default: no TLS listener.
    #[arg(long, env = "CHAT_TLS_PORT", requires_all = ["tls_cert", "tls_key"])]
    tls_port: Option<u16>,
    /// PEM file with the TLS certificate chain (server certificate first). Re-read on SIGHUP.
    #[arg(long, env = "CHAT_TLS_CERT", requires = "tls_port")]
    tls_cert: Option<PathBuf>,
    /// PEM file with the TLS private key (PKCS#8, PKCS#1 or SEC1). Re-read on SIGHUP.
    #[arg(long, env = "CHAT_TLS_KEY", requires = "tls_port")]
    tls_key: Option<PathBuf>,
    /// Posts (SAY, SEND) per second one client may make, with a burst of twice as many; past it
    /// the post is refused with an ERROR line and nothing is stored.
    #[arg(long, env = "CHAT_SEND_RATE", default_value_t = config::DEFAULT_SEND_RATE,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    send_rate: u32,
    /// Rooms (public or invite-only) one client may be in.
    #[arg(long, env = "CHAT_MAX_ROOMS_PER_CLIENT", default_value_t = config::DEFAULT_MAX_ROOMS_PER_CLIENT,
          value_parser = clap::value_parser!(u32).range(1..=10_000).map(|n| n as usize))]
    max_rooms_per_client: usize,
    /// Members one room may have.
    #[arg(long, env = "CHAT_MAX_ROOM_MEMBERS", default_value_t = config::DEFAULT_MAX_ROOM_MEMBERS,
          value_parser = clap::value_parser!(u32).range(2..=1_000_000).map(|n| n as usize))]
    max_room_members: usize,
    /// Private rooms (two-person conversations) one client may have.
    #[arg(long, env = "CHAT_MAX_PRIVATE_ROOMS", default_value_t = config::DEFAULT_MAX_PRIVATE_ROOMS,
          value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    max_private_rooms: usize,
    /// Every connection must start with a PROXY protocol v1 or v2 header (behind HAProxy with
    /// send-proxy-v2); bans and limits then apply to the address it names. Connections without a
    /// valid header are closed.
    #[arg(long, env = "CHAT_PROXY_PROTOCOL")]
    proxy_protocol: bool,
}

/// A duration flag that may be 0 (off).
fn seconds_or_zero(s: &str) -> Result<Duration, String> {
    if matches!(s.trim(), "0" | "0s") {
        return Ok(Duration::ZERO);
    }
    seconds(s)
}

/// A retention period, `None` for off (an alias, so that clap takes `None` as a value, not as "flag absent").
type Retention = Option<Duration>;

/// A positive duration flag: plain seconds (`5`, `0.5`) or with units (`500ms`, `5s`, `2m`).
fn seconds(s: &str) -> Result<Duration, String> {
    config::parse_duration(s, Duration::from_millis(1))
}

/// A duration flag that breaks the node below 1 s (leases, heartbeats).
fn at_least_a_second(s: &str) -> Result<Duration, String> {
    config::parse_duration(s, Duration::from_secs(1))
}

/// A ban as in the ban file, checked while parsing (so that a bad one names its flag or file key).
fn ban(s: &str) -> Result<String, String> {
    Ban::parse(s).map(|_| s.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let parsed = match config_file::parse::<Args>(std::env::args_os().collect(), "config") {
        Ok(parsed) => parsed,
        Err(ArgsError::Clap(e)) => e.exit(),
        Err(ArgsError::File(e)) => {
            eprintln!("chat-server: error: {e}");
            return ExitCode::from(2);
        }
    };
    let args = parsed.args;
    if args.check_config {
        return check_config(&args, parsed.file.as_deref(), &parsed.used_keys);
    }
    if let Some(clash) = port_clash(&args) {
        eprintln!("chat-server: error: {clash}");
        return ExitCode::from(2);
    }
    if let Err(e) = logging::init(&args.log_level, args.log_format) {
        eprintln!("chat-server: {e}");
        return ExitCode::from(2);
    }
    match serve(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "cannot start");
            eprintln!("chat-server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Two listeners of this node on the same port (0 excepted: it picks a free one).
fn port_clash(args: &Args) -> Option<String> {
    let ports = [
        ("--port", Some(args.port)),
        ("--tls-port", args.tls_port),
        ("--metrics-addr", args.metrics_addr.map(|a| a.port())),
    ];
    let used: Vec<(&str, u16)> = ports
        .iter()
        .filter_map(|(flag, port)| port.filter(|p| *p != 0).map(|p| (*flag, p)))
        .collect();
    used.iter().enumerate().find_map(|(i, (flag, port))| {
        used[i + 1..]
            .iter()
            .find(|(_, other)| other == port)
            .map(|(other, _)| format!("port {port} is used twice: {flag} and {other}"))
    })
}

/// A node id, checked while parsing (so a config file's error names its line and key).
fn parse_node_id(s: &str) -> Result<String, String> {
    config::validate_node_id(s).map(|()| s.to_string())
}

/// A log filter, checked while parsing.
fn parse_log_level(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("invalid log filter: {e}"))
}

/// `--check-config`: what parsing could not check (node id, log filter, ban entries, listener
/// ports, the TLS certificate and key).
fn check_config(args: &Args, file: Option<&std::path::Path>, used: &[String]) -> ExitCode {
    let mut problems = Vec::new();
    if let Some(id) = &args.node_id {
        problems.extend(config::validate_node_id(id).err());
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&args.log_level) {
        problems.push(format!("invalid log level {:?}: {e}", args.log_level));
    }
    problems.extend(args.ban.iter().filter_map(|b| Ban::parse(b).err()));
    problems.extend(port_clash(args));
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        // The same loading as at start: the files exist, parse, and the key fits the certificate.
        problems.extend(Tls::load(cert, key).err().map(|e| format!("{e:#}")));
    }
    let source = file.map_or("flags and environment (no config file)".to_string(), |f| {
        f.display().to_string()
    });
    if problems.is_empty() {
        println!(
            "{source}: OK; keys in effect from the file: [{}]",
            used.join(", ")
        );
        ExitCode::SUCCESS
    } else {
        for problem in problems {
            eprintln!("chat-server: error: {source}: {problem}");
        }
        ExitCode::from(2)
    }
}

async fn serve(args: Args) -> Result<()> {
    let node_id = args
        .node_id
        .clone()
        .unwrap_or_else(config::generated_node_id);
    config::validate_node_id(&node_id).map_err(anyhow::Error::msg)?;
    let admission = Admission::new(AdmissionConfig {
        ban_file: args.ban_file.clone(),
        bans: args.ban.clone(),
        max_failures: args.max_failed_handshakes,
        window: args.failed_handshake_window,
    })
    .map_err(anyhow::Error::msg)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Tls::load(cert, key)?),
        _ => None,
    };
    let db = redact_url(&args.urls.database_url);
    let applied = Store::migrate(&args.urls.database_url)
        .await
        .with_context(|| format!("cannot reach MySQL at {db}"))?;
    if !applied.is_empty() {
        info!(migrations = ?applied, "applied migrations");
    }
    let store = Store::new(&args.urls.database_url, args.db_pool)?;
    store
        .ping()
        .await
        .with_context(|| format!("cannot reach MySQL at {db}"))?;
    // The proof that this node lives, for the other nodes: while this process holds it, its
    // clients' new sessions wait for a handoff; once it is gone, they take over at once.
    let node_lock = NodeLock::take(&args.urls.database_url, &node_id, args.node_ttl)
        .await
        .with_context(|| format!("cannot take the node lock in MySQL at {db}"))?;
    let released = store
        .release_stale_holds(&node_id)
        .await
        .with_context(|| format!("cannot reach MySQL at {db}"))?;
    if released > 0 {
        info!(
            released,
            "gave up the delivery rights of this node's previous process"
        );
    }
    let redis = redact_url(&args.urls.redis_url);
    let bus = Bus::connect(&args.urls.redis_url)
        .await
        .with_context(|| format!("cannot reach Redis at {redis}"))?;
    bus.ping()
        .await
        .with_context(|| format!("cannot reach Redis at {redis}"))?;
    let metrics = match args.metrics_addr {
        Some(addr) => {
            let handle = stats::install().map_err(anyhow::Error::msg)?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --metrics-addr {addr}"))?;
            Some((listener, handle))
        }
        None => None,
    };
    let listeners = server::bind(&args.bind, args.port)?;
    let tls_listeners = match args.tls_port {
        Some(port) => server::bind(&args.bind, port)?,
        None => Vec::new(),
    };

    let mut config = NodeConfig::new(node_id);
    config.max_line = args.max_line;
    config.max_connections = args.max_connections;
    config.handshake_timeout = args.handshake_timeout;
    config.write_timeout = args.write_timeout;
    config.sweep_interval = args.sweep_interval;
    config.lease = args.lease;
    config.shutdown_timeout = args.shutdown_timeout;
    config.page_size = args.page_size;
    config.max_inflight = args.max_inflight;
    config.handoff_timeout = args.handoff_timeout;
    config.node_ttl = args.node_ttl;
    config.proxy_protocol = args.proxy_protocol;
    config.retention = args.retention;
    config.retention_interval = args.retention_interval;
    config.bans_poll = args.bans_poll;
    config.db_pool = args.db_pool;
    config.chat.send_rate = args.send_rate;
    config.chat.max_rooms = args.max_rooms_per_client;
    config.chat.max_room_members = args.max_room_members;
    config.chat.max_private = args.max_private_rooms;
    let mut node = Node::new(config, store, bus, admission);
    node.tls = tls;
    node.node_lock = std::sync::Mutex::new(Some(node_lock));
    let node = Arc::new(node);
    chat::background::bans::load(&node)
        .await
        .with_context(|| format!("cannot load the cluster bans from MySQL at {db}"))?;

    if let Some((listener, handle)) = metrics {
        if let Ok(addr) = listener.local_addr() {
            info!(addr = %addr, "metrics listening");
        }
        tokio::spawn(chat::http::serve(listener, node.clone(), handle));
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signals(node.clone(), args.drain_delay, shutdown.clone()));
    tokio::spawn(on_hangup(node.clone()));
    server::run_with_tls(listeners, tls_listeners, node, shutdown).await;
    Ok(())
}

/// SIGHUP re-reads the ban list and the TLS certificate.
async fn on_hangup(node: Arc<Node>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        warn!("cannot listen for SIGHUP; the ban list will not be reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        node.reload_bans();
        node.reload_tls();
    }
}

/// The first SIGINT/SIGTERM starts a graceful shutdown (`/readyz` turns 503 at once, the listeners
/// close after `drain_delay`); a second one exits at once.
async fn on_signals(node: Arc<Node>, drain_delay: Duration, shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    for round in 0..2 {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        if round == 0 {
            info!(drain_delay = ?drain_delay, "signal received: shutting down gracefully");
            node.start_draining();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                tokio::time::sleep(drain_delay).await;
                shutdown.cancel();
            });
        } else {
            warn!("second signal: exiting now");
            std::process::exit(130);
        }
    }
}
