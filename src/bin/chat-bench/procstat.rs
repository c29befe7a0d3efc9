//! Process figures from /proc: resident memory and CPU time, to say which process saturates a core.

use std::time::{Duration, Instant};

/// Resident set size of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// The anonymous part of `pid`'s resident memory, KiB: its heap and stacks, without the pages
/// of its executable and libraries (shared, and touched once whatever the number of sessions).
pub fn anon_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "RssAnon:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time (user + system) `pid` has used so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// CPU use of a set of processes over an interval, as percent of one core each.
pub struct CpuMeter {
    start: Instant,
    pids: Vec<(String, u32, Duration)>,
}

impl CpuMeter {
    pub fn start(pids: &[(String, u32)]) -> CpuMeter {
        CpuMeter {
            start: Instant::now(),
            pids: pids
                .iter()
                .map(|(name, pid)| (name.clone(), *pid, cpu_time(*pid).unwrap_or_default()))
                .collect(),
        }
    }

    /// CPU seconds `pid` used since `start`.
    pub fn seconds(&self, pid: u32) -> f64 {
        self.pids
            .iter()
            .find(|(_, p, _)| *p == pid)
            .map_or(0.0, |(_, _, before)| {
                cpu_time(pid)
                    .unwrap_or_default()
                    .saturating_sub(*before)
                    .as_secs_f64()
            })
    }

    /// CPU use of `pid` since `start`, in percent of one core.
    pub fn percent(&self, pid: u32) -> f64 {
        self.seconds(pid) / self.start.elapsed().as_secs_f64().max(1e-9) * 100.0
    }

    /// "name 85% core, ..." for the interval since `start`.
    pub fn report(&self) -> String {
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        self.pids
            .iter()
            .map(|(name, pid, before)| {
                let used = cpu_time(*pid).unwrap_or_default().saturating_sub(*before);
                format!("{name} {:.0}%", used.as_secs_f64() / wall * 100.0)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Pid of the first process whose command line contains all of `needles` (e.g. the MariaDB on a port).
pub fn find_pid(needles: &[&str]) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if needles.iter().all(|n| cmd.contains(n)) {
            return Some(pid);
        }
    }
    None
}
