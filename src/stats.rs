//! The node's Prometheus metrics: every metric name, its meaning, and the calls that record it.
//!
//! Recording goes through the `metrics` facade: without an installed recorder (`chat-enqueue`, a
//! node without `--metrics-addr`) every call is a no-op. `install` sets up the Prometheus
//! recorder; `crate::http` renders it on `/metrics`. README.md ("Metrics") lists the names too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::protocol::SessionError;

pub const SESSIONS_OPEN: &str = "chat_sessions_open";
pub const SESSIONS_PARKED: &str = "chat_sessions_parked";
pub const HANDSHAKES: &str = "chat_handshakes_total";
pub const PROXY_HEADERS_REJECTED: &str = "chat_proxy_headers_rejected_total";
pub const NOTIFICATIONS: &str = "chat_notifications_received_total";
pub const FETCHED: &str = "chat_messages_fetched_total";
pub const CARRIED: &str = "chat_messages_carried_total";
pub const DELIVERED: &str = "chat_messages_delivered_total";
pub const ACKNOWLEDGED: &str = "chat_messages_acknowledged_total";
pub const REDELIVERED: &str = "chat_messages_redelivered_total";
pub const DROPPED: &str = "chat_messages_dropped_total";
pub const PENDING: &str = "chat_messages_pending";
pub const LATENCY: &str = "chat_delivery_latency_seconds";
pub const MYSQL_ERRORS: &str = "chat_mysql_errors_total";
pub const MYSQL_RECONNECTS: &str = "chat_mysql_reconnects_total";
pub const REDIS_ERRORS: &str = "chat_redis_errors_total";
pub const REDIS_RECONNECTS: &str = "chat_redis_reconnects_total";
pub const SWEEPS: &str = "chat_sweeps_total";
pub const SWEEP_FOUND: &str = "chat_sweep_found_messages_total";
pub const TLS_RELOADS: &str = "chat_tls_reloads_total";

/// Buckets of the latency histogram, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 3600.0,
];

/// Whether the last MySQL (resp. Redis) call failed: the next success counts as a reconnect.
static MYSQL_DOWN: AtomicBool = AtomicBool::new(false);
static REDIS_DOWN: AtomicBool = AtomicBool::new(false);

/// Installs the Prometheus recorder for this process and describes every metric.
pub fn install() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(LATENCY.to_string()), LATENCY_BUCKETS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    describe();
    register();
    Ok(handle)
}

/// The handshake outcomes a connection can have (README lists them).
const HANDSHAKE_OUTCOMES: &[&str] = &[
    "new",
    "resumed",
    "unknown_client",
    "wrong_login",
    "malformed",
    "timeout",
    "line_too_long",
    "unavailable",
    "server_full",
    "banned",
    "rate_limited",
    "tls_failed",
];

/// Every metric and known label value at 0, present from the first scrape (so that `rate()` and
/// alerts see a series before it first moves).
fn register() {
    gauge!(SESSIONS_OPEN).set(0.0);
    gauge!(PENDING).set(0.0);
    for outcome in HANDSHAKE_OUTCOMES {
        counter!(HANDSHAKES, "outcome" => *outcome).absolute(0);
    }
    for mode in ["plain", "ack"] {
        counter!(DELIVERED, "mode" => mode).absolute(0);
    }
    for result in ["ok", "error"] {
        counter!(TLS_RELOADS, "result" => result).absolute(0);
    }
    for name in [
        PROXY_HEADERS_REJECTED,
        NOTIFICATIONS,
        FETCHED,
        CARRIED,
        ACKNOWLEDGED,
        REDELIVERED,
        DROPPED,
        MYSQL_ERRORS,
        MYSQL_RECONNECTS,
        REDIS_ERRORS,
        REDIS_RECONNECTS,
        SWEEPS,
        SWEEP_FOUND,
    ] {
        counter!(name).absolute(0);
    }
    // Registered, so that the exporter renders its buckets at 0 if it renders empty histograms.
    let _ = histogram!(LATENCY);
}

fn describe() {
    describe_gauge!(SESSIONS_OPEN, "Established client sessions on this node.");
    describe_gauge!(
        SESSIONS_PARKED,
        "Established sessions waiting without a task (idle, on plain TCP), at the last scrape."
    );
    describe_counter!(
        HANDSHAKES,
        "Connections by handshake outcome: new, resumed, or why they were refused."
    );
    describe_counter!(
        PROXY_HEADERS_REJECTED,
        "Connections closed because their PROXY protocol header was missing or invalid."
    );
    describe_counter!(
        NOTIFICATIONS,
        "Wake notifications from Redis for clients with a session here (enqueues seen by this node)."
    );
    describe_counter!(FETCHED, "Messages read from MySQL for delivery.");
    describe_counter!(
        CARRIED,
        "Messages delivered as their notification carried them, without a read."
    );
    describe_counter!(DELIVERED, "Messages written to client sockets, by mode.");
    describe_counter!(ACKNOWLEDGED, "Messages acknowledged by clients (ACK).");
    describe_counter!(
        DROPPED,
        "Messages skipped because they expired (--ttl) or were replaced (--collapse-key); counted in DROPPED lines."
    );
    describe_counter!(
        REDELIVERED,
        "Messages written but not done when their session ended: they are sent again next session."
    );
    describe_gauge!(
        PENDING,
        "Messages waiting for the clients that have a session on this node (as of the last sweep)."
    );
    describe_histogram!(
        LATENCY,
        "Time from enqueue (commit in MySQL) to the write to the client's socket."
    );
    describe_counter!(MYSQL_ERRORS, "Failed or timed-out MySQL statements.");
    describe_counter!(
        MYSQL_RECONNECTS,
        "Times MySQL answered again after failing."
    );
    describe_counter!(REDIS_ERRORS, "Failed or timed-out Redis commands.");
    describe_counter!(
        REDIS_RECONNECTS,
        "Times the node subscribed to its Redis channel again after losing it."
    );
    describe_counter!(
        SWEEPS,
        "MySQL sweeps run for messages whose notification was lost."
    );
    describe_counter!(
        SWEEP_FOUND,
        "Pending messages of the sessions that sweeps woke (their notification was lost or late)."
    );
    describe_counter!(TLS_RELOADS, "TLS certificate reloads (SIGHUP), by result.");
}

