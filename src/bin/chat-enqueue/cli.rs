//! The command line of `chat-enqueue`: enqueue flags and text, or the `status` subcommand.

use std::ffi::OsString;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::{ErrorKind, Result as ClapResult};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use chat::config::ServiceUrls;
use chat::enqueue;

const USAGE: &str = "chat-enqueue [OPTIONS] <CLIENT_ID>[,<CLIENT_ID>...] <TEXT>...
       chat-enqueue [OPTIONS] --room <ROOM> <TEXT>...
       chat-enqueue [OPTIONS] --stdin
       chat-enqueue [--database-url <URL>] [--redis-url <URL>] status [--json] <MESSAGE_ID>...";

const EXIT_HELP: &str = "Exit status: 0 stored (also when Redis is down: a warning is printed and \
the message is delivered later); 1 MySQL unreachable or failed, nothing stored unless the failure \
hit the commit itself; 2 invalid arguments or text, nothing stored (--stdin: some lines refused, \
the others stored); 3 unknown client id, nothing stored for it. With --wait: 0 delivered (plain \
session), 4 acknowledged (acknowledged session), 5 still queued when the time ran out, 6 expired, \
7 replaced, 8 purged by an operator; with several messages the least advanced one decides.";

/// The flags of `ServiceUrls`: accepted before and after `status` (declared global).
const URL_ARGS: [&str; 2] = ["database_url", "redis_url"];

/// Stores a message durably for one or more clients and notifies the nodes that hold them.
///
/// The words of TEXT are joined with single spaces, as echo does. Prints the new message's id
/// (with several clients, one `<client_id> <message_id>` line each). `status` reports on stored
/// messages; --database-url and --redis-url go before or after it.
#[derive(Debug, Parser)]
#[command(name = "chat-enqueue", version, override_usage = USAGE, after_help = EXIT_HELP)]
#[command(subcommand_negates_reqs = true, disable_help_subcommand = true)]
pub struct Args {
    #[command(flatten)]
    pub urls: ServiceUrls,
    /// Longest message accepted, in bytes (at most 65535).
    #[arg(long, env = "CHAT_MAX_MESSAGE_BYTES", default_value_t = enqueue::DEFAULT_MAX_BYTES,
          value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
    pub max_bytes: usize,
    /// Wait until the message is delivered (plain session) or acknowledged (acknowledged
    /// session), at most SECS (default 30; also 500ms, 2m...); the exit status tells which.
    #[arg(long, value_name = "SECS", num_args = 0..=1, require_equals = true,
          default_missing_value = "30", value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// Not delivered within SECS (also 500ms, 2h...): never delivered, reported expired.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// A retry with the same key for the same client within the dedupe window stores nothing
    /// and prints the first message's id.
    #[arg(long, value_name = "KEY")]
    pub dedupe_key: Option<String>,
    /// How long a dedupe key is remembered.
    #[arg(long, value_name = "SECS", env = "CHAT_DEDUPE_WINDOW", default_value = "24h",
          value_parser = parse_duration)]
    pub dedupe_window: Duration,
    /// Replaces the client's still-pending messages with this key (delivered ones are kept).
    #[arg(long, value_name = "KEY")]
    pub collapse_key: Option<String>,
    /// Post to this public or invite-only room (`#` optional) instead of a client's queue: every
    /// word is text, shown in the room as from `*`.
    #[arg(long, value_name = "ROOM",
          conflicts_with_all = ["stdin", "wait", "ttl", "dedupe_key", "collapse_key"])]
    pub room: Option<String>,
    /// Read `<client_id><TAB><text>` lines from stdin, one message each, stored in batches.
    #[arg(long, conflicts_with_all = ["words", "wait", "dedupe_key", "collapse_key"])]
    pub stdin: bool,
    /// Lines per transaction with --stdin.
    #[arg(long, default_value_t = 5000,
          value_parser = clap::value_parser!(u16).range(1..=10_000).map(usize::from))]
    pub batch: usize,
    /// The client's id, as the node gave it in SET_CLIENT_ID (several as id1,id2,id3), then the
    /// message text: one line of UTF-8, no CR, LF or NUL. Everything after the id is text, even
    /// words that look like flags or the word `status`.
    #[arg(value_name = "CLIENT_ID TEXT", required_unless_present = "stdin",
          trailing_var_arg = true, allow_hyphen_values = true, num_args = 1..)]
    pub words: Vec<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The state and timestamps of stored messages.
    #[command(
        after_help = "Exit status: 0 all found; 1 MySQL failed; 2 bad arguments; 3 some id \
                            unknown (never stored, or removed by retention)."
    )]
    Status(StatusArgs),
}

