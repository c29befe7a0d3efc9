//! `chat-bench`: drives real chat nodes (and Mosquitto, for comparison) over real sockets and reports figures.
#![forbid(unsafe_code)]

mod chat_side;
mod client;
mod dbstats;
mod enqueue_stdin;
mod mosquitto;
mod mosquitto_rooms;
mod node;
mod params;
mod procstat;
mod recovery;
mod report;
mod rooms;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use chat::config::ServiceUrls;
use params::{Params, Workload};

/// Benchmark: throughput, latency, drain, idle connections, enqueue CLI, crash recovery; chat and Mosquitto side by side.
#[derive(Debug, Parser)]
#[command(name = "chat-bench", version)]
struct Args {
    #[command(flatten)]
    urls: ServiceUrls,
    /// Workloads to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Workload>,
    /// Skip the Mosquitto side.
    #[arg(long)]
    no_mosquitto: bool,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench.json")]
    json: PathBuf,
    #[command(flatten)]
    params: Params,
    /// Internal: hold idle sessions for the connections workload (a child process).
    #[arg(long, hide = true)]
    hold: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chat-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    if let Some(spec) = &args.hold {
        return chat_side::hold(spec).await;
    }
    let workloads = if args.only.is_empty() {
        vec![
            Workload::Throughput,
            Workload::Latency,
            Workload::Drain,
            Workload::Connections,
            Workload::EnqueueCli,
            Workload::EnqueueStdin,
            Workload::Recovery,
            Workload::Rooms,
            Workload::Scale,
        ]
    } else {
        args.only.clone()
    };
    let mut rows = Vec::new();
    for w in &workloads {
        eprintln!("chat-bench: chat {w:?}...");
        rows.extend(chat_side::run(*w, &args.params, &args.urls).await?);
        let chat_only = [
            Workload::EnqueueCli,
            Workload::EnqueueStdin,
            Workload::Recovery,
        ];
        if !args.no_mosquitto && !chat_only.contains(w) {
            eprintln!("chat-bench: mosquitto {w:?}...");
            rows.extend(mosquitto::run(*w, &args.params).await?);
        }
        eprint!("{}", report::table(&rows));
    }
    println!("{}", report::table(&rows));
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, report::json(&rows))?;
    eprintln!("chat-bench: wrote {}", args.json.display());
    Ok(())
}
