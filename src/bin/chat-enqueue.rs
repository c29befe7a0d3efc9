//! `chat-enqueue`: stores one message for one client in MySQL, then tells the node holding it.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::builder::TypedValueParser;
use clap::Parser;

use chat::bus::Bus;
use chat::config::{redact_url, ServiceUrls};
use chat::enqueue::{self, EnqueueError, Enqueuer};
use chat::store::{Store, StoreError};
use chat::ClientId;

/// Exit status: the message could not be stored (MySQL unreachable or failing).
const EXIT_STORE: u8 = 1;
/// Exit status: bad arguments or invalid text; nothing stored.
const EXIT_INVALID: u8 = 2;
/// Exit status: no client has this id; nothing stored.
const EXIT_UNKNOWN_CLIENT: u8 = 3;

/// Stores a message durably for a client and notifies the node that holds it.
///
/// The words of TEXT are joined with single spaces, as echo does. Prints the new message's id.
#[derive(Debug, Parser)]
#[command(
    name = "chat-enqueue",
    version,
    after_help = "Exit status: 0 stored (also when Redis is down: a warning is printed and the \
                  message is delivered later); 1 MySQL unreachable or failed, nothing stored \
                  unless the failure hit the commit itself; 2 invalid arguments or text, nothing \
                  stored; 3 unknown client id, nothing stored."
)]
struct Args {
    #[command(flatten)]
    urls: ServiceUrls,
    /// Longest message accepted, in bytes (at most 65535).
    #[arg(long, env = "CHAT_MAX_MESSAGE_BYTES", default_value_t = enqueue::DEFAULT_MAX_BYTES,
          value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
    max_bytes: usize,
    /// The client's id, as the node gave it in SET_CLIENT_ID.
    client_id: String,
    /// The message text: one line of UTF-8, no CR, LF or NUL.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    text: Vec<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let fail = |code: u8, msg: String| {
        eprintln!("chat-enqueue: error: {msg}");
        ExitCode::from(code)
    };
    let client: ClientId = match args.client_id.parse() {
        Ok(id) => id,
        Err(e) => return fail(EXIT_INVALID, format!("{:?} is {e}", args.client_id)),
    };
    let text = args.text.join(" ");
    if let Err(e) = enqueue::validate(&text, args.max_bytes) {
        return fail(EXIT_INVALID, e.to_string());
    }
    let store = match Store::new(&args.urls.database_url, 1) {
        Ok(store) => store,
        Err(e) => return fail(EXIT_INVALID, e.to_string()),
    };
    let (bus, bus_error) = match Bus::connect_with_retries(&args.urls.redis_url, 0).await {
        Ok(bus) => (Some(bus), None),
        Err(e) => (None, Some(e)),
    };
    let enqueuer = Enqueuer::new(store, bus, args.max_bytes);
    let result = enqueuer.enqueue(client, &text).await;
    enqueuer.close().await;
    let enqueued = match result {
        Ok(enqueued) => enqueued,
        Err(EnqueueError::Invalid(e)) => return fail(EXIT_INVALID, e.to_string()),
        Err(EnqueueError::UnknownClient(id)) => {
            return fail(
                EXIT_UNKNOWN_CLIENT,
                format!("unknown client id {id}; nothing stored"),
            )
        }
        Err(EnqueueError::Store(e @ StoreError::NoSchema)) => {
            return fail(EXIT_STORE, e.to_string())
        }
        Err(EnqueueError::Store(e)) => {
            let db = redact_url(&args.urls.database_url);
            return fail(
                EXIT_STORE,
                format!("cannot store the message in MySQL at {db}: {e}"),
            );
        }
    };
    println!("{}", enqueued.message_id);
    let redis = redact_url(&args.urls.redis_url);
    let warning = match (bus_error, enqueued.notified) {
        (Some(e), _) | (None, Err(e)) => Some(format!("Redis at {redis} is unreachable ({e})")),
        _ => None,
    };
    if let Some(why) = warning {
        eprintln!(
            "chat-enqueue: warning: {why}; message {} is stored and will be delivered by the \
             node's sweep or when the client next connects",
            enqueued.message_id
        );
    }
    ExitCode::SUCCESS
}