/// `chat-enqueue status`: `--database-url` and `--redis-url` come from `Args` (global flags).
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// One JSON array instead of one line per message.
    #[arg(long)]
    pub json: bool,
    /// Message ids, as chat-enqueue printed them.
    #[arg(value_name = "MESSAGE_ID", required = true)]
    pub ids: Vec<u64>,
}

/// Seconds as a plain number, or a duration such as `500ms`, `2m`, `24h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).map_err(|e| format!("{e} (expected seconds, or 500ms, 2m...)"))
}

/// The command with the connection flags global, so that they go before or after `status`.
fn command() -> clap::Command {
    URL_ARGS.iter().fold(Args::command(), |cmd, id| {
        cmd.mut_arg(id, |a| a.global(true))
    })
}

/// Parses the process's arguments; on a usage error (or `--help`, `--version`) prints it and exits
/// (2 for errors, 0 for help).
pub fn parse() -> Args {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Parses `argv`; an enqueue flag before `status`, or an unknown flag where the id goes, is a
/// usage error.
fn try_parse_from(argv: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> ClapResult<Args> {
    let mut cmd = command();
    let mut matches = cmd.try_get_matches_from_mut(argv)?;
    if matches.subcommand_name().is_some() {
        let misplaced = cmd.get_arguments().find(|a| {
            !a.is_global_set()
                && matches.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine)
        });
        if let Some(arg) = misplaced {
            let flag = arg.get_long().unwrap_or(arg.get_id().as_str()).to_owned();
            return Err(cmd.error(
                ErrorKind::ArgumentConflict,
                format!(
                    "--{flag} is an enqueue flag; `status` takes only --database-url, \
                     --redis-url, --json and message ids"
                ),
            ));
        }
    }
    let args = Args::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut cmd))?;
    // The first word takes hyphens only so that the text after it may; as the id it is a bad flag.
    if let Some(word) = args
        .words
        .first()
        .filter(|w| w.len() > 1 && w.starts_with('-') && args.room.is_none())
    {
        return Err(cmd.error(
            ErrorKind::UnknownArgument,
            format!("unexpected argument '{word}' found (not a flag of chat-enqueue)"),
        ));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        command().debug_assert();
    }

    fn parse_from(args: &[&str]) -> ClapResult<Args> {
        try_parse_from(std::iter::once("chat-enqueue").chain(args.iter().copied()))
    }

    #[test]
    fn words_after_the_id_are_text_even_status() {
        let args = parse_from(&["id", "status", "--json", "1"]).unwrap();
        assert!(args.command.is_none());
        assert_eq!(args.words, ["id", "status", "--json", "1"]);
    }

    #[test]
    fn url_flags_go_on_either_side_of_status() {
        let args = parse_from(&[
            "--database-url",
            "mysql://before/db",
            "status",
            "--redis-url",
            "redis://after/",
            "7",
        ])
        .unwrap();
        assert_eq!(args.urls.database_url, "mysql://before/db");
        assert_eq!(args.urls.redis_url, "redis://after/");
        let Some(Command::Status(status)) = args.command else {
            panic!("no status: {args:?}");
        };
        assert_eq!(status.ids, [7]);
    }

    #[test]
    fn with_a_room_every_word_is_text() {
        let args = parse_from(&["--room", "#general", "-x", "hello"]).unwrap();
        assert_eq!(args.room.as_deref(), Some("#general"));
        assert_eq!(args.words, ["-x", "hello"]);
        assert!(parse_from(&["--room", "general", "--ttl", "5", "hi"]).is_err());
    }

    #[test]
    fn an_enqueue_flag_before_status_is_refused() {
        let e = parse_from(&["--ttl", "5", "status", "7"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
        assert!(e.to_string().contains("--ttl is an enqueue flag"), "{e}");
        let e = parse_from(&["status", "--ttl", "5", "7"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownArgument);
        let e = parse_from(&["--tll", "5", "status", "7"]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownArgument);
    }
}
