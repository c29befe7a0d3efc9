//! End-to-end tests: the real binaries over real sockets, against private MariaDB and Redis.
#![forbid(unsafe_code)]

mod support;

mod ack;
mod admin;
mod batch;
mod chat;
mod cluster;
mod config;
mod enqueue_args;
mod enqueue_cli;
mod faults;
mod handshake;
mod haproxy;
mod hostile;
mod lifecycle;
mod metrics;
mod producer;
mod proxy;
mod recovery;
mod retention;
mod services_smoke;
mod session;
mod systemd;
mod tls;
