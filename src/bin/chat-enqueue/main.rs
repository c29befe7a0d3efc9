//! `chat-enqueue`: stores messages for clients in MySQL, tells the nodes holding them, and reports on them.
#![forbid(unsafe_code)]

mod report;
mod stdin;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::Parser;

use chat::bus::Bus;
use chat::config::{redact_url, ServiceUrls};
use chat::enqueue::{self, EnqueueError, Enqueuer, MessageOptions};
use chat::store::{Store, StoreError};
use chat::ClientId;

use report::{EXIT_INVALID, EXIT_OK, EXIT_STORE, EXIT_UNKNOWN};

const EXIT_HELP: &str = "Exit status: 0 stored (also when Redis is down: a warning is printed and \
the message is delivered later); 1 MySQL unreachable or failed, nothing stored unless the failure \
hit the commit itself; 2 invalid arguments or text, nothing stored (--stdin: some lines refused, \
the others stored); 3 unknown client id, nothing stored for it. With --wait: 0 delivered (plain \
session), 4 acknowledged (acknowledged session), 5 still queued when the time ran out, 6 expired, \
7 replaced, 8 purged by an operator; with several messages the least advanced one decides.";

/// Stores a message durably for one or more clients and notifies the nodes that hold them.
///
/// The words of TEXT are joined with single spaces, as echo does. Prints the new message's id
/// (with several clients, one `<client_id> <message_id>` line each). `chat-enqueue status <id>...`
/// reports on stored messages.
#[derive(Debug, Parser)]
#[command(name = "chat-enqueue", version, after_help = EXIT_HELP)]
struct Args {
    #[command(flatten)]
    urls: ServiceUrls,
    /// Longest message accepted, in bytes (at most 65535).
    #[arg(long, env = "CHAT_MAX_MESSAGE_BYTES", default_value_t = enqueue::DEFAULT_MAX_BYTES,
          value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
    max_bytes: usize,
    /// Wait until the message is delivered (plain session) or acknowledged (acknowledged
    /// session), at most SECS (default 30; also 500ms, 2m...); the exit status tells which.
    #[arg(long, value_name = "SECS", num_args = 0..=1, require_equals = true,
          default_missing_value = "30", value_parser = parse_duration)]
    wait: Option<Duration>,
    /// Not delivered within SECS (also 500ms, 2h...): never delivered, reported expired.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// A retry with the same key for the same client within the dedupe window stores nothing
    /// and prints the first message's id.
    #[arg(long, value_name = "KEY")]
    dedupe_key: Option<String>,
    /// How long a dedupe key is remembered.
    #[arg(long, value_name = "SECS", env = "CHAT_DEDUPE_WINDOW", default_value = "24h",
          value_parser = parse_duration)]
    dedupe_window: Duration,
    /// Replaces the client's still-pending messages with this key (delivered ones are kept).
    #[arg(long, value_name = "KEY")]
    collapse_key: Option<String>,
    /// Read `<client_id><TAB><text>` lines from stdin, one message each, stored in batches.
    #[arg(long, conflicts_with_all = ["words", "wait", "dedupe_key", "collapse_key"])]
    stdin: bool,
    /// Lines per transaction with --stdin.
    #[arg(long, default_value_t = 5000,
          value_parser = clap::value_parser!(u16).range(1..=10_000).map(usize::from))]
    batch: usize,
    /// The client's id, as the node gave it in SET_CLIENT_ID (several as id1,id2,id3), then the
    /// message text: one line of UTF-8, no CR, LF or NUL. Everything after the id is text, even
    /// words that look like flags.
    #[arg(value_name = "CLIENT_ID TEXT", required_unless_present = "stdin",
          trailing_var_arg = true, allow_hyphen_values = true, num_args = 1..)]
    words: Vec<String>,
}

/// `chat-enqueue status`: the state and timestamps of stored messages.
#[derive(Debug, Parser)]
#[command(
    name = "chat-enqueue status",
    after_help = "Exit status: 0 all found; 1 MySQL failed; 2 bad arguments; 3 some id unknown \
                  (never stored, or removed by retention)."
)]
struct StatusArgs {
    #[command(flatten)]
    urls: ServiceUrls,
    /// One JSON array instead of one line per message.
    #[arg(long)]
    json: bool,
    /// Message ids, as chat-enqueue printed them.
    #[arg(required = true)]
    ids: Vec<u64>,
}

