//! Private, throw-away MariaDB and Redis servers for the tests, each watched so it dies with the test process.
//!
//! Every server runs under a small bash watchdog whose stdin is a pipe from the
//! test process: when the test process exits (normally, by panic, by SIGKILL),
//! the pipe closes and the watchdog SIGKILLs the server and removes its
//! directory. The watchdog also exits by itself when the server dies, so
//! `kill`/`restart` work on the real server pid.
//!
//! MariaDB data directories are copied from a template made once with
//! `mariadb-install-db` and cached under `CARGO_TARGET_TMPDIR`, keyed by the
//! `mariadbd --version` and the InnoDB options. Directories left behind by a
//! test process that died at an unlucky moment are swept by the next one.

use std::collections::BTreeSet;
use std::fs;
use std::hash::BuildHasher;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

/// Longest wait for a server to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a clean shutdown before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a killed process to vanish / its port to close.
const DEATH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often readiness and death are polled.
const POLL: Duration = Duration::from_millis(20);
/// Ports handed out by `free_port`: below Linux's ephemeral range (32768+).
const PORT_RANGE: (u16, u16) = (20000, 32000);
/// Attempts to start a new server on a fresh port when the port was taken meanwhile.
const START_ATTEMPTS: usize = 4;

/// InnoDB layout options: the template datadir and every server must agree.
const MARIADB_INIT_OPTS: &[&str] = &[
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=8M",
    "--innodb-data-file-path=ibdata1:10M:autoextend",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
];

/// Runtime options that keep a test server small and quick.
const MARIADB_RUN_OPTS: &[&str] = &[
    "--bind-address=127.0.0.1",
    "--skip-name-resolve",
    "--max-connections=500",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=0",
    "--innodb-use-native-aio=0",
    "--innodb-buffer-pool-dump-at-shutdown=0",
    "--innodb-buffer-pool-load-at-startup=0",
    "--key-buffer-size=1M",
    "--aria-pagecache-buffer-size=8M",
    "--performance-schema=OFF",
];

/// `bash -c` watchdog. Arguments: owner pid, directory to remove when the
/// owner is gone, pid file to write, output log, then the server command.
const WATCHDOG: &str = r#"
owner=$1; cleanup=$2; pidfile=$3; out=$4; shift 4
trap '' INT QUIT
"$@" </dev/null >>"$out" 2>&1 &
s=$!
trap 'kill -9 "$s" 2>/dev/null; exit 1' TERM HUP
echo "$s" >"$pidfile.tmp" && mv -f "$pidfile.tmp" "$pidfile"
while kill -0 "$s" 2>/dev/null; do
    read -r -t 0.2 _
    rc=$?
    if [ "$rc" -le 128 ] || ! kill -0 "$owner" 2>/dev/null; then
        # Owner gone (stdin closed): take the server and its files with it.
        kill -9 "$s" 2>/dev/null
        wait "$s" 2>/dev/null
        rm -rf -- "$cleanup"
        exit 0
    fi
done
wait "$s" 2>/dev/null
exit 0
"#;

// ---------------------------------------------------------------------------
// MariaDB

/// A private MariaDB server: its own datadir, socket and port on 127.0.0.1.
pub struct MariaDb {
    port: u16,
    watched: Option<Watched>,
    dir: TempDir,
}

impl MariaDb {
    /// Start a new private instance (temp datadir copied from the template, free port).
    pub fn start() -> MariaDb {
        let t0 = Instant::now();
        let template = mariadb_template();
        let dir = instance_dir("chat-mariadb-");
        copy_dir(template, &dir.path().join("data")).unwrap_or_else(|e| {
            panic!("MariaDb: cannot copy template {}: {e}", template.display())
        });
        let mut db = MariaDb {
            port: 0,
            watched: None,
            dir,
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            db.port = free_port();
            match db.launch() {
                Ok(()) => {
                    eprintln!(
                        "[services] MariaDB ready on 127.0.0.1:{} in {} ms ({})",
                        db.port,
                        t0.elapsed().as_millis(),
                        db.dir.path().display()
                    );
                    return db;
                }
                Err(e) if e.port_in_use => failures.push(e.message),
                Err(e) => panic!("MariaDb::start failed: {}", e.message),
            }
        }
        panic!(
            "MariaDb::start: no usable port after {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mysql://root@127.0.0.1:PORT/<database>`
    pub fn url(&self, database: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{}", self.port, database)
    }

    /// Create a database with a unique name (`<prefix>_<counter>_<pid>`) and return the name.
    pub fn create_database(&self, prefix: &str) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}_{n}_{}", std::process::id());
        self.query("", &format!("CREATE DATABASE `{name}`"));
        name
    }

