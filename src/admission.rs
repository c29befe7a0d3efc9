//! Who may connect: the ban list (addresses, networks, client ids) and the per-address limit on failed handshakes.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::ClientId;

/// Most source addresses whose failures are tracked at once (bounded memory under a distributed scan).
const MAX_TRACKED: usize = 100_000;

/// What the node does with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Banned,
    RateLimited,
}

/// One ban-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ban {
    /// An address or network: `192.0.2.7`, `2001:db8::/32`, `10.0.0.0/8`.
    Net(IpAddr, u8),
    Client(ClientId),
}

impl Ban {
    /// Parses `IP`, `IP/PREFIX` or a client id.
    pub fn parse(entry: &str) -> Result<Ban, String> {
        let entry = entry.trim();
        if let Ok(id) = entry.parse::<ClientId>() {
            return Ok(Ban::Client(id));
        }
        let (ip, prefix) = match entry.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (entry, None),
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{entry:?} is not an IP address, network or client id"))?;
        let ip = ip.to_canonical();
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{entry:?} has a bad prefix length"))?,
        };
        Ok(Ban::Net(ip, prefix))
    }

    /// The entry in one canonical text form (a network by its first address), as the cluster's
    /// `bans` table stores it: `10.1.2.3/8` and `10.0.0.0/8` are the same ban.
    pub fn canonical(&self) -> String {
        match self {
            Ban::Client(id) => id.to_string(),
            Ban::Net(ip, prefix) if *prefix == bits(*ip) => ip.to_string(),
            Ban::Net(ip, prefix) => format!("{}/{prefix}", network(*ip, *prefix)),
        }
    }

    fn covers(&self, ip: IpAddr) -> bool {
        match self {
            Ban::Net(net, prefix) => {
                net.is_ipv4() == ip.is_ipv4() && network(*net, *prefix) == network(ip, *prefix)
            }
            Ban::Client(_) => false,
        }
    }
}