/// Seconds as a plain number, or a duration such as `500ms`, `2m`, `24h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (expected seconds, or 500ms, 2m...)"))
}

const STORE_FAILED: &str = "cannot store the message";

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("chat-enqueue: error: {msg}");
    ExitCode::from(code)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == "status") {
        let rest =
            std::iter::once(OsString::from("chat-enqueue status")).chain(argv[2..].iter().cloned());
        return status(StatusArgs::parse_from(rest)).await;
    }
    enqueue(Args::parse_from(argv)).await
}

async fn connect(urls: &ServiceUrls) -> Result<(Store, Option<Bus>, Option<String>), ExitCode> {
    let store = Store::new(&urls.database_url, 1).map_err(|e| fail(EXIT_INVALID, e))?;
    Ok(match Bus::connect_with_retries(&urls.redis_url, 0).await {
        Ok(bus) => (store, Some(bus), None),
        Err(e) => (store, None, Some(e.to_string())),
    })
}

/// `what` failed in MySQL: exit 1 with the (redacted) URL.
fn store_failure(what: &str, urls: &ServiceUrls, e: StoreError) -> ExitCode {
    match e {
        e @ StoreError::NoSchema => fail(EXIT_STORE, e),
        e => fail(
            EXIT_STORE,
            format!("{what} in MySQL at {}: {e}", redact_url(&urls.database_url)),
        ),
    }
}

async fn status(args: StatusArgs) -> ExitCode {
    let store = match Store::new(&args.urls.database_url, 1) {
        Ok(store) => store,
        Err(e) => return fail(EXIT_INVALID, e),
    };
    let found = store.message_status(&args.ids).await;
    store.close().await;
    let found = match found {
        Ok(found) => found,
        Err(e) => return store_failure("cannot read the messages", &args.urls, e),
    };
    if args.json {
        println!("{}", report::json(&args.ids, &found));
    } else {
        print!("{}", report::text(&args.ids, &found));
    }
    let all_found = args.ids.iter().all(|id| found.iter().any(|s| s.id == *id));
    ExitCode::from(if all_found { EXIT_OK } else { EXIT_UNKNOWN })
}

async fn enqueue(args: Args) -> ExitCode {
    let options = MessageOptions {
        ttl: args.ttl,
        dedupe_key: args.dedupe_key.clone(),
        collapse_key: args.collapse_key.clone(),
    };
    if let Err(e) = enqueue::validate_options(&options) {
        return fail(EXIT_INVALID, e);
    }
    if args.dedupe_window.is_zero() || args.dedupe_window > enqueue::MAX_DEDUPE_WINDOW {
        return fail(
            EXIT_INVALID,
            "--dedupe-window must be between 1 ms and 7 days (retention keeps dedupe keys that long)",
        );
    }
    let mut clients: Vec<ClientId> = Vec::new();
    for raw in args.words.first().iter().flat_map(|list| list.split(',')) {
        match raw.trim().parse::<ClientId>() {
            Ok(id) if clients.contains(&id) => {}
            Ok(id) => clients.push(id),
            Err(e) if raw.parse::<f64>().is_ok() && args.wait.is_some() => {
                return fail(
                    EXIT_INVALID,
                    format!("{raw:?} is {e}; to give --wait a time, write --wait={raw}"),
                )
            }
            Err(e) => return fail(EXIT_INVALID, format!("{raw:?} is {e}")),
        }
    }
    let text = args.words.get(1..).unwrap_or_default().join(" ");
    if !args.stdin {
        if let Err(e) = enqueue::validate(&text, args.max_bytes) {
            return fail(EXIT_INVALID, e);
        }
    }
    let (store, bus, bus_error) = match connect(&args.urls).await {
        Ok(connected) => connected,
        Err(code) => return code,
    };
    let enqueuer = Enqueuer::new(store, bus, args.max_bytes).with_dedupe_window(args.dedupe_window);
    if let Some(e) = &bus_error {
        eprintln!(
            "chat-enqueue: warning: Redis at {} is unreachable ({e}); messages are stored and \
             delivered by the node's sweep or when the client next connects",
            redact_url(&args.urls.redis_url)
        );
    }
    let code = if args.stdin {
        stdin::run(&enqueuer, &options, args.batch, args.max_bytes).await
    } else {
        let code = to_clients(
            &enqueuer,
            &args,
            &clients,
            &text,
            &options,
            bus_error.is_some(),
        )
        .await;
        match code {
            Ok(code) => code,
            Err(exit) => {
                enqueuer.close().await;
                return exit;
            }
        }
    };
    enqueuer.close().await;
    ExitCode::from(code)
}

