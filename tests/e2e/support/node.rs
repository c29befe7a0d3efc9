//! Runs the real `chat-server` and `chat-enqueue` binaries against a test's private database.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::client::TestClient;
use super::services::{shared_mariadb, shared_redis, MariaDb, Redis};

const SERVER: &str = env!("CARGO_BIN_EXE_chat-server");
pub const ENQUEUE: &str = env!("CARGO_BIN_EXE_chat-enqueue");
pub const ADMIN: &str = env!("CARGO_BIN_EXE_chat-admin");

/// One test's world: a fresh database and a Redis, shared with other tests or private to this one
/// (private ones can be killed and restarted).
pub struct Env {
    pub database: String,
    pub db_url: String,
    pub redis_url: String,
    tag: String,
    own_db: Option<MariaDb>,
    own_redis: Option<Redis>,
}

static ENVS: AtomicU32 = AtomicU32::new(0);

impl Env {
    /// A fresh database on the shared MariaDB, and the shared Redis.
    pub fn new(name: &str) -> Env {
        Env::with(name, None, None)
    }

    /// A private MariaDB and Redis that the test may kill and restart.
    pub fn private(name: &str) -> Env {
        Env::with(name, Some(MariaDb::start()), Some(Redis::start()))
    }

    fn with(name: &str, own_db: Option<MariaDb>, own_redis: Option<Redis>) -> Env {
        let db = own_db.as_ref().unwrap_or_else(|| shared_mariadb());
        let database = db.create_database(name);
        let db_url = db.url(&database);
        let redis_url = own_redis.as_ref().unwrap_or_else(|| shared_redis()).url();
        let tag = format!(
            "{}-{}-{}",
            name.replace('_', "-"),
            std::process::id(),
            ENVS.fetch_add(1, Ordering::Relaxed)
        );
        Env {
            db_url,
            redis_url,
            database,
            tag,
            own_db,
            own_redis,
        }
    }

    pub fn mariadb(&self) -> &MariaDb {
        self.own_db.as_ref().unwrap_or_else(|| shared_mariadb())
    }

    /// `redis-cli <args>` against this test's Redis; its trimmed output.
    pub fn redis_cli(&self, args: &[&str]) -> String {
        self.own_redis
            .as_ref()
            .unwrap_or_else(|| shared_redis())
            .cli(args)
    }

    /// This test's own MariaDB (only for `Env::private`).
    pub fn mariadb_mut(&mut self) -> &mut MariaDb {
        self.own_db.as_mut().expect("Env::private owns its MariaDB")
    }

    /// This test's own Redis (only for `Env::private`).
    pub fn redis_mut(&mut self) -> &mut Redis {
        self.own_redis
            .as_mut()
            .expect("Env::private owns its Redis")
    }

    /// Rows of `sql` on this test's database.
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        self.mariadb().query(&self.database, sql)
    }

    /// A single number from `sql`.
    pub fn count(&self, sql: &str) -> u64 {
        let rows = self.query(sql);
        rows[0][0]
            .parse()
            .unwrap_or_else(|_| panic!("{sql}: {rows:?}"))
    }

    /// Enqueues numbered messages for these clients in the background (see `stream::produce`).
    pub fn produce(
        &self,
        ids: &[String],
        per_client: u64,
        pause: Duration,
    ) -> std::thread::JoinHandle<()> {
        super::stream::produce(
            &self.db_url,
            &self.redis_url,
            ids.to_vec(),
            per_client,
            pause,
            false,
        )
    }

    /// A node id unique to this test.
    pub fn node_id(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    /// Starts a node named `name` with quick sweeps; `extra` flags go last.
    pub fn node(&self, name: &str, extra: &[&str]) -> Node {
        Node::start(self, &self.node_id(name), extra)
    }

    /// Runs `chat-enqueue` with this env's URLs and `args`.
    pub fn enqueue_raw(&self, args: &[&str]) -> Output {
        self.tool(ENQUEUE, args)
    }

    /// Runs the command-line tool `bin` with this env's URLs and `args`.
    fn tool(&self, bin: &str, args: &[&str]) -> Output {
        run_with_timeout(&mut self.command(bin, args))
    }

    /// `bin` with `args`, this env's URLs and nothing else of the environment but PATH.
    pub fn command(&self, bin: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CHAT_DATABASE_URL", &self.db_url)
            .env("CHAT_REDIS_URL", &self.redis_url)
            .args(args);
        cmd
    }

    /// Runs `chat-enqueue` with this env's URLs, `args` and `input` on its stdin.
    pub fn enqueue_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = self
            .command(ENQUEUE, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chat-enqueue");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        let writer = thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(out) => out.expect("wait"),
            Err(_) => {
                signal(pid, "KILL");
                panic!("chat-enqueue --stdin did not finish within 60 s");
            }
        };
        writer.join().expect("stdin writer");
        out
    }

    /// Runs `chat-enqueue` with `args` in a thread (for `--wait`); join it for the output.
    pub fn enqueue_in_background(&self, args: &[&str]) -> thread::JoinHandle<Output> {
        let mut cmd = self.command(ENQUEUE, args);
        thread::spawn(move || run_with_timeout(&mut cmd))
    }

    /// Runs `chat-admin` with this env's URLs and `args`.
    pub fn admin(&self, args: &[&str]) -> Output {
        self.tool(ADMIN, args)
    }

    /// Runs `chat-admin --json <args>`; asserts success and returns the parsed output.
    pub fn admin_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.admin(&[&["--json"], args].concat());
        assert!(
            out.status.success(),
            "chat-admin {args:?} failed: {out:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("chat-admin {args:?} printed no JSON ({e}): {out:?}"))
    }

    /// Enqueues `text` for `client`; asserts success and returns the printed message id.
    pub fn enqueue(&self, client: &str, text: &str) -> u64 {
        let out = self.enqueue_raw(&[client, text]);
        assert!(
            out.status.success(),
            "chat-enqueue failed: {out:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("chat-enqueue printed no id: {out:?}"))
    }
}

