//! `chat-admin`: the operator's tool: nodes, sessions, backlog, one client's state, cluster-wide bans, purge.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::{json, Value};

use chat::admission::Ban;
use chat::bus::Bus;
use chat::config::{self, redact_url, ServiceUrls};
use chat::store::{Purge, Store, StoreError};
use chat::ClientId;

/// Exit status: MySQL or Redis unreachable or failing.
const EXIT_SERVICE: u8 = 1;
/// Exit status: bad arguments or input.
const EXIT_INVALID: u8 = 2;
/// Exit status: no such client or ban.
const EXIT_NOT_FOUND: u8 = 3;

/// Administers a chat cluster through its MySQL database and Redis.
#[derive(Debug, Parser)]
#[command(
    name = "chat-admin",
    version,
    after_help = "Exit status: 0 done; 1 MySQL or Redis unreachable or failing (or another purge \
                  is running); 2 invalid arguments or input; 3 no such client (client) or ban \
                  (unban)."
)]
struct Args {
    #[command(flatten)]
    urls: ServiceUrls,
    /// Print JSON (one document on stdout) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Live nodes (Redis heartbeats) and the sessions each holds (MySQL delivery rights).
    Nodes,
    /// Sessions per node; with --node, that node's clients.
    Sessions {
        /// List the clients whose sessions this node holds.
        #[arg(long)]
        node: Option<String>,
        /// Most clients listed with --node.
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
    /// Messages waiting for delivery: totals and the clients with the most.
    Backlog {
        /// Clients listed.
        #[arg(long, default_value_t = 10)]
        top: u64,
    },
    /// One client's state.
    Client {
        /// The client id.
        id: String,
    },
    /// Ban a client id, an IP address or a network (CIDR) on every node; kicks a banned
    /// client's live session.
    Ban {
        /// Client id, IP address or network (10.0.0.0/8, 2001:db8::/32).
        entry: String,
        /// Why (shown by `bans`).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a cluster-wide ban.
    Unban {
        /// As given to `ban`.
        entry: String,
    },
    /// List the cluster-wide bans (not the nodes' own --ban/--ban-file bans).
    Bans,
    /// Delete delivered messages enqueued before a cutoff, in small batches; undelivered ones are
    /// never deleted (with --pending they are dropped: the client is told, the producer reads
    /// `purged`).
    Purge {
        /// Age: 7d, 12h, 30m, 45s; a bare number is days.
        #[arg(long, value_parser = config::parse_age)]
        older_than: Duration,
        /// Rows per DELETE statement (each its own short transaction).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        batch: u64,
        /// Milliseconds to pause after each statement that deleted rows.
        #[arg(long, default_value_t = 10)]
        pause_ms: u64,
        /// Also drop undelivered messages older than the cutoff: their bodies are erased, the
        /// client gets `DROPPED <n>` for them, `chat-enqueue status` says `purged`.
        #[arg(long)]
        pending: bool,
    },
}

/// A failed command: its exit status and message.
struct Failure(u8, String);

type Outcome = Result<(String, Value), Failure>;

/// Parses the process's arguments; the connection flags go before or after the subcommand
/// (declared global, as `chat-enqueue status` takes them).
fn parse_args() -> Result<Args, clap::Error> {
    let command = ["database_url", "redis_url"]
        .iter()
        .fold(Args::command(), |cmd, id| {
            cmd.mut_arg(id, |a| a.global(true))
        });
    Args::from_arg_matches(&command.try_get_matches()?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            let wants_json = std::env::args_os().skip(1).any(|a| a == "--json");
            if !wants_json || !e.use_stderr() {
                e.exit();
            }
            let _ = e.print();
            // The message clap prints, without its "error: " prefix and the usage after it.
            let rendered = e.render().to_string();
            let message = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim_start_matches("error: ").trim().to_string())
                .unwrap_or_else(|| e.kind().to_string());
            print_error_json(&message, EXIT_INVALID);
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let store = match Store::new(&args.urls.database_url, 1) {
        Ok(store) => store,
        Err(e) => return fail(args.json, EXIT_INVALID, e.to_string()),
    };
    let result = run(&args, &store).await;
    store.close().await;
    match result {
        Ok((text, value)) => {
            if args.json {
                println!("{value}");
            } else if !text.is_empty() {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(Failure(code, message)) => fail(args.json, code, message),
    }
}

/// Reports a failure on stderr and, with `--json`, as `{"error": ..., "exit": ...}` on stdout
/// (one JSON document on stdout for any command, success or not).
fn fail(json: bool, code: u8, message: String) -> ExitCode {
    eprintln!("chat-admin: error: {message}");
    if json {
        print_error_json(&message, code);
    }
    ExitCode::from(code)
}

fn print_error_json(message: &str, code: u8) {
    println!("{}", json!({"error": message, "exit": code}));
}

async fn run(args: &Args, store: &Store) -> Outcome {
    let db = |e: StoreError| match e {
        StoreError::NoSchema => Failure(EXIT_SERVICE, e.to_string()),
        e => Failure(
            EXIT_SERVICE,
            format!("MySQL at {}: {e}", redact_url(&args.urls.database_url)),
        ),
    };
    let redis = || async {
        let bus = Bus::connect_with_retries(&args.urls.redis_url, 0).await;
        bus.map_err(|e| format!("Redis at {}: {e}", redact_url(&args.urls.redis_url)))
    };
    match &args.command {
        Cmd::Nodes => {
            let bus = redis().await.map_err(|e| Failure(EXIT_SERVICE, e))?;
            let alive = bus
                .alive_nodes()
                .await
                .map_err(|e| Failure(EXIT_SERVICE, format!("Redis: {e}")))?;
            let held = store.sessions_per_node().await.map_err(db)?;
            let sessions = |node: &str| {
                held.iter()
                    .find(|(n, _)| n == node)
                    .map_or(0, |(_, count)| *count)
            };
            let stale: Vec<&(String, u64)> =
                held.iter().filter(|(n, _)| !alive.contains(n)).collect();
            let mut text = format!("{:<40} {:>10}\n", "NODE", "SESSIONS");
            for node in &alive {
                text.push_str(&format!("{node:<40} {:>10}\n", sessions(node)));
            }
            for (node, count) in &stale {
                text.push_str(&format!("{:<40} {count:>10}\n", format!("{node} (dead)")));
            }
            text.push_str(&format!("{} live nodes", alive.len()));
            let value = json!({
                "nodes": alive.iter().map(|n| json!({"node": n, "sessions": sessions(n)})).collect::<Vec<_>>(),
                "dead_holders": stale.iter().map(|(n, c)| json!({"node": n, "sessions": c})).collect::<Vec<_>>(),
            });
            Ok((text, value))
        }
        Cmd::Sessions { node: None, .. } => {
            let held = store.sessions_per_node().await.map_err(db)?;
            let mut text = format!("{:<40} {:>10}", "NODE", "SESSIONS");
            for (node, count) in &held {
                text.push_str(&format!("\n{node:<40} {count:>10}"));
            }
            let total: u64 = held.iter().map(|(_, c)| c).sum();
            text.push_str(&format!("\n{:<40} {total:>10}", "total"));
            let value = json!({
                "nodes": held.iter().map(|(n, c)| json!({"node": n, "sessions": c})).collect::<Vec<_>>(),
                "total": total,
            });
            Ok((text, value))
        }
        Cmd::Sessions {
            node: Some(node),
            limit,
        } => {
            let sessions = store.sessions_of(node, *limit).await.map_err(db)?;
            let text = sessions
                .iter()
                .map(|(id, epoch)| format!("{id} epoch {epoch}"))
                .collect::<Vec<_>>()
                .join("\n");
            let value = json!({
                "node": node,
                "sessions": sessions.iter().map(|(id, e)| json!({"client_id": id.to_string(), "epoch": e})).collect::<Vec<_>>(),
            });
            Ok((text, value))
        }
        Cmd::Backlog { top } => {
            let backlog = store.backlog(*top).await.map_err(db)?;
            let mut text = format!(
                "pending messages: {} for {} clients",
                backlog.pending, backlog.clients
            );
            for (id, n) in &backlog.top {
                text.push_str(&format!("\n{id} {n}"));
            }
            let value = json!({
                "pending": backlog.pending,
                "clients": backlog.clients,
                "top": backlog.top.iter().map(|(id, n)| json!({"client_id": id.to_string(), "pending": n})).collect::<Vec<_>>(),
            });
            Ok((text, value))
        }
        Cmd::Client { id } => {
            let id: ClientId = id
                .parse()
                .map_err(|e| Failure(EXIT_INVALID, format!("{id:?} is {e}")))?;
            let info = store
                .client_info(id)
                .await
                .map_err(db)?
                .ok_or_else(|| Failure(EXIT_NOT_FOUND, format!("unknown client id {id}")))?;
            let banned = store
                .bans()
                .await
                .map_err(db)?
                .iter()
                .any(|b| b.entry == id.to_string());
            // Online: a lease in Redis names the session's node. Unknown when Redis is down.
            let lease = match redis().await {
                Ok(bus) => bus.owner(id).await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            let (online, lease_text) = match &lease {
                Ok(Some(owner)) => (
                    Some(true),
                    format!("yes, on {} (epoch {})", owner.node, owner.epoch),
                ),
                Ok(None) => (Some(false), "no".to_string()),
                Err(e) => (None, format!("unknown ({e})")),
            };
            let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            let text = [
                format!("client        {id}"),
                format!("created       {}", utc(info.created_at)),
                format!(
                    "last seen     {}",
                    info.last_seen_at.map_or("-".into(), utc)
                ),
                format!("last seq      {}", info.last_seq),
                format!("delivered seq {}", info.delivered_seq),
                format!("pending       {}", info.pending),
                format!("stored        {}", info.stored),
                format!("epoch         {}", info.session_epoch),
                format!("owner node    {}", opt(&info.owner_node)),
                format!(
                    "holder        {} (epoch {})",
                    opt(&info.holder_node),
                    info.holder_epoch.map_or("-".into(), |e| e.to_string())
                ),
                format!("online        {lease_text}"),
                format!("banned        {}", if banned { "yes" } else { "no" }),
            ]
            .join("\n");
            let owner = lease.as_ref().ok().and_then(|o| o.as_ref());
            let value = json!({
                "client_id": id.to_string(),
                "created_at": utc(info.created_at),
                "last_seen_at": info.last_seen_at.map(utc),
                "last_seq": info.last_seq,
                "delivered_seq": info.delivered_seq,
                "pending": info.pending,
                "stored": info.stored,
                "session_epoch": info.session_epoch,
                "owner_node": info.owner_node,
                "holder_node": info.holder_node,
                "holder_epoch": info.holder_epoch,
                "online": online,
                "lease": owner.map(|o| json!({"node": o.node, "epoch": o.epoch})),
                "banned": banned,
            });
            Ok((text, value))
        }
        Cmd::Ban { entry, reason } => {
            let ban = Ban::parse(entry).map_err(|e| Failure(EXIT_INVALID, e))?;
            let entry = ban.canonical();
            let reason = reason
                .as_deref()
                .map(|r| r.trim())
                .filter(|r| !r.is_empty());
            if reason.is_some_and(|r| r.chars().count() > 255) {
                return Err(Failure(
                    EXIT_INVALID,
                    "the reason is longer than 255 characters".into(),
                ));
            }
            let new = store.add_ban(&entry, reason).await.map_err(db)?;
            let told = broadcast(&redis().await).await;
            let what = if new {
                "banned"
            } else {
                "already banned (reason updated)"
            };
            let text = format!("{what}: {entry}");
            Ok((
                text,
                json!({"entry": entry, "new": new, "nodes_told": told}),
            ))
        }
        Cmd::Unban { entry } => {
            let entry = Ban::parse(entry)
                .map_err(|e| Failure(EXIT_INVALID, e))?
                .canonical();
            if !store.remove_ban(&entry).await.map_err(db)? {
                return Err(Failure(
                    EXIT_NOT_FOUND,
                    format!("no cluster-wide ban {entry}"),
                ));
            }
            let told = broadcast(&redis().await).await;
            Ok((
                format!("unbanned: {entry}"),
                json!({"entry": entry, "nodes_told": told}),
            ))
        }
        Cmd::Bans => {
            let bans = store.bans().await.map_err(db)?;
            let text = bans
                .iter()
                .map(|b| {
                    format!(
                        "{:<40} {}  {}",
                        b.entry,
                        utc(b.created_at),
                        b.reason.as_deref().unwrap_or("")
                    )
                    .trim_end()
                    .to_string()
                })
                .collect::<Vec<_>>()
                .join("\n");
            let value = json!({
                "bans": bans.iter().map(|b| json!({"entry": b.entry, "reason": b.reason, "created_at": utc(b.created_at)})).collect::<Vec<_>>(),
            });
            Ok((text, value))
        }
        Cmd::Purge {
            older_than,
            batch,
            pause_ms,
            pending,
        } => {
            let pause = Duration::from_millis(*pause_ms);
            let purge = store
                .purge_delivered(*older_than, *batch, pause, *pending)
                .await
                .map_err(db)?;
            match purge {
                Purge::Done { deleted, dropped } if *pending => Ok((
                    format!(
                        "deleted {deleted} delivered messages; dropped {dropped} undelivered \
                         messages (their clients get DROPPED lines)"
                    ),
                    json!({"deleted": deleted, "dropped": dropped}),
                )),
                Purge::Done { deleted, .. } => Ok((
                    format!("deleted {deleted} delivered messages"),
                    json!({"deleted": deleted}),
                )),
                Purge::Busy => Err(Failure(
                    EXIT_SERVICE,
                    "another purge is running (a node's retention or another chat-admin); try \
                     again later"
                        .into(),
                )),
            }
        }
    }
}

/// Tells every node to reload the bans; on failure warns (nodes still poll MySQL) and returns None.
async fn broadcast(bus: &Result<Bus, String>) -> Option<u64> {
    let told = match bus {
        Ok(bus) => bus.bans_changed().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    match told {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!(
                "chat-admin: warning: could not tell the nodes over Redis ({e}); they pick the \
                 change up at their next poll (--bans-poll)"
            );
            None
        }
    }
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc(secs: i64) -> String {
    // MySQL TIMESTAMPs start at the epoch; the crate that formats chat-enqueue's times does it.
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0).unsigned_abs());
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn timestamps_render_in_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
