//! `chat-enqueue`: stores messages for clients in MySQL, tells the nodes holding them, and reports on them.
#![forbid(unsafe_code)]

mod cli;
mod report;
mod stdin;

use std::io::Write;
use std::process::ExitCode;

use chat::bus::Bus;
use chat::config::{redact_url, ServiceUrls};
use chat::enqueue::{self, EnqueueError, Enqueuer, MessageOptions};
use chat::store::{Store, StoreError};
use chat::ClientId;

use cli::{Args, Command, StatusArgs};
use report::{EXIT_INVALID, EXIT_OK, EXIT_STORE, EXIT_UNKNOWN};

const STORE_FAILED: &str = "cannot store the message";

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("chat-enqueue: error: {msg}");
    ExitCode::from(code)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = cli::parse();
    match args.command.take() {
        Some(Command::Status(status_args)) => status(&args.urls, status_args).await,
        None => enqueue(args).await,
    }
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

async fn status(urls: &ServiceUrls, args: StatusArgs) -> ExitCode {
    let store = match Store::new(&urls.database_url, 1) {
        Ok(store) => store,
        Err(e) => return fail(EXIT_INVALID, e),
    };
    let found = store.message_status(&args.ids).await;
    store.close().await;
    let found = match found {
        Ok(found) => found,
        Err(e) => return store_failure("cannot read the messages", urls, e),
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
    if let Some(room) = &args.room {
        return to_room(&args, room).await;
    }
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

/// `--room`: posts the words as one message to a room; prints its id.
async fn to_room(args: &Args, room: &str) -> ExitCode {
    let text = args.words.join(" ");
    if let Err(e) = enqueue::validate(&text, args.max_bytes) {
        return fail(EXIT_INVALID, e);
    }
    let (store, bus, bus_error) = match connect(&args.urls).await {
        Ok(connected) => connected,
        Err(code) => return code,
    };
    let enqueuer = Enqueuer::new(store, bus, args.max_bytes);
    let posted = enqueuer.post_to_room(room, &text).await;
    enqueuer.close().await;
    match posted {
        Ok((id, notified)) => {
            println!("{id}");
            let redis = bus_error.or_else(|| notified.err().map(|e| e.to_string()));
            if let Some(e) = redis {
                eprintln!(
                    "chat-enqueue: warning: Redis at {} failed ({e}); the post is stored and \
                     reaches the members by their nodes' sweep or when they next connect",
                    redact_url(&args.urls.redis_url)
                );
            }
            ExitCode::from(EXIT_OK)
        }
        Err(EnqueueError::Invalid(e)) => fail(EXIT_INVALID, e),
        Err(e @ EnqueueError::UnknownRoom(_)) => fail(EXIT_UNKNOWN, e),
        Err(EnqueueError::Store(e)) => store_failure(STORE_FAILED, &args.urls, e),
        Err(e) => fail(EXIT_INVALID, e),
    }
}