    /// Run SQL with the `mariadb` client (batch mode, no column names) and return the rows.
    /// NULL comes back as "NULL". `database` may be empty. Panics on error, with stderr.
    pub fn query(&self, database: &str, sql: &str) -> Vec<Vec<String>> {
        let mut cmd = self.client();
        cmd.args(["--batch", "--skip-column-names"]);
        if !database.is_empty() {
            cmd.arg(format!("--database={database}"));
        }
        cmd.arg("-e").arg(sql);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run mariadb client: {e}"));
        if !out.status.success() {
            panic!(
                "query failed on 127.0.0.1:{} db {database:?}: {sql}\n{}",
                self.port,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| line.split('\t').map(unescape_batch).collect())
            .collect()
    }

    /// SIGKILL the server and wait until its port refuses connections.
    pub fn kill(&mut self) {
        if let Some(w) = self.watched.take() {
            w.kill_hard(self.port);
        }
    }

    /// Clean shutdown: SIGTERM, wait (bounded), SIGKILL if it does not stop.
    pub fn stop(&mut self) {
        if let Some(w) = self.watched.take() {
            w.stop_gracefully(self.port, "mariadbd");
        }
    }

    /// Start again on the same port and datadir (a running server is stopped first).
    pub fn restart(&mut self) {
        self.stop();
        let t0 = Instant::now();
        if let Err(e) = self.launch() {
            panic!(
                "MariaDb::restart on port {} failed: {}",
                self.port, e.message
            );
        }
        eprintln!(
            "[services] MariaDB restarted on 127.0.0.1:{} in {} ms",
            self.port,
            t0.elapsed().as_millis()
        );
    }

    pub fn client(&self) -> Command {
        let mut cmd = Command::new(program("mariadb"));
        cmd.arg("--no-defaults")
            .arg("--protocol=TCP")
            .arg("-h127.0.0.1")
            .arg(format!("-P{}", self.port))
            .arg("-uroot")
            .arg("--default-character-set=utf8mb4")
            .arg("--connect-timeout=5")
            .stdin(Stdio::null());
        cmd
    }

    fn error_log(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    fn logs(&self) -> String {
        let d = self.dir.path();
        format!(
            "{}{}",
            log_tail(&d.join("error.log")),
            log_tail(&d.join("out.log"))
        )
    }

    /// Spawn mariadbd under a watchdog and wait until it answers `select 1`.
    fn launch(&mut self) -> Result<(), LaunchError> {
        let d = self.dir.path();
        let mut args: Vec<String> = vec!["--no-defaults".into()];
        if is_root() {
            args.push("--user=root".into());
        }
        args.push(format!("--datadir={}", d.join("data").display()));
        args.push(format!("--port={}", self.port));
        args.push(format!("--socket={}", d.join("mysql.sock").display()));
        args.push(format!("--pid-file={}", d.join("mariadbd.pid").display()));
        args.push(format!("--log-error={}", self.error_log().display()));
        args.push(format!("--tmpdir={}", d.display()));
        args.extend(MARIADB_INIT_OPTS.iter().map(|s| s.to_string()));
        args.extend(MARIADB_RUN_OPTS.iter().map(|s| s.to_string()));
        // Keep earlier runs' log lines out of this launch's failure report.
        let _ = fs::remove_file(self.error_log());

        let mut w = Watched::spawn(d, &program("mariadbd"), &args);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if !w.server_alive() {
                w.reap();
                let logs = self.logs();
                return Err(LaunchError {
                    port_in_use: logs.contains("already in use") || logs.contains("Bind on TCP/IP"),
                    message: format!(
                        "mariadbd exited during start-up (port {}):\n{logs}",
                        self.port
                    ),
                });
            }
            if port_accepts(self.port) {
                let ok = self
                    .client()
                    .args(["-e", "select 1"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    self.watched = Some(w);
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                w.kill_hard(self.port);
                return Err(LaunchError {
                    port_in_use: false,
                    message: format!(
                        "mariadbd not ready on port {} after {READY_TIMEOUT:?}:\n{}",
                        self.port,
                        self.logs()
                    ),
                });
            }
            sleep(POLL);
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(w) = self.watched.take() {
            if let Err(e) = w.try_kill_hard(self.port) {
                eprintln!("[services] MariaDb drop: {e}");
            }
        }
        // `dir` (TempDir) is removed when the fields drop.
    }
}

// ---------------------------------------------------------------------------
// Redis

/// A private Redis server (no persistence) on 127.0.0.1 (and ::1 when available).
pub struct Redis {
    port: u16,
    watched: Option<Watched>,
    dir: TempDir,
}

impl Redis {
    /// Start a new private instance on a free port.
    pub fn start() -> Redis {
        let t0 = Instant::now();
        let dir = instance_dir("chat-redis-");
        let mut redis = Redis {
            port: 0,
            watched: None,
            dir,
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            redis.port = free_port();
            match redis.launch() {
                Ok(()) => {
                    eprintln!(
                        "[services] Redis ready on 127.0.0.1:{} in {} ms",
                        redis.port,
                        t0.elapsed().as_millis()
                    );
                    return redis;
                }
                Err(e) if e.port_in_use => failures.push(e.message),
                Err(e) => panic!("Redis::start failed: {}", e.message),
            }
        }
        panic!(
            "Redis::start: no usable port after {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL the server and wait until its port refuses connections.
    pub fn kill(&mut self) {
        if let Some(w) = self.watched.take() {
            w.kill_hard(self.port);
        }
    }

    /// Start again on the same port (a running server is stopped first). Data is not kept.
    pub fn restart(&mut self) {
        if let Some(w) = self.watched.take() {
            w.stop_gracefully(self.port, "redis-server");
        }
        if let Err(e) = self.launch() {
            panic!("Redis::restart on port {} failed: {}", self.port, e.message);
        }
    }

    /// Run `redis-cli -p PORT args...` and return its trimmed stdout. Panics if it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(program("redis-cli"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        if !out.status.success() {
            panic!(
                "redis-cli {args:?} on port {} failed: {}",
                self.port,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn ping(&self) -> bool {
        Command::new(program("redis-cli"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "ping"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG")
    }

    fn logs(&self) -> String {
        let d = self.dir.path();
        format!(
            "{}{}",
            log_tail(&d.join("redis.log")),
            log_tail(&d.join("out.log"))
        )
    }

    fn launch(&mut self) -> Result<(), LaunchError> {
        let d = self.dir.path();
        let log = d.join("redis.log");
        let _ = fs::remove_file(&log);
        let port = self.port.to_string();
        let dir = d.display().to_string();
        let logfile = log.display().to_string();
        let args: Vec<String> = [
            "--port",
            &port,
            // "-::1": also listen on ::1 when IPv6 is available.
            "--bind",
            "127.0.0.1",
            "-::1",
            "--dir",
            &dir,
            "--logfile",
            &logfile,
            "--daemonize",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut w = Watched::spawn(d, &program("redis-server"), &args);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if !w.server_alive() {
                w.reap();
                let logs = self.logs();
                return Err(LaunchError {
                    port_in_use: logs.contains("already in use"),
                    message: format!(
                        "redis-server exited during start-up (port {}):\n{logs}",
                        self.port
                    ),
                });
            }
            if port_accepts(self.port) && self.ping() {
                self.watched = Some(w);
                return Ok(());
            }
            if Instant::now() >= deadline {
                w.kill_hard(self.port);
                return Err(LaunchError {
                    port_in_use: false,
                    message: format!(
                        "redis-server not ready on port {} after {READY_TIMEOUT:?}:\n{}",
                        self.port,
                        self.logs()
                    ),
                });
            }
            sleep(POLL);
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(w) = self.watched.take() {
            if let Err(e) = w.try_kill_hard(self.port) {
                eprintln!("[services] Redis drop: {e}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Shared instances and ports

/// The test process's shared MariaDB, started on first use. Tests must not kill it.
pub fn shared_mariadb() -> &'static MariaDb {
    static SHARED: OnceLock<MariaDb> = OnceLock::new();
    SHARED.get_or_init(MariaDb::start)
}

/// The test process's shared Redis, started on first use. Tests must not kill it.
pub fn shared_redis() -> &'static Redis {
    static SHARED: OnceLock<Redis> = OnceLock::new();
    SHARED.get_or_init(Redis::start)
}

/// A port that is free on 127.0.0.1 and ::1 right now and was never handed out
/// before in this process. Random in 20000..32000, below the ephemeral range.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let (lo, hi) = PORT_RANGE;
    for _ in 0..10_000 {
        let seed = SEQ.fetch_add(1, Ordering::Relaxed)
            ^ (u64::from(std::process::id()) << 32)
            ^ SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
        let r = std::collections::hash_map::RandomState::new().hash_one(seed);
        let port = lo + (r % u64::from(hi - lo)) as u16;
        let mut set = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if set.contains(&port) || !port_is_free(port) {
            continue;
        }
        set.insert(port);
        return port;
    }
    panic!("free_port: no free port found in {lo}..{hi}");
}

fn port_is_free(port: u16) -> bool {
    let v4 = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    if v4.is_err() {
        return false;
    }
    match TcpListener::bind(SocketAddr::from((Ipv6Addr::LOCALHOST, port))) {
        Ok(_) => true,
        // No IPv6 loopback on this machine: only 127.0.0.1 matters.
        Err(e) => e.kind() == ErrorKind::AddrNotAvailable,
    }
}

fn port_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

// ---------------------------------------------------------------------------
// Watchdog-supervised server process

struct LaunchError {
    port_in_use: bool,
    message: String,
}

/// A server process started under the watchdog.
struct Watched {
    watchdog: Child,
    /// Write end of the watchdog's stdin; closing it (or our exit) kills the server.
    owner_pipe: Option<ChildStdin>,
    /// The real server pid.
    pid: u32,
}

impl Watched {
    /// Start `program args` under the watchdog, logging to `dir/out.log`;
    /// `dir` is removed by the watchdog if the test process goes away.
    fn spawn(dir: &Path, program: &Path, args: &[String]) -> Watched {
        let pidfile = dir.join("server.pid");
        let _ = fs::remove_file(&pidfile);
        let mut watchdog = Command::new("bash")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("chat-test-watchdog")
            .arg(std::process::id().to_string())
            .arg(dir)
            .arg(&pidfile)
            .arg(dir.join("out.log"))
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Own process group: a Ctrl-C of the test run reaches the test
            // process only; the watchdog then sees its stdin close.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot spawn watchdog (bash) for {}: {e}",
                    program.display()
                )
            });
        let owner_pipe = watchdog.stdin.take();
        let deadline = Instant::now() + DEATH_TIMEOUT;
        let pid = loop {
            if let Some(pid) = fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                break pid;
            }
            if let Ok(Some(status)) = watchdog.try_wait() {
                panic!("watchdog for {} exited early: {status}", program.display());
            }
            if Instant::now() >= deadline {
                let _ = watchdog.kill();
                panic!("watchdog for {} wrote no pid file", program.display());
            }
            sleep(Duration::from_millis(5));
        };
        Watched {
            watchdog,
            owner_pipe,
            pid,
        }
    }

    fn server_alive(&self) -> bool {
        pid_alive(self.pid)
    }

    fn signal(&self, sig: &str) {
        // The bash builtin: no dependency on procps' kill.
        let _ = Command::new("bash")
            .args(["-c", "kill -s \"$1\" \"$2\" 2>/dev/null", "kill"])
            .arg(sig)
            .arg(self.pid.to_string())
            .stdin(Stdio::null())
            .status();
    }

    fn wait_dead(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.server_alive() {
            if Instant::now() >= deadline {
                return false;
            }
            sleep(POLL);
        }
        true
    }

    /// SIGKILL, wait for the process and its port, reap the watchdog.
    fn kill_hard(self, port: u16) {
        if let Err(e) = self.try_kill_hard(port) {
            panic!("{e}");
        }
    }

    /// Like `kill_hard`, but reports instead of panicking (for `Drop`).
    fn try_kill_hard(mut self, port: u16) -> Result<(), String> {
        self.signal("KILL");
        if !self.wait_dead(DEATH_TIMEOUT) {
            return Err(format!(
                "server pid {} survived SIGKILL for {DEATH_TIMEOUT:?}",
                self.pid
            ));
        }
        self.reap();
        wait_port_closed(port)
    }

    /// SIGTERM, bounded wait, then SIGKILL; wait for the port to close; reap the watchdog.
    fn stop_gracefully(mut self, port: u16, what: &str) {
        self.signal("TERM");
        if !self.wait_dead(STOP_TIMEOUT) {
            eprintln!(
                "[services] {what} pid {} ignored SIGTERM for {STOP_TIMEOUT:?}; SIGKILL",
                self.pid
            );
            self.signal("KILL");
            if !self.wait_dead(DEATH_TIMEOUT) {
                panic!("{what} pid {} survived SIGKILL", self.pid);
            }
        }
        self.reap();
        if let Err(e) = wait_port_closed(port) {
            panic!("{e}");
        }
    }

    /// Once the server is dead, let the watchdog exit on its own (it must not
    /// see its stdin close first, or it would delete the data directory).
    fn reap(&mut self) {
        let deadline = Instant::now() + DEATH_TIMEOUT;
        loop {
            match self.watchdog.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    // SIGKILL: the watchdog cannot run its clean-up.
                    let _ = self.watchdog.kill();
                    let _ = self.watchdog.wait();
                    break;
                }
                Ok(None) => sleep(POLL),
            }
        }
        self.owner_pipe = None;
    }
}

fn wait_port_closed(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + DEATH_TIMEOUT;
    while port_accepts(port) {
        if Instant::now() >= deadline {
            return Err(format!(
                "port {port} still accepts connections {DEATH_TIMEOUT:?} after its server died"
            ));
        }
        sleep(POLL);
    }
    Ok(())
}

/// Alive = exists and is not a zombie.
fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// Instance directories

/// A new temp dir for one server instance, tagged with its owner (this process).
///
/// The watchdog removes the directory when this process dies while a server
/// runs; directories orphaned at other moments (say, between `kill` and
/// `restart`) are swept by the next test process.
fn instance_dir(prefix: &str) -> TempDir {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(sweep_stale_dirs);
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temp dir {prefix}*: {e}"));
    let me = std::process::id();
    let tag = format!("{me} {}", process_start_time(me).unwrap_or(0));
    fs::write(dir.path().join("owner"), tag)
        .unwrap_or_else(|e| panic!("cannot write {}/owner: {e}", dir.path().display()));
    dir
}

/// Remove instance dirs whose owning test process is gone, and half-made templates.
fn sweep_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("chat-mariadb-") || name.starts_with("chat-redis-")) {
            continue;
        }
        let path = entry.path();
        let stale = match fs::read_to_string(path.join("owner")) {
            Ok(tag) => !owner_alive(&tag),
            // No owner tag yet: only when old (another process may be creating it now).
            Err(_) => entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(300)),
        };
        if stale {
            let _ = fs::remove_dir_all(&path);
        }
    }
    let Ok(entries) = fs::read_dir(env!("CARGO_TARGET_TMPDIR")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // mariadb-template-<key>.tmp-<pid>-<nanos>
        let pid = name
            .strip_prefix("mariadb-template-")
            .and_then(|rest| rest.split_once(".tmp-"))
            .and_then(|(_, rest)| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !pid_alive(pid)) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// `"<pid> <start time>"` names a live process (pid reuse is caught by the start time).
fn owner_alive(tag: &str) -> bool {
    let mut parts = tag.split_whitespace();
    let (Some(Ok(pid)), Some(Ok(start))) = (
        parts.next().map(str::parse::<u32>),
        parts.next().map(str::parse::<u64>),
    ) else {
        return false;
    };
    pid_alive(pid) && process_start_time(pid).is_some_and(|t| t == start || start == 0)
}

/// Field 22 of /proc/PID/stat: start time in clock ticks since boot.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts at field 3 (state); field 22 is the 20th from there.
    rest.split_whitespace().nth(19)?.parse().ok()
}

// ---------------------------------------------------------------------------
// MariaDB template datadir

/// The template datadir, made once (cached across test runs under CARGO_TARGET_TMPDIR).
fn mariadb_template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(make_template)
}

fn make_template() -> PathBuf {
    let version = Command::new(program("mariadbd"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| panic!("cannot run mariadbd --version: {e}"));
    let key = fnv1a(format!("{version}|{}|{}", MARIADB_INIT_OPTS.join(" "), is_root()).as_bytes());
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let _ = fs::create_dir_all(&base);
    let final_dir = base.join(format!("mariadb-template-{key:016x}"));
    if final_dir.join("mysql").is_dir() {
        return final_dir;
    }

    let t0 = Instant::now();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let work = base.join(format!(
        "mariadb-template-{key:016x}.tmp-{}-{nanos}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).unwrap_or_else(|e| panic!("cannot create {}: {e}", work.display()));
    let data = work.join("data");
    let mut cmd = Command::new(program("mariadb-install-db"));
    cmd.arg("--no-defaults");
    if is_root() {
        cmd.arg("--user=root");
    }
    cmd.arg(format!("--datadir={}", data.display()))
        .arg("--auth-root-authentication-method=normal")
        .arg("--skip-test-db")
        .args(MARIADB_INIT_OPTS)
        .stdin(Stdio::null());
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run mariadb-install-db: {e}"));
    if !out.status.success() || !data.join("mysql").is_dir() {
        let _ = fs::remove_dir_all(&work);
        panic!(
            "mariadb-install-db failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Atomic publish: whoever renames first wins; a loser uses the winner's copy.
    match fs::rename(&data, &final_dir) {
        Ok(()) => eprintln!(
            "[services] MariaDB template datadir made in {} ms: {}",
            t0.elapsed().as_millis(),
            final_dir.display()
        ),
        Err(e) if final_dir.join("mysql").is_dir() => {
            let _ = e;
        }
        Err(e) => panic!("cannot publish template {}: {e}", final_dir.display()),
    }
    let _ = fs::remove_dir_all(&work);
    final_dir
}

/// Recursive copy of a directory of regular files (a datadir).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------
// Small helpers

/// Find a program on PATH or in the sbin directories (mariadbd lives in /usr/sbin).
fn program(name: &str) -> PathBuf {
    static FOUND: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut found = FOUND.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, p)) = found.iter().find(|(n, _)| n == name) {
        return p.clone();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(
        [
            "/usr/local/sbin",
            "/usr/sbin",
            "/sbin",
            "/usr/local/bin",
            "/usr/bin",
        ]
        .iter()
        .map(PathBuf::from),
    );
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate
            .metadata()
            .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        {
            found.push((name.to_string(), candidate.clone()));
            return candidate;
        }
    }
    panic!("{name} not found on PATH or in /usr/sbin; run `make deps` (scripts/install-deps.sh)");
}

/// Running as root? (/proc/self is owned by the effective uid.)
fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Undo the mariadb client's batch-mode escaping (\\, \t, \n, \0).
fn unescape_batch(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_string();
    }
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// The last lines of a log file, framed, for failure messages.
fn log_tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(40);
            format!(
                "---- {} (last {} lines) ----\n{}\n",
                path.display(),
                lines.len() - start,
                lines[start..].join("\n")
            )
        }
        Err(_) => String::new(),
    }
}