/// Address length in bits.
fn bits(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// The first address of the `/prefix` network that holds `ip`.
fn network(ip: IpAddr, prefix: u8) -> IpAddr {
    let host_bits = u32::from(bits(ip) - prefix.min(bits(ip)));
    match ip {
        IpAddr::V4(v4) => {
            IpAddr::V4((u32::from(v4) & u32::MAX.checked_shl(host_bits).unwrap_or(0)).into())
        }
        IpAddr::V6(v6) => {
            IpAddr::V6((u128::from(v6) & u128::MAX.checked_shl(host_bits).unwrap_or(0)).into())
        }
    }
}

#[derive(Debug, Default)]
struct BanList {
    nets: Vec<Ban>,
    clients: HashSet<ClientId>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Where bans come from and how many failed handshakes an address may make.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// File with one ban per line (`#` comments), re-read on SIGHUP.
    pub ban_file: Option<PathBuf>,
    /// Bans given on the command line.
    pub bans: Vec<String>,
    /// Failed handshakes an address may make in a burst.
    pub max_failures: u32,
    /// Time in which a fully spent allowance refills.
    pub window: Duration,
}

/// The node's admission control. Locks are held for a map lookup, never across an await.
#[derive(Debug)]
pub struct Admission {
    config: AdmissionConfig,
    bans: RwLock<BanList>,
    /// The cluster-wide bans (MySQL `bans` table), kept apart from the flag and file ones.
    cluster: RwLock<BanList>,
    failures: Mutex<HashMap<IpAddr, Bucket>>,
}

impl Admission {
    /// Loads the bans; fails on an unreadable file or a bad entry.
    pub fn new(config: AdmissionConfig) -> Result<Admission, String> {
        let admission = Admission {
            config,
            bans: RwLock::new(BanList::default()),
            cluster: RwLock::new(BanList::default()),
            failures: Mutex::new(HashMap::new()),
        };
        admission.reload()?;
        Ok(admission)
    }

    /// Re-reads the ban file and flag bans; keeps the old list on error. Returns the entry count.
    pub fn reload(&self) -> Result<usize, String> {
        let mut list = BanList::default();
        let mut entries: Vec<(String, String)> = self
            .config
            .bans
            .iter()
            .map(|b| ("--ban".to_string(), b.clone()))
            .collect();
        if let Some(path) = &self.config.ban_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read ban file {}: {e}", path.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if !line.is_empty() {
                    entries.push((format!("{}:{}", path.display(), n + 1), line.to_string()));
                }
            }
        }
        for (origin, entry) in &entries {
            match Ban::parse(entry).map_err(|e| format!("{origin}: {e}"))? {
                Ban::Client(id) => {
                    list.clients.insert(id);
                }
                net => list.nets.push(net),
            }
        }
        let count = entries.len();
        *self.bans.write().unwrap_or_else(|e| e.into_inner()) = list;
        Ok(count)
    }

    /// Replaces the cluster-wide bans with `entries`; entries that do not parse are skipped and
    /// returned as errors. Returns the number of bans in force from the cluster.
    pub fn set_cluster_bans(&self, entries: &[String]) -> (usize, Vec<String>) {
        let mut list = BanList::default();
        let mut errors = Vec::new();
        for entry in entries {
            match Ban::parse(entry) {
                Ok(Ban::Client(id)) => {
                    list.clients.insert(id);
                }
                Ok(net) => list.nets.push(net),
                Err(e) => errors.push(e),
            }
        }
        let count = list.clients.len() + list.nets.len();
        *self.cluster.write().unwrap_or_else(|e| e.into_inner()) = list;
        (count, errors)
    }

    /// Whether a connection from `ip` may go on to the handshake.
    pub fn check_addr(&self, ip: IpAddr) -> Verdict {
        let ip = ip.to_canonical();
        let covered = |list: &BanList| list.nets.iter().any(|b| b.covers(ip));
        if covered(&self.read_bans()) || covered(&self.read_cluster()) {
            return Verdict::Banned;
        }
        let key = bucket_key(ip);
        let mut failures = self.lock_failures();
        match failures.get_mut(&key).map(|bucket| self.refill(bucket)) {
            Some(tokens) if tokens < 1.0 => Verdict::RateLimited,
            _ => Verdict::Allow,
        }
    }

    /// Whether client `id` is banned.
    pub fn is_banned(&self, id: ClientId) -> bool {
        self.read_bans().clients.contains(&id) || self.read_cluster().clients.contains(&id)
    }

    /// The banned client ids (to close their live sessions after a reload).
    pub fn banned_clients(&self) -> Vec<ClientId> {
        let mut ids: HashSet<ClientId> = self.read_bans().clients.clone();
        ids.extend(self.read_cluster().clients.iter().copied());
        ids.into_iter().collect()
    }

    /// Counts a failed handshake (wrong or malformed id) against `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let key = bucket_key(ip.to_canonical());
        let burst = f64::from(self.config.max_failures);
        let mut failures = self.lock_failures();
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&key) {
            // Forget the addresses that are back to a full allowance; if that is not enough,
            // forget everything rather than grow without bound.
            let now = Instant::now();
            let rate = self.rate();
            failures
                .retain(|_, b| b.tokens + rate * now.duration_since(b.at).as_secs_f64() < burst);
            if failures.len() >= MAX_TRACKED {
                failures.clear();
            }
        }
        let bucket = failures.entry(key).or_insert(Bucket {
            tokens: burst,
            at: Instant::now(),
        });
        self.refill(bucket);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }

    /// Addresses currently tracked (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.lock_failures().len()
    }

    fn rate(&self) -> f64 {
        f64::from(self.config.max_failures) / self.config.window.as_secs_f64().max(0.001)
    }

    fn refill(&self, bucket: &mut Bucket) -> f64 {
        let now = Instant::now();
        let burst = f64::from(self.config.max_failures);
        bucket.tokens =
            (bucket.tokens + self.rate() * now.duration_since(bucket.at).as_secs_f64()).min(burst);
        bucket.at = now;
        bucket.tokens
    }

    fn read_bans(&self) -> std::sync::RwLockReadGuard<'_, BanList> {
        self.bans.read().unwrap_or_else(|e| e.into_inner())
    }

    fn read_cluster(&self) -> std::sync::RwLockReadGuard<'_, BanList> {
        self.cluster.read().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_failures(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Bucket>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// IPv4 addresses count one by one; IPv6 ones by /64 (one host can hold a whole /64).
fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !(u128::MAX >> 64)).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(bans: &[&str], max_failures: u32) -> Admission {
        Admission::new(AdmissionConfig {
            ban_file: None,
            bans: bans.iter().map(|b| b.to_string()).collect(),
            max_failures,
            window: Duration::from_secs(60),
        })
        .unwrap()
    }

    #[test]
    fn bans_cover_addresses_networks_and_clients() {
        let id = ClientId::random();
        let a = admission(
            &["192.0.2.7", "10.0.0.0/8", "2001:db8::/32", &id.to_string()],
            5,
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(a.check_addr(ip("192.0.2.7")), Verdict::Banned);
        assert_eq!(a.check_addr(ip("::ffff:192.0.2.7")), Verdict::Banned);
        assert_eq!(a.check_addr(ip("192.0.2.8")), Verdict::Allow);
        assert_eq!(a.check_addr(ip("10.200.1.1")), Verdict::Banned);
        assert_eq!(a.check_addr(ip("2001:db8:1::5")), Verdict::Banned);
        assert_eq!(a.check_addr(ip("2001:db9::5")), Verdict::Allow);
        assert!(a.is_banned(id));
        assert!(!a.is_banned(ClientId::random()));
        assert!(Ban::parse("nonsense").is_err());
        assert_eq!(Ban::parse("10.1.2.3/8").unwrap().canonical(), "10.0.0.0/8");
        assert_eq!(
            Ban::parse("::ffff:192.0.2.7").unwrap().canonical(),
            "192.0.2.7"
        );
        assert_eq!(
            Ban::parse("2001:db8::1/32").unwrap().canonical(),
            "2001:db8::/32"
        );
        assert_eq!(
            Ban::parse(&id.to_string()).unwrap().canonical(),
            id.to_string()
        );
        assert!(Ban::parse("10.0.0.0/33").is_err());
        assert_eq!(
            Ban::parse("0.0.0.0/0").unwrap(),
            Ban::Net("0.0.0.0".parse().unwrap(), 0)
        );
    }

    #[test]
    fn cluster_bans_add_to_the_local_ones_and_replace_each_other() {
        let local = ClientId::random();
        let remote = ClientId::random();
        let a = admission(&[&local.to_string()], 5);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let (count, errors) =
            a.set_cluster_bans(&[remote.to_string(), "203.0.113.0/24".into(), "junk".into()]);
        assert_eq!(count, 2);
        assert_eq!(errors.len(), 1);
        assert!(a.is_banned(local) && a.is_banned(remote));
        assert_eq!(a.check_addr(ip("203.0.113.9")), Verdict::Banned);
        assert_eq!(a.banned_clients().len(), 2);
        a.set_cluster_bans(&[]);
        assert!(a.is_banned(local) && !a.is_banned(remote));
        assert_eq!(a.check_addr(ip("203.0.113.9")), Verdict::Allow);
        // A reload of the local list keeps the cluster's.
        a.set_cluster_bans(&[remote.to_string()]);
        a.reload().unwrap();
        assert!(a.is_banned(remote));
    }

    #[test]
    fn failed_handshakes_are_limited_per_address() {
        let a = admission(&[], 3);
        let bad: IpAddr = "198.51.100.1".parse().unwrap();
        let good: IpAddr = "198.51.100.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(a.check_addr(bad), Verdict::Allow);
            a.failed(bad);
        }
        assert_eq!(a.check_addr(bad), Verdict::RateLimited);
        assert_eq!(a.check_addr(good), Verdict::Allow);
        // One IPv6 /64 is one address.
        for i in 0..3 {
            a.failed(format!("2001:db8::{i}").parse().unwrap());
        }
        assert_eq!(
            a.check_addr("2001:db8::ffff".parse().unwrap()),
            Verdict::RateLimited
        );
        assert_eq!(a.tracked(), 2);
    }
}