/// A handshake ended: `outcome` is `new`, `resumed` or a refusal (see [`refusal`]).
pub fn handshake(outcome: &'static str) {
    counter!(HANDSHAKES, "outcome" => outcome).increment(1);
}

/// The `outcome` label of a refused handshake.
pub fn refusal(e: &SessionError) -> &'static str {
    match e {
        SessionError::UnknownClient => "unknown_client",
        SessionError::WrongLogin => "wrong_login",
        SessionError::LineTooLong(_) => "line_too_long",
        SessionError::HandshakeTimeout(_) => "timeout",
        SessionError::Unavailable => "unavailable",
        SessionError::ServerFull => "server_full",
        SessionError::Banned => "banned",
        SessionError::RateLimited => "rate_limited",
        SessionError::Hello(_) => "malformed",
        SessionError::NotAckMode | SessionError::NotInFlight(_) => "other",
    }
}

pub fn proxy_header_rejected() {
    counter!(PROXY_HEADERS_REJECTED).increment(1);
}

pub fn session_opened() {
    gauge!(SESSIONS_OPEN).increment(1.0);
}

/// How many sessions wait without a task, read when the metrics are scraped.
pub fn parked(n: usize) {
    gauge!(SESSIONS_PARKED).set(n as f64);
}

pub fn session_closed() {
    gauge!(SESSIONS_OPEN).decrement(1.0);
}

pub fn notifications(n: usize) {
    counter!(NOTIFICATIONS).increment(n as u64);
}

pub fn fetched(n: usize) {
    counter!(FETCHED).increment(n as u64);
}

pub fn carried(n: usize) {
    counter!(CARRIED).increment(n as u64);
}

/// Messages were just written to a client's socket: counts them (and the `dropped` ones counted in
/// a `DROPPED` line instead) and observes each written one's latency from its enqueue time
/// (microseconds since the Unix epoch, MySQL's clock).
pub fn delivered(enqueued_at_us: impl Iterator<Item = u64>, dropped: u64, acknowledged: bool) {
    let mode = if acknowledged { "ack" } else { "plain" };
    if dropped > 0 {
        counter!(DROPPED).increment(dropped);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let latency = histogram!(LATENCY);
    let mut written = 0;
    for at in enqueued_at_us {
        written += 1;
        latency.record(now.saturating_sub(Duration::from_micros(at)).as_secs_f64());
    }
    counter!(DELIVERED, "mode" => mode).increment(written);
}

pub fn acknowledged() {
    counter!(ACKNOWLEDGED).increment(1);
}

pub fn redelivered(n: u64) {
    if n > 0 {
        counter!(REDELIVERED).increment(n);
    }
}

pub fn pending(n: u64) {
    gauge!(PENDING).set(n as f64);
}

/// A sweep ran and woke sessions with `found` pending messages between them.
pub fn sweep(found: u64) {
    counter!(SWEEPS).increment(1);
    counter!(SWEEP_FOUND).increment(found);
}

/// Records the result of one MySQL call.
pub fn mysql<T, E>(result: &Result<T, E>) {
    outcome(result.is_ok(), &MYSQL_DOWN, MYSQL_ERRORS, MYSQL_RECONNECTS);
}

/// Records the result of one Redis call.
pub fn redis<T, E>(result: &Result<T, E>) {
    outcome(result.is_ok(), &REDIS_DOWN, REDIS_ERRORS, "");
}

/// The node subscribed to its Redis channel again after losing it.
pub fn redis_reconnected() {
    counter!(REDIS_RECONNECTS).increment(1);
}

pub fn tls_reload(ok: bool) {
    let result = if ok { "ok" } else { "error" };
    counter!(TLS_RELOADS, "result" => result).increment(1);
}

fn outcome(ok: bool, down: &AtomicBool, errors: &'static str, reconnects: &'static str) {
    if ok {
        if down.swap(false, Ordering::Relaxed) && !reconnects.is_empty() {
            counter!(reconnects).increment(1);
        }
    } else {
        down.store(true, Ordering::Relaxed);
        counter!(errors).increment(1);
    }
}
