//! A store-and-forward message delivery node and its enqueuer, backed by MySQL (truth) and Redis (fast path).
//!
//! Layout:
//! - [`codec`]: bytes to lines (line bound, CRLF, telnet IAC).
//! - [`protocol`]: lines to commands, replies to lines; every piece of wire text.
//! - [`store`]: MySQL: every SQL statement and the migrations runner.
//! - [`bus`]: Redis: which node holds which client, and node-to-node notifications.
//! - [`registry`]: this node's live sessions, by client id.
//! - [`node`]: the context every part of a node receives (settings, MySQL, Redis, registry, batchers).
//! - [`session`]: one client's life: handshake, command and delivery loop, cleanup.
//! - [`delivery`]: a session's cursor: written, acknowledged, recorded.
//! - [`batcher`]: group commit: the MySQL reads and writes of many sessions as one statement.
//! - [`server`]: listeners, accept loop, connection limit, shutdown.
//! - [`background`]: the loops beside the sessions (notifications, sweep, leases, heartbeat, bans, retention).
//! - [`admission`]: ban list and the per-address limit on failed handshakes.
//! - [`proxy`]: the PROXY protocol header (v1, v2) a load balancer sends first.
//! - [`tls`]: the TLS listener's certificate, reloaded on SIGHUP.
//! - [`stats`]: Prometheus metrics: names and recording calls; [`http`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`enqueue`]: the producer API behind `chat-enqueue`.
//! - [`config`], [`logging`]: settings and log output shared by the binaries.
//! - [`config_file`]: TOML config files mapped onto a binary's flags.
//! - [`hex`]: bytes as hex text (SQL literals, notification ids).
#![forbid(unsafe_code)]

pub mod admission;
pub mod background;
pub mod batcher;
pub mod bus;
pub mod chat;
pub mod codec;
pub mod config;
pub mod config_file;
pub mod delivery;
pub mod enqueue;
pub mod enqueue_merge;
pub mod hex;
pub mod http;
pub mod hub;
pub mod logging;
pub mod node;
pub mod park;
pub mod password;
pub mod protocol;
pub mod proxy;
pub mod registry;
pub mod server;
pub mod session;
pub mod stats;
pub mod store;
pub mod tls;

mod client_id;
mod room_id;

pub use client_id::ClientId;
pub use room_id::RoomId;

/// Default TCP port of a node.
pub const DEFAULT_PORT: u16 = 8000;