/// Runs a command to completion within 60 s.
pub fn run_with_timeout(cmd: &mut Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            signal(pid, "KILL");
            panic!("command {cmd:?} did not finish within 60 s");
        }
    }
}

/// Sends a signal by name to `pid` with kill(1) (no unsafe code needed).
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// A running `chat-server` process.
pub struct Node {
    child: Child,
    pub port: u16,
    pub node_id: String,
    log: Arc<Mutex<String>>,
}

impl Node {
    /// Starts a node and waits until it listens. Panics (with its log) if it does not.
    pub fn start(env: &Env, node_id: &str, extra: &[&str]) -> Node {
        let mut cmd = Command::new(SERVER);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args([
                "--port",
                "0",
                "--log-format",
                "json",
                "--log-level",
                "chat=debug,info",
            ])
            .args(["--database-url", &env.db_url, "--redis-url", &env.redis_url])
            .args(["--node-id", node_id])
            .args(extra);
        if !extra.contains(&"--sweep-interval") {
            cmd.args(["--sweep-interval", "1"]);
        }
        let (child, log, port) = spawn_logged(cmd);
        let port = port.unwrap_or_else(|log| panic!("node {node_id} did not start:\n{log}"));
        Node {
            child,
            port,
            node_id: node_id.to_string(),
            log,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A client connected over IPv4 loopback, `GET_CLIENT_ID` already read.
    pub fn connect(&self) -> TestClient {
        let mut client = TestClient::connect(self.addr());
        client.expect("GET_CLIENT_ID");
        client
    }

    /// Creates `n` clients through this node (handshake, then `DISCONNECT`); returns their ids.
    pub fn register(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let mut c = self.connect();
                let id = c.register();
                c.send("DISCONNECT");
                c.expect("BYE: disconnected");
                id
            })
            .collect()
    }

    /// Resident memory of the node process, in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// The port in the `addr` field of the first log event with this message (e.g. `"metrics
    /// listening"`, `"listening (TLS)"`), waiting up to 30 s for it.
    pub fn logged_port(&self, message: &str) -> u16 {
        let needle = format!("\"message\":\"{message}\"");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self
                .log()
                .lines()
                .find(|l| l.contains(&needle))
                .and_then(listening_port);
            if let Some(port) = found {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no {message:?} in the log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to 30 s until the log contains `text`.
    pub fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.log().contains(text) {
            assert!(
                Instant::now() < deadline,
                "{text:?} not in the log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the node logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        signal(self.child.id(), "TERM");
        self.wait(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("node did not exit after SIGTERM:\n{}", self.log()))
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes the process (SIGSTOP): its sockets stay open, it does nothing.
    pub fn freeze(&self) {
        signal(self.child.id(), "STOP");
    }

    /// Lets a frozen process go on (SIGCONT).
    pub fn thaw(&self) {
        signal(self.child.id(), "CONT");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `cmd` with stderr captured into a shared log; returns the port from its `listening` event,
/// or the log if the process exited (or 30 s passed) first.
pub fn spawn_logged(mut cmd: Command) -> (Child, Arc<Mutex<String>>, Result<u16, String>) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chat-server");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let sink = log.clone();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("\"listening\"") {
                if let Some(port) = listening_port(&line) {
                    let _ = tx.send(port);
                }
            }
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let port = loop {
        if let Ok(port) = rx.recv_timeout(Duration::from_millis(50)) {
            break Ok(port);
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            thread::sleep(Duration::from_millis(100));
            break Err(log.lock().unwrap().clone());
        }
    };
    (child, log, port)
}

fn listening_port(line: &str) -> Option<u16> {
    let start = line.find("\"addr\":\"")? + 8;
    let addr = &line[start..];
    let addr = &addr[..addr.find('"')?];
    addr.rsplit(':').next()?.parse().ok()
}

/// Polls `done` every 100 ms until it holds; panics with `what` if it does not within `limit`
/// (a bound on a wait, not a timing assertion).
pub fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        thread::sleep(Duration::from_millis(100));
    }
}