/// Stores `text` for each client, prints the ids, then waits if asked. `Err`: the exit to take.
async fn to_clients(
    enqueuer: &Enqueuer,
    args: &Args,
    clients: &[ClientId],
    text: &str,
    options: &MessageOptions,
    redis_down: bool,
) -> Result<u8, ExitCode> {
    let mut ids = Vec::with_capacity(clients.len());
    let mut unknown = Vec::new();
    // One transaction for all (a single plain message takes the store's two-statement path).
    let items: Vec<(ClientId, &str)> = clients.iter().map(|c| (*c, text)).collect();
    let (results, notified) = match enqueuer.enqueue_batch_with(&items, options).await {
        Ok(done) => done,
        Err(e) => return Err(store_failure(STORE_FAILED, &args.urls, e)),
    };
    let redis_failed = notified.err().map(|e| e.to_string());
    for (client, result) in clients.iter().zip(results) {
        match result {
            Ok(s) => {
                note(s.id, s.duplicate, s.replaced, args);
                ids.push((*client, s.id));
            }
            Err(EnqueueError::UnknownClient(id)) => unknown.push(id),
            Err(e) => return Err(fail(EXIT_INVALID, e)),
        }
    }
    let mut out = std::io::stdout().lock();
    for (client, id) in &ids {
        let _ = if clients.len() == 1 {
            writeln!(out, "{id}")
        } else {
            writeln!(out, "{client} {id}")
        };
    }
    let _ = out.flush();
    drop(out);
    if let (Some(e), false) = (redis_failed, redis_down) {
        eprintln!(
            "chat-enqueue: warning: Redis at {} failed ({e}); stored messages are delivered by \
             the node's sweep or when the client next connects",
            redact_url(&args.urls.redis_url)
        );
    }
    if !unknown.is_empty() {
        let list: Vec<String> = unknown.iter().map(ToString::to_string).collect();
        eprintln!(
            "chat-enqueue: error: unknown client id {}; nothing stored for it",
            list.join(", ")
        );
        return Ok(EXIT_UNKNOWN);
    }
    let Some(limit) = args.wait else {
        return Ok(EXIT_OK);
    };
    let message_ids: Vec<u64> = ids.iter().map(|(_, id)| *id).collect();
    let statuses = match enqueuer.wait(&message_ids, limit).await {
        Ok(statuses) => statuses,
        Err(e) => {
            // Stored (its id is printed above), only its state is unknown: not a failure to store.
            eprintln!(
                "chat-enqueue: warning: the message is stored, but its state could not be read \
                 from MySQL at {} while waiting ({e}); counting it as still queued",
                redact_url(&args.urls.database_url)
            );
            return Ok(report::EXIT_PENDING);
        }
    };
    print!("{}", report::text(&message_ids, &statuses));
    Ok(report::wait_exit(&message_ids, &statuses))
}

/// Tells on stderr what a dedupe hit or a collapse did.
fn note(id: u64, duplicate: bool, replaced: u64, args: &Args) {
    if duplicate {
        eprintln!(
            "chat-enqueue: note: dedupe key {:?} was already used for this client: nothing new \
             stored; message {id} is the first one",
            args.dedupe_key.as_deref().unwrap_or_default()
        );
    }
    if replaced > 0 {
        eprintln!("chat-enqueue: note: message {id} replaced {replaced} pending message(s) with collapse key {:?}",
            args.collapse_key.as_deref().unwrap_or_default());
    }
}
