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
/// How long delivered messages are kept before the background purge deletes them.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// How often a node tries to purge (only one node of the cluster purges at a time).
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(3600);
/// How often a node re-reads the cluster-wide bans from MySQL (besides the Redis broadcast).
pub const DEFAULT_BANS_POLL: Duration = Duration::from_secs(30);

/// Posts per second one client may make (`SAY`, `SEND`), with a burst of twice as many.
pub const DEFAULT_SEND_RATE: u32 = 10;
/// Rooms (public or invite-only) one client may be in.
pub const DEFAULT_MAX_ROOMS_PER_CLIENT: usize = 100;
/// Members one room may have.
pub const DEFAULT_MAX_ROOM_MEMBERS: usize = 1000;
/// Private rooms (two-person conversations) one client may have.
pub const DEFAULT_MAX_PRIVATE_ROOMS: usize = 1000;
/// Contacts one client may have.
pub const MAX_CONTACTS: usize = 1000;

/// The bounds on what clients do with the chat commands.
#[derive(Debug, Clone)]
pub struct ChatLimits {
    pub send_rate: u32,
    pub max_rooms: usize,
    pub max_room_members: usize,
    pub max_private: usize,
    pub max_contacts: usize,
}

impl Default for ChatLimits {
    fn default() -> ChatLimits {
        ChatLimits {
            send_rate: DEFAULT_SEND_RATE,
            max_rooms: DEFAULT_MAX_ROOMS_PER_CLIENT,
            max_room_members: DEFAULT_MAX_ROOM_MEMBERS,
            max_private: DEFAULT_MAX_PRIVATE_ROOMS,
            max_contacts: MAX_CONTACTS,
        }
    }
}

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
    /// MySQL connections of the node's pool.
    pub db_pool: usize,
    pub max_inflight: usize,
    pub handoff_timeout: Duration,
    pub node_ttl: Duration,
    /// Whether every connection starts with a PROXY protocol (v1 or v2) header.
    pub proxy_protocol: bool,
    /// Delivered messages older than this are purged; `None`: kept forever.
    pub retention: Option<Duration>,
    pub retention_interval: Duration,
    pub bans_poll: Duration,
    /// Rates and sizes of the chat commands.
    pub chat: ChatLimits,
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
            db_pool: DEFAULT_DB_POOL,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            handoff_timeout: DEFAULT_HANDOFF_TIMEOUT,
            node_ttl: DEFAULT_NODE_TTL,
            proxy_protocol: false,
            retention: Some(DEFAULT_RETENTION),
            retention_interval: DEFAULT_RETENTION_INTERVAL,
            bans_poll: DEFAULT_BANS_POLL,
            chat: ChatLimits::default(),
        }
    }
}

/// Parses an age: a number with a unit `d`, `h`, `m` or `s` (`7d`, `12h`, `1.5h`); a bare
/// number is days. Zero is refused.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (number, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_lowercase()),
        _ => (t, 'd'),
    };
    let scale = match unit {
        'd' => 86_400.0,
        'h' => 3_600.0,
        'm' => 60.0,
        's' => 1.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit; use d, h, m or s (e.g. 7d, 12h)"
            ))
        }
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an age such as 7d, 12h, 30m or 45s"))?;
    let secs = value * scale;
    // At least 1 µs, so that no positive age rounds to zero (which would mean "everything").
    if (1e-6..=36_500.0 * 86_400.0).contains(&secs) {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!(
            "{s:?}: expected a positive age of at most 100 years"
        ))
    }
}

/// Parses a retention: an age as [`parse_age`] of at least 1 s, or `0`/`off` for none.
pub fn parse_retention(s: &str) -> Result<Option<Duration>, String> {
    match s.trim() {
        "off" | "0" | "0d" | "0h" | "0m" | "0s" => Ok(None),
        other => {
            let age = parse_age(other)?;
            if age < Duration::from_secs(1) {
                return Err(format!(
                    "{s:?}: a retention below 1 s would purge what was just delivered; use `off` to keep everything"
                ));
            }
            Ok(Some(age))
        }
    }
}

/// Parses a duration flag: a bare number of seconds (`5`, `0.5`) or a number with units
/// (`500ms`, `5s`, `2m`, `1h 30m`, as the `humantime` crate reads them); at least `min` and
/// below 1e9 s.
pub fn parse_duration(s: &str, min: Duration) -> Result<Duration, String> {
    let t = s.trim();
    let value = match t.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..1e9).contains(&secs) => Duration::from_secs_f64(secs),
        Ok(_) => return Err(format!("{s:?}: expected a positive number of seconds")),
        Err(_) => humantime::parse_duration(t).map_err(|e| {
            format!("{s:?} is not a duration such as 10, 2.5, 500ms, 30s or 5m: {e}")
        })?,
    };
    if value.is_zero() || value < min {
        return Err(format!(
            "{s:?}: expected at least {}",
            humantime::format_duration(min.max(Duration::from_millis(1)))
        ));
    }
    if value >= Duration::from_secs(1_000_000_000) {
        return Err(format!("{s:?}: expected less than 1e9 seconds"));
    }
    Ok(value)
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
    fn ages_take_units_and_days_by_default() {
        assert_eq!(parse_age("7"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3_600)));
        assert_eq!(parse_age("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse_age("1.5s"), Ok(Duration::from_millis(1_500)));
        for bad in ["", "0", "-1d", "7w", "d", "x7d", "nan", "1e-12s"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_retention("off"), Ok(None));
        assert_eq!(parse_retention("0"), Ok(None));
        assert_eq!(parse_retention("2h"), Ok(Some(Duration::from_secs(7_200))));
        assert!(parse_retention("soon").is_err());
        assert!(parse_retention("1e-12s").is_err());
        assert!(parse_retention("0.5s").is_err());
        assert_eq!(parse_retention("1s"), Ok(Some(Duration::from_secs(1))));
    }

    #[test]
    fn durations_take_seconds_or_units() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("5", ms(1)), Ok(ms(5_000)));
        assert_eq!(parse_duration("0.25", ms(1)), Ok(ms(250)));
        assert_eq!(parse_duration("5s", ms(1)), Ok(ms(5_000)));
        assert_eq!(parse_duration("500ms", ms(1)), Ok(ms(500)));
        assert_eq!(parse_duration("2m", ms(1)), Ok(ms(120_000)));
        assert_eq!(parse_duration("1h 30m", ms(1)), Ok(ms(5_400_000)));
        for bad in [
            "", "0", "0s", "-1", "1e-12", "nan", "inf", "5x", "soon", "1e10",
        ] {
            assert!(parse_duration(bad, ms(1)).is_err(), "{bad}");
        }
        assert!(parse_duration("0.001", Duration::from_secs(1)).is_err());
        assert!(parse_duration("999ms", Duration::from_secs(1)).is_err());
        assert_eq!(parse_duration("1s", Duration::from_secs(1)), Ok(ms(1_000)));
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
