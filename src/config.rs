//! Node settings and their defaults (the binaries map flags and environment onto these).

use std::time::Duration;

/// Longest line a client may send, in bytes (terminator excluded).
pub const DEFAULT_MAX_LINE: usize = 1024;
/// How long a new connection has to answer `GET_CLIENT_ID`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write to a client may take before the session is dropped as not reading.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages read from MySQL and written per delivery round of one session.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// How often the node re-checks MySQL for messages whose notification was lost.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Lifetime of a client's ownership key in Redis; renewed every third of it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// How long a graceful shutdown waits for sessions to say goodbye.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent connections one node accepts.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Unacknowledged messages one acknowledged-mode session may have in flight.
pub const DEFAULT_MAX_INFLIGHT: usize = 100;
/// How long a new session waits for the previous session of its client to hand over (the previous
/// node still alive but not releasing) before taking over anyway.
pub const DEFAULT_HANDOFF_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a node's heartbeat key lives in Redis; renewed every fifth of it.
pub const DEFAULT_NODE_TTL: Duration = Duration::from_secs(5);
/// Failed handshakes (wrong or malformed ids) one address may make in a burst.
pub const DEFAULT_MAX_FAILED_HANDSHAKES: u32 = 10;
/// Time in which an address's spent allowance of failed handshakes refills.
pub const DEFAULT_FAILED_HANDSHAKE_WINDOW: Duration = Duration::from_secs(60);
/// MySQL connections one node keeps at most.
pub const DEFAULT_DB_POOL: usize = 32;

/// Where MySQL and Redis are: the flags both binaries share.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceUrls {
    /// MySQL/MariaDB URL (chat-server creates the database if missing and migrates it on start).
    #[arg(
        long,
        env = "CHAT_DATABASE_URL",
        default_value = "mysql://root@127.0.0.1:3306/chat"
    )]
    pub database_url: String,
    /// Redis URL (ownership leases and notifications).
    #[arg(
        long,
        env = "CHAT_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/"
    )]
    pub redis_url: String,
}

/// Everything a node needs to know besides its connections.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's name in the cluster (its Redis channel is `chat:node:<node_id>`).
    pub node_id: String,
    pub max_line: usize,
    pub handshake_timeout: Duration,
    pub write_timeout: Duration,
    pub page_size: usize,
    pub sweep_interval: Duration,
    pub lease: Duration,
    pub shutdown_timeout: Duration,
    pub max_connections: usize,
    pub max_inflight: usize,
    pub handoff_timeout: Duration,
    pub node_ttl: Duration,
    /// Whether every connection starts with a PROXY protocol (v1 or v2) header.
    pub proxy_protocol: bool,
}

impl NodeConfig {
    /// Defaults for node `node_id`.
    pub fn new(node_id: impl Into<String>) -> NodeConfig {
        NodeConfig {
            node_id: node_id.into(),
            max_line: DEFAULT_MAX_LINE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            page_size: DEFAULT_PAGE_SIZE,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            lease: DEFAULT_LEASE,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            handoff_timeout: DEFAULT_HANDOFF_TIMEOUT,
            node_ttl: DEFAULT_NODE_TTL,
            proxy_protocol: false,
        }
    }
}

/// Checks a node id: 1-64 characters from `[A-Za-z0-9._-]` (it is part of Redis keys and values).
pub fn validate_node_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid node id {id:?}: use 1-64 characters from A-Z a-z 0-9 . _ -"
        ))
    }
}

/// A generated node id: `node-` and 12 random hex digits.
pub fn generated_node_id() -> String {
    format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// `url` with its password replaced by `***`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_checked() {
        assert!(validate_node_id("node-8000").is_ok());
        assert!(validate_node_id(&generated_node_id()).is_ok());
        assert!(validate_node_id("").is_err());
        assert!(validate_node_id("a|b").is_err());
        assert!(validate_node_id("a b").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("mysql://root:secret@db:3306/chat"),
            "mysql://root:***@db:3306/chat"
        );
        assert_eq!(redact_url("redis://127.0.0.1/"), "redis://127.0.0.1/");
        assert_eq!(redact_url("mysql://root@h/x"), "mysql://root@h/x");
    }
}
