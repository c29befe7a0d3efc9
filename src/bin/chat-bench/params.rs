//! What to run and with which sizes (shared by the chat and Mosquitto sides of the benchmark).

/// A workload of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// C connected clients, M messages enqueued in batches; delivered messages per second.
    Throughput,
    /// A fixed rate for a fixed time; enqueue-to-arrival percentiles.
    Latency,
    /// Offline clients with pending messages all connect at once; time until all are delivered.
    Drain,
    /// Idle sessions on one node; server RSS per session.
    Connections,
    /// Wall time of one `chat-enqueue` run (chat only).
    EnqueueCli,
    /// `chat-enqueue --stdin` throughput: lines in, messages stored per second (chat only).
    EnqueueStdin,
    /// A node killed under a client; time until the client, reconnected to another node, has its
    /// first pending message (chat only).
    Recovery,
    /// Rooms of members spread over nodes, a steady rate of posts: delivered room messages per
    /// second and post-to-member latency (Mosquitto: topics with QoS 1 subscribers).
    Rooms,
    /// The scale curve: memory and idle CPU with N sessions, throughput and latency with N
    /// clients, for each N of `--scale-clients`; `scripts/plot-bench.py` draws it.
    Scale,
}

/// Sizes of the workloads.
#[derive(Debug, Clone, clap::Args)]
pub struct Params {
    /// Throughput: connected clients.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Throughput: messages in all.
    #[arg(long, default_value_t = 200_000)]
    pub messages: usize,
    /// Throughput: messages per enqueue batch (per publish burst for Mosquitto).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Latency: messages per second.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Latency: seconds to run.
    #[arg(long, default_value_t = 30)]
    pub latency_secs: u64,
    /// Latency: clients the messages are spread over.
    #[arg(long, default_value_t = 100)]
    pub latency_clients: usize,
    /// Drain: offline clients.
    #[arg(long, default_value_t = 10_000)]
    pub drain_clients: usize,
    /// Drain: pending messages per client.
    #[arg(long, default_value_t = 10)]
    pub drain_per_client: usize,
    /// Connections: idle sessions to hold on one server.
    #[arg(long, default_value_t = 15_000)]
    pub idle: usize,
    /// Connections: load-generator processes sharing them (open-files limit per process).
    #[arg(long, default_value_t = 2)]
    pub procs: usize,
    /// Connections and scale: seconds the idle sessions are held before memory is read, on both
    /// sides: longer than a node's periodic work over all its sessions (Redis lease renewal every
    /// 10 s, MySQL sweep every 5 s), so that the figure is the idle steady state.
    #[arg(long, default_value_t = 12)]
    pub settle_secs: u64,
    /// Enqueue CLI: runs (median reported).
    #[arg(long, default_value_t = 50)]
    pub cli_runs: usize,
    /// Enqueue stdin: input lines (messages).
    #[arg(long, default_value_t = 200_000)]
    pub stdin_messages: usize,
    /// Enqueue stdin: clients the lines are spread over (offline: this measures storing).
    #[arg(long, default_value_t = 1000)]
    pub stdin_clients: usize,
    /// Recovery: crashes to measure.
    #[arg(long, default_value_t = 10)]
    pub recovery_rounds: usize,
    /// Rooms: rooms (Mosquitto: topics).
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Rooms: members per room, one client each (Mosquitto: subscribers per topic).
    #[arg(long, default_value_t = 50)]
    pub room_members: usize,
    /// Rooms: posts per second, over all rooms.
    #[arg(long, default_value_t = 200)]
    pub room_rate: u64,
    /// Rooms: seconds of posting.
    #[arg(long, default_value_t = 20)]
    pub room_secs: u64,
    /// Rooms: chat nodes the members are spread over.
    #[arg(long, default_value_t = 3)]
    pub room_nodes: usize,
    /// Scale: the numbers of connected clients to measure at.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub scale_clients: Vec<usize>,
    /// Scale: messages of each throughput run.
    #[arg(long, default_value_t = 100_000)]
    pub scale_messages: usize,
    /// Scale: seconds of each latency run (at `--rate`).
    #[arg(long, default_value_t = 10)]
    pub scale_latency_secs: u64,
    /// Scale: seconds over which idle CPU is measured.
    #[arg(long, default_value_t = 5)]
    pub scale_idle_secs: u64,
}
